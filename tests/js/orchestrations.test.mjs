// End-to-end tests: @microsoft/durabletask-js client + worker against the sidecar.
//
// One worker (registered with every orchestrator/activity below) serves the whole file;
// every test uses its own instance ids. Run through run.sh, which starts the sidecar and
// sets DTS_ADDR.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  OrchestrationStatus,
  HistoryEventType,
  PurgeInstanceCriteria,
  RetryPolicy,
  TaskFailedError,
  terminateOptions,
  whenAll,
  whenAny,
} from "@microsoft/durabletask-js";
import { createClient, createWorker, uid, sleep, waitUntil, waitForStatus, sdkProblems } from "./helpers.mjs";

const S = OrchestrationStatus;
const json = (v) => JSON.stringify(v);
const fmtFailure = (fd) => (fd ? json({ errorType: fd.errorType, message: fd.message }) : "none");

// ---------------------------------------------------------------------------------------------
// Activities
// ---------------------------------------------------------------------------------------------

const activityCalls = new Map(); // instance id -> number of activity invocations
const countCall = (ctx) => activityCalls.set(ctx.orchestrationId, (activityCalls.get(ctx.orchestrationId) ?? 0) + 1);

const activities = {
  plusOne: (ctx, n) => {
    countCall(ctx);
    return n + 1;
  },
  square: (ctx, n) => {
    countCall(ctx);
    return n * n;
  },
  echo: (_ctx, v) => v,
  flaky: (_ctx, key) => {
    // Fails the first two calls for a key, then succeeds.
    const calls = (flakyCalls.get(key) ?? []).concat(Date.now());
    flakyCalls.set(key, calls);
    if (calls.length <= 2) throw new Error(`flaky failure #${calls.length}`);
    return `ok after ${calls.length}`;
  },
  alwaysFails: (_ctx, key) => {
    flakyCalls.set(key, (flakyCalls.get(key) ?? []).concat(Date.now()));
    throw new Error("permanent failure");
  },
  failFirstTime: (ctx, key) => {
    countCall(ctx);
    const n = (flakyCalls.get(key) ?? []).length + 1;
    flakyCalls.set(key, (flakyCalls.get(key) ?? []).concat(Date.now()));
    if (n === 1) throw new Error("transient failure");
    return `recovered on call ${n}`;
  },
  bigString: (_ctx, n) => "x".repeat(n),
  greet: (_ctx, name) => `Hello, ${name}!`,
  explode: (_ctx, msg) => {
    class InventoryError extends Error {
      constructor(m) {
        super(m);
        this.name = "InventoryError";
      }
    }
    throw new InventoryError(msg);
  },
};

// ---------------------------------------------------------------------------------------------
// Orchestrators
// ---------------------------------------------------------------------------------------------

const orchestrators = {
  Empty: async () => {},

  Sequence: async function* (ctx, start) {
    const out = [start];
    let cur = start;
    for (let i = 0; i < 5; i++) {
      cur = yield ctx.callActivity("plusOne", cur);
      out.push(cur);
    }
    return out;
  },

  FanOutFanIn: async function* (ctx, count) {
    const tasks = [];
    for (let i = 1; i <= count; i++) tasks.push(ctx.callActivity("square", i));
    const results = yield whenAll(tasks);
    return { results, sum: results.reduce((a, b) => a + b, 0) };
  },

  Child: async function* (ctx, input) {
    const greeting = yield ctx.callActivity("greet", input.name);
    return { greeting, self: ctx.instanceId, parent: ctx.parent?.instanceId ?? null };
  },

  Parent: async function* (ctx, name) {
    const child = yield ctx.callSubOrchestrator("Child", { name }, { instanceId: `${ctx.instanceId}-child` });
    return { child };
  },

  FailingChild: async () => {
    throw new Error("child went wrong");
  },

  ParentOfFailingChild: async function* (ctx) {
    try {
      yield ctx.callSubOrchestrator("FailingChild", null, { instanceId: `${ctx.instanceId}-child` });
      return "no error?";
    } catch (e) {
      return { caught: e.name, message: e.message, detailsType: e.details?.errorType, detailsMessage: e.details?.message };
    }
  },

  ThreeEvents: async function* (ctx) {
    const a = yield ctx.waitForExternalEvent("A");
    const b = yield ctx.waitForExternalEvent("B");
    const c = yield ctx.waitForExternalEvent("C");
    return [a, b, c];
  },

  WaitForApproval: async function* (ctx) {
    const approval = yield ctx.waitForExternalEvent("approval");
    return { approval };
  },

  EventOrTimeout: async function* (ctx, seconds) {
    const ev = ctx.waitForExternalEvent("go");
    const timer = ctx.createTimer(seconds);
    const winner = yield whenAny([ev, timer]);
    return winner === ev ? { won: "event", data: ev.getResult() } : { won: "timer" };
  },

  Timer: async function* (ctx, seconds) {
    const before = ctx.currentUtcDateTime.getTime();
    yield ctx.createTimer(seconds);
    const after = ctx.currentUtcDateTime.getTime();
    const greeting = yield ctx.callActivity("greet", "after-timer");
    return { before, after, greeting };
  },

  TimerAbsolute: async function* (ctx, ms) {
    const fireAt = new Date(ctx.currentUtcDateTime.getTime() + ms);
    yield ctx.createTimer(fireAt);
    return ctx.currentUtcDateTime.getTime() >= fireAt.getTime();
  },

  Counter: async function* (ctx, input) {
    // Continue-as-new loop: bumps `n` through an activity until it reaches `until`.
    const n = yield ctx.callActivity("plusOne", input.n);
    if (n < input.until) {
      ctx.continueAsNew({ n, until: input.until, executions: [...input.executions, n] }, false);
      return;
    }
    return { n, executions: [...input.executions, n] };
  },

  CounterWithEvents: async function* (ctx, input) {
    // Each generation waits for one "tick" event; events raised while a generation is
    // ending must be carried over (saveEvents = true) and not lost.
    const tick = yield ctx.waitForExternalEvent("tick");
    const seen = [...input.seen, tick];
    if (seen.length < input.until) {
      ctx.continueAsNew({ seen, until: input.until }, true);
      return;
    }
    return seen;
  },

  LongWait: async function* (ctx) {
    yield ctx.waitForExternalEvent("never");
    return "unexpected";
  },

  SuspendMe: async function* (ctx) {
    const first = yield ctx.waitForExternalEvent("step");
    const greeting = yield ctx.callActivity("greet", first);
    return greeting;
  },

  FailViaActivity: async function* (ctx, msg) {
    yield ctx.callActivity("plusOne", 1);
    yield ctx.callActivity("explode", msg);
    return "unreachable";
  },

  CatchActivityFailure: async function* (ctx, msg) {
    try {
      yield ctx.callActivity("explode", msg);
      return "no error?";
    } catch (e) {
      return {
        isTaskFailedError: e instanceof TaskFailedError,
        name: e.name,
        detailsType: e.details?.errorType,
        detailsMessage: e.details?.message,
        hasStack: typeof e.details?.stackTrace === "string" && e.details.stackTrace.length > 0,
      };
    }
  },

  ThrowInOrchestrator: async () => {
    const err = new RangeError("bad range in orchestrator");
    throw err;
  },

  CustomStatus: async function* (ctx) {
    ctx.setCustomStatus({ stage: "waiting", pct: 10 });
    const v = yield ctx.waitForExternalEvent("go");
    ctx.setCustomStatus({ stage: "done", pct: 100 });
    return v;
  },

  Simple: async (_ctx, input) => ({ echoed: input ?? null }),

  Double: async (_ctx, n) => n * 2,

  FailOnce: async (ctx, input) => {
    // Fails when running under the instance id named in the input; succeeds under any other id.
    if (ctx.instanceId === input.failFor) throw new Error(`attempt under ${input.failFor} failed`);
    return `ok:${input.v}`;
  },

  HistoryShape: async function* (ctx, n) {
    const r = yield ctx.callActivity("plusOne", n);
    yield ctx.createTimer(1);
    return r;
  },

  Sender: async function* (ctx, target) {
    ctx.sendEvent(target, "greeting", { from: ctx.instanceId });
    return "sent";
  },

  Receiver: async function* (ctx) {
    const ev = yield ctx.waitForExternalEvent("greeting");
    return ev;
  },

  Falsy: async function* (ctx, input) {
    const out = [];
    for (const v of input) out.push(yield ctx.callActivity("echo", v));
    return out;
  },

  Tagged: async () => "tagged",

  RetryActivity: async function* (ctx, key) {
    return yield ctx.callActivity("flaky", key, {
      retry: new RetryPolicy({ maxNumberOfAttempts: 4, firstRetryIntervalInMilliseconds: 300, backoffCoefficient: 2 }),
    });
  },

  RetryExhausted: async function* (ctx, key) {
    return yield ctx.callActivity("alwaysFails", key, {
      retry: new RetryPolicy({ maxNumberOfAttempts: 3, firstRetryIntervalInMilliseconds: 200 }),
    });
  },

  FlakyChild: async (ctx) => {
    const n = (childAttempts.get(ctx.instanceId) ?? 0) + 1;
    childAttempts.set(ctx.instanceId, n);
    if (n === 1) throw new Error("child attempt 1 failed");
    return `child ok on attempt ${n}`;
  },

  RetrySubOrchestration: async function* (ctx) {
    return yield ctx.callSubOrchestrator("FlakyChild", null, {
      instanceId: `${ctx.instanceId}-child`,
      retry: new RetryPolicy({ maxNumberOfAttempts: 3, firstRetryIntervalInMilliseconds: 200 }),
    });
  },

  RewindMe: async function* (ctx) {
    const a = yield ctx.callActivity("plusOne", 1);
    const b = yield ctx.callActivity("failFirstTime", ctx.instanceId);
    return { a, b };
  },

  Versioned: async (ctx) => ctx.version,

  Guids: async function* (ctx) {
    const a = ctx.newGuid();
    yield ctx.callActivity("echo", a);
    const b = ctx.newGuid();
    const seen = guidsSeen.get(ctx.instanceId) ?? [];
    seen.push(a);
    guidsSeen.set(ctx.instanceId, seen);
    return [a, b];
  },

  BigPayload: async function* (ctx, n) {
    const s = yield ctx.callActivity("bigString", n);
    return { len: s.length, s };
  },

  ParentWithWaitingChild: async function* (ctx) {
    yield ctx.callSubOrchestrator("LongWait", null, { instanceId: `${ctx.instanceId}-child` });
    return "unexpected";
  },

  DefaultChildIdsAcrossCan: async function* (ctx, input) {
    const childId = yield ctx.callSubOrchestrator("ReturnOwnId");
    if (input.gen < 1) {
      ctx.continueAsNew({ gen: input.gen + 1, first: childId }, false);
      return;
    }
    return { first: input.first, second: childId };
  },

  ReturnOwnId: async (ctx) => ctx.instanceId,

  EmptyCustomStatus: async function* (ctx) {
    ctx.setCustomStatus("initial");
    yield ctx.createTimer(0.2);
    ctx.setCustomStatus("");
    return "done";
  },

  CountedEventOrTimer: async function* (ctx, seconds) {
    executions.set(ctx.instanceId, (executions.get(ctx.instanceId) ?? 0) + 1);
    const ev = ctx.waitForExternalEvent("go");
    const winner = yield whenAny([ev, ctx.createTimer(seconds)]);
    return winner === ev ? "event" : "timer";
  },

  SendToNowhere: async function* (ctx, target) {
    ctx.sendEvent(target, "hello", 1);
    yield ctx.createTimer(0.2);
    return "sent";
  },
};

const executions = new Map(); // instance id -> orchestrator executions (episodes incl. replays)

Object.assign(orchestrators, {
  PastTimer: async function* (ctx) {
    yield ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() - 60_000));
    yield ctx.createTimer(0);
    return "fired";
  },

  TaggedChildParent: async function* (ctx) {
    return yield ctx.callSubOrchestrator("VersionAndParent", null, {
      instanceId: `${ctx.instanceId}-child`,
      tags: { kind: "child" },
      version: "2.0",
    });
  },

  VersionAndParent: async (ctx) => ({ version: ctx.version, parent: ctx.parent?.instanceId ?? null }),

  ParentOfTerminatedChild: async function* (ctx) {
    try {
      const r = yield ctx.callSubOrchestrator("LongWait", null, { instanceId: `${ctx.instanceId}-child` });
      return { caught: false, r };
    } catch (e) {
      return { caught: true, name: e.name, detailsType: e.details?.errorType, message: e.message };
    }
  },

  ChildCan: async function* (ctx, n) {
    if (n < 3) {
      yield ctx.createTimer(0.05);
      ctx.continueAsNew(n + 1, false);
      return;
    }
    return `child finished at ${n}`;
  },

  ParentOfCanChild: async function* (ctx) {
    return yield ctx.callSubOrchestrator("ChildCan", 0, { instanceId: `${ctx.instanceId}-child` });
  },

  Collect: async function* (ctx, n) {
    const got = [];
    for (let i = 0; i < n; i++) got.push(yield ctx.waitForExternalEvent("item"));
    return got;
  },

  CanManyEvents: async function* (ctx, input) {
    const v = yield ctx.waitForExternalEvent("e");
    const seen = [...input.seen, v];
    if (seen.length < input.n) {
      ctx.continueAsNew({ seen, n: input.n }, true);
      return;
    }
    return seen;
  },
});

const flakyCalls = new Map();
const childAttempts = new Map();
const guidsSeen = new Map();


// ---------------------------------------------------------------------------------------------

let client;
let worker;

before(async () => {
  client = createClient();
  worker = createWorker();
  for (const [name, fn] of Object.entries(orchestrators)) worker.addNamedOrchestrator(name, fn);
  for (const [name, fn] of Object.entries(activities)) worker.addNamedActivity(name, fn);
  await worker.start();
});

after(async () => {
  await worker?.stop();
  await client?.stop();
});

async function run(name, input, id, timeoutSec = 30) {
  await client.scheduleNewOrchestration(name, input, id);
  const state = await client.waitForOrchestrationCompletion(id, true, timeoutSec);
  assert.ok(state, `waitForOrchestrationCompletion(${id}) returned nothing`);
  return state;
}

function assertCompleted(state) {
  assert.equal(
    state.runtimeStatus,
    S.COMPLETED,
    `expected COMPLETED, got ${S[state.runtimeStatus]}; failure: ${fmtFailure(state.failureDetails)}`,
  );
  assert.equal(state.failureDetails, undefined);
}

// ---------------------------------------------------------------------------------------------

describe("basics", () => {
  it("empty orchestration completes with no output", async () => {
    const id = uid("empty");
    const state = await run("Empty", undefined, id);
    assertCompleted(state);
    assert.equal(state.instanceId, id);
    assert.equal(state.name, "Empty");
    assert.equal(state.serializedOutput, undefined);
    assert.ok(state.createdAt instanceof Date && state.lastUpdatedAt instanceof Date);
    assert.ok(state.lastUpdatedAt.getTime() >= state.createdAt.getTime());
  });

  it("activity sequence", async () => {
    const id = uid("seq");
    const state = await run("Sequence", 1, id);
    assertCompleted(state);
    assert.equal(state.name, "Sequence");
    assert.equal(state.serializedInput, json(1));
    assert.equal(state.serializedOutput, json([1, 2, 3, 4, 5, 6]));
    assert.equal(activityCalls.get(id), 5);
  });

  it("fan-out/fan-in over 10 activities", async () => {
    const id = uid("fan");
    const state = await run("FanOutFanIn", 10, id);
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.deepEqual(out.results, [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]);
    assert.equal(out.sum, 385);
    assert.equal(activityCalls.get(id), 10);
  });

  it("falsy payloads round-trip (0, '', false, null)", async () => {
    const id = uid("falsy");
    const input = [0, "", false, null];
    const state = await run("Falsy", input, id);
    assertCompleted(state);
    assert.equal(state.serializedInput, json(input));
    assert.equal(state.serializedOutput, json(input));
  });

  it("tags round-trip through StartInstance/GetInstance", async () => {
    const id = uid("tags");
    const tags = { env: "e2e", owner: "js" };
    await client.scheduleNewOrchestration("Tagged", undefined, { instanceId: id, tags });
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.deepEqual(state.tags, tags);
  });

  it("starting a second instance with the id of a running one is rejected", async () => {
    const id = uid("dup");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await assert.rejects(client.scheduleNewOrchestration("LongWait", undefined, id), (e) => {
      assert.match(`${e.name} ${e.message}`, /already exists|OrchestrationAlreadyExists/i);
      return true;
    });
    await client.terminateOrchestration(id, "cleanup");
    await client.waitForOrchestrationCompletion(id, false, 30);
  });

  it("getOrchestrationState of an unknown instance is undefined", async () => {
    assert.equal(await client.getOrchestrationState(uid("nope")), undefined);
  });
});

describe("sub-orchestrations", () => {
  it("parent calls a child orchestration and gets its result", async () => {
    const id = uid("parent");
    const state = await run("Parent", "Ada", id);
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.deepEqual(out.child, { greeting: "Hello, Ada!", self: `${id}-child`, parent: id });

    const child = await client.getOrchestrationState(`${id}-child`, true);
    assert.ok(child, "child instance must exist");
    assert.equal(child.runtimeStatus, S.COMPLETED);
    assert.equal(child.name, "Child");
    assert.equal(child.serializedInput, json({ name: "Ada" }));
  });

  it("a failed child surfaces as a catchable TaskFailedError in the parent", async () => {
    const id = uid("parentfail");
    const state = await run("ParentOfFailingChild", null, id);
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.equal(out.caught, "TaskFailedError");
    assert.equal(out.detailsType, "Error");
    assert.match(out.detailsMessage, /child went wrong/);
    const child = await client.getOrchestrationState(`${id}-child`);
    assert.equal(child?.runtimeStatus, S.FAILED);
    assert.match(child.failureDetails?.message ?? "", /child went wrong/);
  });
});

describe("external events", () => {
  it("events raised immediately after start are delivered in order", async () => {
    const id = uid("events");
    await client.scheduleNewOrchestration("ThreeEvents", undefined, id);
    await client.raiseOrchestrationEvent(id, "A", "a");
    await client.raiseOrchestrationEvent(id, "B", { b: 2 });
    await client.raiseOrchestrationEvent(id, "C", 3);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json(["a", { b: 2 }, 3]));
  });

  it("event raised to a running orchestration (case-insensitive name)", async () => {
    const id = uid("approval");
    await client.scheduleNewOrchestration("WaitForApproval", undefined, id);
    const started = await client.waitForOrchestrationStart(id, false, 30);
    assert.equal(started.runtimeStatus, S.RUNNING);
    await sleep(200);
    assert.equal((await client.getOrchestrationState(id)).runtimeStatus, S.RUNNING);
    await client.raiseOrchestrationEvent(id, "APPROVAL", { by: "bob" });
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ approval: { by: "bob" } }));
  });

  it("whenAny(event, timer): the event wins", async () => {
    const id = uid("anyev");
    await client.scheduleNewOrchestration("EventOrTimeout", 30, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await client.raiseOrchestrationEvent(id, "go", 42);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ won: "event", data: 42 }));
  });

  it("whenAny(event, timer): the timer wins when no event comes", async () => {
    const id = uid("anytm");
    const state = await run("EventOrTimeout", 1, id);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ won: "timer" }));
  });

  it("orchestration-to-orchestration sendEvent", async () => {
    const receiver = uid("receiver");
    const sender = uid("sender");
    await client.scheduleNewOrchestration("Receiver", undefined, receiver);
    await client.waitForOrchestrationStart(receiver, false, 30);
    const s = await run("Sender", receiver, sender);
    assertCompleted(s);
    const r = await client.waitForOrchestrationCompletion(receiver, true, 30);
    assertCompleted(r);
    assert.equal(r.serializedOutput, json({ from: sender }));
  });
});

describe("timers", () => {
  it("durable timer (relative seconds) delays the orchestration", async () => {
    const id = uid("timer");
    const t0 = Date.now();
    const state = await run("Timer", 2, id);
    const elapsed = Date.now() - t0;
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.equal(out.greeting, "Hello, after-timer!");
    assert.ok(out.after - out.before >= 2000, `orchestration time advanced only ${out.after - out.before} ms`);
    assert.ok(elapsed >= 1900, `completed after ${elapsed} ms, timer was 2 s`);
  });

  it("durable timer (absolute Date) never fires early", async () => {
    const id = uid("timerabs");
    const state = await run("TimerAbsolute", 1500, id);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json(true));
  });
});

describe("continue-as-new", () => {
  it("loops through generations and completes with the last input", async () => {
    const id = uid("can");
    const state = await run("Counter", { n: 0, until: 4, executions: [] }, id);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ n: 4, executions: [1, 2, 3, 4] }));
    // The stored input is the input of the latest generation.
    assert.equal(state.serializedInput, json({ n: 3, until: 4, executions: [1, 2, 3] }));
    // Only the latest generation's history is kept.
    const history = await client.getOrchestrationHistory(id);
    const started = history.filter((e) => e.type === HistoryEventType.ExecutionStarted);
    assert.equal(started.length, 1);
    assert.equal(started[0].input, json({ n: 3, until: 4, executions: [1, 2, 3] }));
  });

  it("events raised across generations are not lost (saveEvents)", async () => {
    const id = uid("canev");
    await client.scheduleNewOrchestration("CounterWithEvents", { seen: [], until: 3 }, id);
    for (const t of [1, 2, 3]) await client.raiseOrchestrationEvent(id, "tick", t);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json([1, 2, 3]));
  });
});

describe("terminate", () => {
  it("terminates a running orchestration with an output", async () => {
    const id = uid("term");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    const started = await client.waitForOrchestrationStart(id, false, 30);
    assert.equal(started.runtimeStatus, S.RUNNING);
    await client.terminateOrchestration(id, "stopped by test");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, S.TERMINATED);
    assert.equal(state.serializedOutput, json("stopped by test"));
    assert.equal(state.failureDetails, undefined);
  });

  it("terminates with terminateOptions and a complex output", async () => {
    const id = uid("termopt");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await client.terminateOrchestration(id, terminateOptions({ output: { reason: "x", code: 7 }, recursive: false }));
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, S.TERMINATED);
    assert.equal(state.serializedOutput, json({ reason: "x", code: 7 }));
  });

  it("terminates a suspended orchestration", async () => {
    const id = uid("termsusp");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await client.suspendOrchestration(id);
    await waitForStatus(client, id, S.SUSPENDED);
    await client.terminateOrchestration(id, "bye");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, S.TERMINATED);
    assert.equal(state.serializedOutput, json("bye"));
  });
});

describe("suspend / resume", () => {
  it("suspended instance holds events until resumed, then completes", async () => {
    const id = uid("susp");
    await client.scheduleNewOrchestration("SuspendMe", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);

    await client.suspendOrchestration(id);
    await waitForStatus(client, id, S.SUSPENDED);

    // Raised while suspended: must be held, not processed.
    await client.raiseOrchestrationEvent(id, "step", "world");
    await sleep(1000);
    const held = await client.getOrchestrationState(id, true);
    assert.equal(held.runtimeStatus, S.SUSPENDED, `expected still SUSPENDED, got ${S[held.runtimeStatus]}`);

    await client.resumeOrchestration(id);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json("Hello, world!"));

    const history = await client.getOrchestrationHistory(id);
    const types = history.map((e) => e.type);
    assert.ok(types.includes(HistoryEventType.ExecutionSuspended), `history lacks ExecutionSuspended: ${types}`);
    assert.ok(types.includes(HistoryEventType.ExecutionResumed), `history lacks ExecutionResumed: ${types}`);
  });
});

describe("failures", () => {
  it("failed activity: failureDetails on the failed orchestration", async () => {
    const id = uid("fail");
    const state = await run("FailViaActivity", "out of widgets", id);
    assert.equal(state.runtimeStatus, S.FAILED);
    assert.equal(state.serializedOutput, undefined);
    const fd = state.failureDetails;
    assert.ok(fd, "failureDetails must be present");
    // The orchestrator did not catch the activity failure, so the SDK fails the orchestration
    // with the TaskFailedError that wraps the activity's error.
    assert.equal(fd.errorType, "TaskFailedError");
    assert.match(fd.message, /out of widgets/);
    assert.throws(() => state.raiseIfFailed(), /out of widgets/);

    // failureDetails are also returned without payloads and by QueryInstances.
    const noPayload = await client.getOrchestrationState(id, false);
    assert.equal(noPayload.failureDetails?.errorType, "TaskFailedError");

    // The activity failure itself is in history with the original error type.
    const history = await client.getOrchestrationHistory(id);
    const taskFailed = history.find((e) => e.type === HistoryEventType.TaskFailed);
    assert.ok(taskFailed, "TaskFailed event in history");
    assert.equal(taskFailed.failureDetails?.errorType, "InventoryError");
    assert.equal(taskFailed.failureDetails?.message, "out of widgets");
  });

  it("activity failure caught in the orchestrator keeps the original errorType", async () => {
    const id = uid("catch");
    const state = await run("CatchActivityFailure", "nope", id);
    assertCompleted(state);
    assert.deepEqual(JSON.parse(state.serializedOutput), {
      isTaskFailedError: true,
      name: "TaskFailedError",
      detailsType: "InventoryError",
      detailsMessage: "nope",
      hasStack: true,
    });
  });

  it("exception thrown by the orchestrator itself", async () => {
    const id = uid("orchthrow");
    const state = await run("ThrowInOrchestrator", null, id);
    assert.equal(state.runtimeStatus, S.FAILED);
    assert.equal(state.failureDetails?.errorType, "RangeError");
    assert.equal(state.failureDetails?.message, "bad range in orchestrator");
    assert.ok(state.failureDetails?.stackTrace?.includes("RangeError"), "stack trace kept");
  });
});

describe("custom status", () => {
  it("custom status is visible mid-run and replaced at the end", async () => {
    const id = uid("cstatus");
    await client.scheduleNewOrchestration("CustomStatus", undefined, id);
    const mid = await waitUntil(
      async () => {
        const st = await client.getOrchestrationState(id, true);
        return st?.serializedCustomStatus ? st : undefined;
      },
      { what: "custom status" },
    );
    assert.equal(mid.runtimeStatus, S.RUNNING);
    assert.deepEqual(JSON.parse(mid.serializedCustomStatus), { stage: "waiting", pct: 10 });
    await client.raiseOrchestrationEvent(id, "go", "v");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.deepEqual(JSON.parse(state.serializedCustomStatus), { stage: "done", pct: 100 });
    assert.equal(state.serializedOutput, json("v"));
  });
});

describe("queries and purge", () => {
  it("getAllInstances: prefix, status filter, paging, payloads", async () => {
    const prefix = uid("q") + "-";
    const ids = [0, 1, 2].map((i) => `${prefix}${i}`);
    for (const [i, id] of ids.entries()) await run("Simple", { i }, id);
    const running = `${prefix}running`;
    await client.scheduleNewOrchestration("LongWait", undefined, running);
    await client.waitForOrchestrationStart(running, false, 30);

    // prefix only
    const all = [];
    for await (const st of client.getAllInstances({ instanceIdPrefix: prefix })) all.push(st);
    assert.deepEqual(all.map((s) => s.instanceId).sort(), [...ids, running].sort());
    // without fetchInputsAndOutputs: no payloads
    assert.ok(all.every((s) => s.serializedInput === undefined && s.serializedOutput === undefined));

    // status filter + payloads
    const done = [];
    for await (const st of client.getAllInstances({
      instanceIdPrefix: prefix,
      statuses: [S.COMPLETED],
      fetchInputsAndOutputs: true,
    }))
      done.push(st);
    assert.deepEqual(done.map((s) => s.instanceId).sort(), ids);
    for (const st of done) {
      assert.equal(st.runtimeStatus, S.COMPLETED);
      const i = Number(st.instanceId.slice(prefix.length));
      assert.equal(st.serializedInput, json({ i }));
      assert.equal(st.serializedOutput, json({ echoed: { i } }));
    }

    const runningOnly = [];
    for await (const st of client.getAllInstances({ instanceIdPrefix: prefix, statuses: [S.RUNNING] })) runningOnly.push(st);
    assert.deepEqual(runningOnly.map((s) => s.instanceId), [running]);

    // created-time window that excludes everything
    const none = [];
    for await (const st of client.getAllInstances({ instanceIdPrefix: prefix, createdTo: new Date(Date.now() - 3600_000) }))
      none.push(st);
    assert.equal(none.length, 0);

    // paging: 4 instances with page size 2
    const pages = [];
    for await (const page of client.getAllInstances({ instanceIdPrefix: prefix, pageSize: 2 }).asPages()) {
      pages.push(page);
      assert.ok(page.values.length <= 2, `page of ${page.values.length} > pageSize 2`);
      if (pages.length > 10) break;
    }
    assert.ok(pages.length >= 2, `expected >= 2 pages, got ${pages.length}`);
    const paged = pages.flatMap((p) => p.values.map((v) => v.instanceId));
    assert.deepEqual([...paged].sort(), [...ids, running].sort());
    assert.equal(new Set(paged).size, paged.length, "no duplicates across pages");
    assert.ok(!pages.at(-1).hasMoreResults, "last page has no continuation token");

    await client.terminateOrchestration(running, "cleanup");
    await client.waitForOrchestrationCompletion(running, false, 30);
  });

  it("purge by id removes a completed instance", async () => {
    const id = uid("purge");
    assertCompleted(await run("Simple", 1, id));
    const result = await client.purgeOrchestration(id);
    assert.equal(result?.deletedInstanceCount, 1);
    assert.equal(await client.getOrchestrationState(id), undefined);
    assert.deepEqual(await client.getOrchestrationHistory(id), []);
    // purging again: nothing left
    assert.equal((await client.purgeOrchestration(id))?.deletedInstanceCount, 0);
  });

  it("purge of a running instance deletes nothing", async () => {
    const id = uid("purgerun");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);
    const result = await client.purgeOrchestration(id);
    assert.equal(result?.deletedInstanceCount, 0);
    assert.ok(await client.getOrchestrationState(id), "still there");
    await client.terminateOrchestration(id, "cleanup");
    await client.waitForOrchestrationCompletion(id, false, 30);
  });

  it("recursive purge removes the parent and its sub-orchestration", async () => {
    const id = uid("purgerec");
    assertCompleted(await run("Parent", "Bo", id));
    const result = await client.purgeOrchestration(id, { recursive: true });
    assert.equal(result?.deletedInstanceCount, 2);
    assert.equal(await client.getOrchestrationState(id), undefined);
    assert.equal(await client.getOrchestrationState(`${id}-child`), undefined);
  });

  it("purge by criteria (created-time window + status)", async () => {
    const from = new Date(Date.now() - 1000);
    const a = uid("purgecrit");
    const b = uid("purgecrit");
    assertCompleted(await run("Simple", "a", a));
    assert.equal((await run("ThrowInOrchestrator", null, b)).runtimeStatus, S.FAILED);
    const to = new Date(Date.now() + 1000);

    const criteria = new PurgeInstanceCriteria();
    criteria.setCreatedTimeFrom(from);
    criteria.setCreatedTimeTo(to);
    criteria.setRuntimeStatusList([S.FAILED]);
    const r1 = await client.purgeOrchestration(criteria);
    assert.ok((r1?.deletedInstanceCount ?? 0) >= 1, `deleted ${r1?.deletedInstanceCount}`);
    assert.equal(await client.getOrchestrationState(b), undefined, "FAILED instance purged");
    assert.ok(await client.getOrchestrationState(a), "COMPLETED instance kept");
  });

  it("listInstanceIds: terminal instances only, key-based paging", async () => {
    const from = new Date(Date.now() - 1000);
    const ids = [uid("list"), uid("list")];
    for (const id of ids) assertCompleted(await run("Simple", id, id));
    const running = uid("listrun");
    await client.scheduleNewOrchestration("LongWait", undefined, running);
    await client.waitForOrchestrationStart(running, false, 30);

    const seen = [];
    let key;
    let pages = 0;
    for (;;) {
      const page = await client.listInstanceIds({ completedTimeFrom: from, pageSize: 1, lastInstanceKey: key });
      pages++;
      assert.ok(page.values.length <= 1, `page size 1 returned ${page.values.length}`);
      seen.push(...page.values);
      if (!page.hasMoreResults) break;
      assert.ok(page.continuationToken.includes(page.values.at(-1)), "key names the last returned id");
      key = page.continuationToken;
      if (pages > 50) assert.fail("listInstanceIds paging does not terminate");
    }
    for (const id of ids) assert.ok(seen.includes(id), `${id} listed`);
    assert.ok(!seen.includes(running), "running instance is not listed");
    assert.ok(pages >= 2);

    const completedOnly = await client.listInstanceIds({ completedTimeFrom: from, runtimeStatus: [S.FAILED] });
    for (const id of ids) assert.ok(!completedOnly.values.includes(id), "status filter applied");

    await client.terminateOrchestration(running, "cleanup");
    await client.waitForOrchestrationCompletion(running, false, 30);
  });
});

describe("restart", () => {
  it("restart with the same instance id re-runs with the original input", async () => {
    const id = uid("restart");
    assert.equal((await run("Double", 21, id)).serializedOutput, json(42));
    const first = await client.getOrchestrationState(id);
    const newId = await client.restartOrchestration(id, false);
    assert.equal(newId, id);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json(42));
    assert.ok(state.createdAt.getTime() >= first.createdAt.getTime());
  });

  it("restart of a failed instance with a new instance id", async () => {
    const id = uid("restartnew");
    const failed = await run("FailOnce", { failFor: id, v: "x" }, id);
    assert.equal(failed.runtimeStatus, S.FAILED);
    const newId = await client.restartOrchestration(id, true);
    assert.notEqual(newId, id);
    const state = await client.waitForOrchestrationCompletion(newId, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json("ok:x"));
    assert.equal((await client.getOrchestrationState(id)).runtimeStatus, S.FAILED, "original untouched");
  });

  it("restart of a running instance with the same id is refused; unknown id is an error", async () => {
    const id = uid("restartrun");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await assert.rejects(client.restartOrchestration(id, false));
    await assert.rejects(client.restartOrchestration(uid("restartunknown"), false), /not found/i);
    await client.terminateOrchestration(id, "cleanup");
    await client.waitForOrchestrationCompletion(id, false, 30);
  });
});

describe("history", () => {
  it("getOrchestrationHistory returns the committed events in order", async () => {
    const id = uid("hist");
    assertCompleted(await run("HistoryShape", 5, id));
    const history = await client.getOrchestrationHistory(id);
    const types = history.map((e) => e.type);
    const T = HistoryEventType;
    for (const t of [
      T.ExecutionStarted,
      T.TaskScheduled,
      T.TaskCompleted,
      T.TimerCreated,
      T.TimerFired,
      T.ExecutionCompleted,
      T.OrchestratorStarted,
    ]) {
      assert.ok(types.includes(t), `history lacks ${t}: ${types.join(",")}`);
    }
    assert.equal(types[0], T.OrchestratorStarted, "history starts with OrchestratorStarted");
    const started = history.find((e) => e.type === T.ExecutionStarted);
    assert.equal(started.name, "HistoryShape");
    assert.equal(started.input, json(5));
    const scheduled = history.find((e) => e.type === T.TaskScheduled);
    assert.equal(scheduled.name, "plusOne");
    assert.equal(scheduled.input, json(5));
    const completed = history.find((e) => e.type === T.TaskCompleted);
    assert.equal(completed.result, json(6));
    assert.equal(completed.taskScheduledId, scheduled.eventId);
    const exec = history.find((e) => e.type === T.ExecutionCompleted);
    assert.equal(exec.result, json(6));
    assert.ok(types.indexOf(T.TaskScheduled) < types.indexOf(T.TaskCompleted));
    assert.ok(types.indexOf(T.TimerCreated) < types.indexOf(T.TimerFired));
    // OrchestratorCompleted after ExecutionCompleted is optional (PROTOCOL.md §2.6).
    const tail = types.slice(types.indexOf(T.ExecutionCompleted));
    assert.ok(
      tail.length === 1 || (tail.length === 2 && tail[1] === T.OrchestratorCompleted),
      `nothing but OrchestratorCompleted may follow ExecutionCompleted: ${tail}`,
    );
    assert.equal(types.filter((t) => t === T.ExecutionCompleted).length, 1);
    for (const e of history) assert.ok(e.timestamp instanceof Date && !isNaN(e.timestamp), `timestamp on ${e.type}`);
  });

  it("history of an unknown instance is empty", async () => {
    assert.deepEqual(await client.getOrchestrationHistory(uid("nohist")), []);
  });
});

describe("retries", () => {
  it("activity retry policy: fails twice, succeeds on the third attempt with growing delays", async () => {
    const id = uid("retry");
    const state = await run("RetryActivity", id, id);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json("ok after 3"));
    const calls = flakyCalls.get(id);
    assert.equal(calls.length, 3);
    // 300 ms then 600 ms between attempts (durable retry timers), never early
    assert.ok(calls[1] - calls[0] >= 280, `first retry after ${calls[1] - calls[0]} ms`);
    assert.ok(calls[2] - calls[1] >= 580, `second retry after ${calls[2] - calls[1]} ms`);
  });

  it("activity retry policy exhausted: orchestration fails after maxNumberOfAttempts", async () => {
    const id = uid("retryx");
    const state = await run("RetryExhausted", id, id);
    assert.equal(state.runtimeStatus, S.FAILED);
    assert.match(state.failureDetails?.message ?? "", /permanent failure/);
    assert.equal(flakyCalls.get(id).length, 3);
  });

  it("sub-orchestration retry re-creates the child with the same instance id", async () => {
    const id = uid("retrysub");
    const state = await run("RetrySubOrchestration", null, id);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json("child ok on attempt 2"));
    assert.equal(childAttempts.get(`${id}-child`), 2);
    const child = await client.getOrchestrationState(`${id}-child`);
    assert.equal(child?.runtimeStatus, S.COMPLETED);
  });
});

// Rewind (PROTOCOL.md §4.10): the sidecar rewrites the history itself (Flow B).

describe("rewind", () => {
  it("rewinding a failed instance re-runs only the failed activity", async (t) => {
    const id = uid("rewind");
    const failed = await run("RewindMe", null, id);
    assert.equal(failed.runtimeStatus, S.FAILED);
    assert.match(failed.failureDetails?.message ?? "", /transient failure/);
    assert.equal(activityCalls.get(id), 2);

    await client.rewindInstance(id, "try again");
    // The instance must be non-terminal as soon as the RPC returns (PROTOCOL.md §3.7).
    const right = await client.getOrchestrationState(id);
    assert.notEqual(right.runtimeStatus, S.FAILED, "still FAILED right after RewindInstance returned");

    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ a: 2, b: "recovered on call 2" }));
    // plusOne succeeded before and must not be re-run; failFirstTime runs once more.
    assert.equal(activityCalls.get(id), 3);
  });

  it("rewind is refused for completed, running and unknown instances", async (t) => {
    const done = uid("rewinddone");
    assertCompleted(await run("Simple", 1, done));
    await assert.rejects(client.rewindInstance(done, "no"), /not allow|precondition|completed/i);

    const running = uid("rewindrun");
    await client.scheduleNewOrchestration("LongWait", undefined, running);
    await client.waitForOrchestrationStart(running, false, 30);
    await assert.rejects(client.rewindInstance(running, "no"), /not allow|precondition|running/i);
    await client.terminateOrchestration(running, "cleanup");
    await client.waitForOrchestrationCompletion(running, false, 30);

    await assert.rejects(client.rewindInstance(uid("rewindunknown"), "no"), /not found/i);
  });
});

describe("lifecycle edge cases", () => {
  it("scheduled start: instance stays PENDING until startAt", async () => {
    const id = uid("sched");
    const startAt = new Date(Date.now() + 2000);
    await client.scheduleNewOrchestration("Simple", "later", { instanceId: id, startAt });
    await sleep(800);
    const pending = await client.getOrchestrationState(id);
    assert.equal(pending?.runtimeStatus, S.PENDING, `expected PENDING before startAt, got ${S[pending?.runtimeStatus]}`);
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.ok(Date.now() >= startAt.getTime() - 50, "completed before startAt");
    assert.equal(state.serializedOutput, json({ echoed: "later" }));
  });

  it("terminating a not-yet-started (scheduled) instance", async () => {
    const id = uid("schedterm");
    await client.scheduleNewOrchestration("Simple", "never", { instanceId: id, startAt: new Date(Date.now() + 60_000) });
    await client.terminateOrchestration(id, "not needed");
    const state = await client.waitForOrchestrationCompletion(id, true, 10);
    assert.equal(state.runtimeStatus, S.TERMINATED);
    assert.equal(state.serializedOutput, json("not needed"));
  });

  it("recursive terminate reaches the sub-orchestration; non-recursive purge deletes only the parent", async () => {
    const id = uid("termrec");
    await client.scheduleNewOrchestration("ParentWithWaitingChild", undefined, id);
    await waitForStatus(client, `${id}-child`, S.RUNNING);
    await client.terminateOrchestration(id, terminateOptions({ output: "all gone", recursive: true }));
    const parent = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(parent.runtimeStatus, S.TERMINATED);
    const child = await client.waitForOrchestrationCompletion(`${id}-child`, true, 30);
    assert.equal(child.runtimeStatus, S.TERMINATED);
    assert.equal(child.serializedOutput, json("all gone"));

    const purged = await client.purgeOrchestration(id, { recursive: false });
    assert.equal(purged?.deletedInstanceCount, 1);
    assert.ok(await client.getOrchestrationState(`${id}-child`), "child kept by a non-recursive purge");
  });

  it("non-recursive terminate leaves the child running", async () => {
    const id = uid("termnonrec");
    await client.scheduleNewOrchestration("ParentWithWaitingChild", undefined, id);
    await waitForStatus(client, `${id}-child`, S.RUNNING);
    await client.terminateOrchestration(id, "parent only");
    assert.equal((await client.waitForOrchestrationCompletion(id, false, 30)).runtimeStatus, S.TERMINATED);
    await sleep(500);
    assert.equal((await client.getOrchestrationState(`${id}-child`)).runtimeStatus, S.RUNNING);
    await client.terminateOrchestration(`${id}-child`, "cleanup");
    await client.waitForOrchestrationCompletion(`${id}-child`, false, 30);
  });

  it("raising an event: unknown instance is an error, completed instance is a no-op", async () => {
    await assert.rejects(client.raiseOrchestrationEvent(uid("ghost"), "x", 1));
    const id = uid("raisedone");
    assertCompleted(await run("Simple", 1, id));
    await client.raiseOrchestrationEvent(id, "late", 1);
    await sleep(300);
    const state = await client.getOrchestrationState(id, true);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ echoed: 1 }));
  });

  it("suspend and resume are idempotent; suspending a completed instance is a no-op", async () => {
    const id = uid("suspidem");
    await client.scheduleNewOrchestration("WaitForApproval", undefined, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await client.resumeOrchestration(id); // not suspended: no-op
    await client.suspendOrchestration(id);
    await client.suspendOrchestration(id); // already suspended: no-op
    await waitForStatus(client, id, S.SUSPENDED);
    await client.resumeOrchestration(id);
    await waitForStatus(client, id, S.RUNNING);
    await client.raiseOrchestrationEvent(id, "approval", "yes");
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json({ approval: "yes" }));
    await client.suspendOrchestration(id);
    assertCompleted(await client.getOrchestrationState(id));
  });

  it("waitForOrchestrationCompletion times out (client side) on a running instance", async () => {
    const id = uid("waitto");
    await client.scheduleNewOrchestration("LongWait", undefined, id);
    await assert.rejects(client.waitForOrchestrationCompletion(id, false, 1), (e) => e.name === "TimeoutError");
    await client.terminateOrchestration(id, "cleanup");
    await client.waitForOrchestrationCompletion(id, false, 30);
  });

  it("orchestration version flows from StartInstance to the context", async () => {
    const id = uid("ver");
    await client.scheduleNewOrchestration("Versioned", undefined, { instanceId: id, version: "1.2.3" });
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(state);
    assert.equal(state.serializedOutput, json("1.2.3"));
  });

  it("newGuid is deterministic across replays", async () => {
    const id = uid("guid");
    const state = await run("Guids", null, id);
    assertCompleted(state);
    const [a, b] = JSON.parse(state.serializedOutput);
    assert.notEqual(a, b);
    // the first guid was regenerated on the replay after the activity and must be identical
    assert.deepEqual(guidsSeen.get(id), [a]);
  });

  it("default sub-orchestration ids do not collide across continue-as-new (fresh executionId)", async () => {
    const id = uid("canchild");
    const state = await run("DefaultChildIdsAcrossCan", { gen: 0 }, id);
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.ok(out.first && out.second);
    assert.notEqual(out.first, out.second);
    // SDK derives `${executionId}:${hex4}`; the legacy fallback `${parentId}:${hex4}` means the
    // sidecar did not supply an executionId.
    assert.ok(!out.first.startsWith(id), `child id ${out.first} derived from the parent id: no executionId supplied`);
  });
});

describe("more edge cases", () => {
  it("custom status set to an empty string is kept as the JSON value \"\"", async () => {
    const id = uid("cs-empty");
    const state = await run("EmptyCustomStatus", null, id);
    assertCompleted(state);
    assert.equal(state.serializedCustomStatus, '""');
  });

  it("getOrchestrationState without payloads omits input, output and custom status", async () => {
    const id = uid("nopayload");
    assertCompleted(await run("Simple", { big: "input" }, id));
    const st = await client.getOrchestrationState(id, false);
    assert.equal(st.runtimeStatus, S.COMPLETED);
    assert.equal(st.serializedInput, undefined);
    assert.equal(st.serializedOutput, undefined);
    const full = await client.getOrchestrationState(id, true);
    assert.equal(full.serializedInput, json({ big: "input" }));
  });

  it("waitForOrchestrationCompletion of an unknown instance returns undefined at once", async () => {
    const t0 = Date.now();
    assert.equal(await client.waitForOrchestrationCompletion(uid("nowait"), false, 5), undefined);
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  });

  it("a completed instance id can be reused by scheduleNewOrchestration (replaces it)", async () => {
    const id = uid("reuse");
    assert.equal((await run("Double", 2, id)).serializedOutput, json(4));
    await client.scheduleNewOrchestration("Double", 5, id);
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.equal(st.serializedInput, json(5));
    assert.equal(st.serializedOutput, json(10));
    const history = await client.getOrchestrationHistory(id);
    assert.equal(history.filter((e) => e.type === HistoryEventType.ExecutionStarted).length, 1, "old history dropped");
  });

  it("the losing timer of whenAny firing later does not re-run the completed instance", async () => {
    const id = uid("losing");
    await client.scheduleNewOrchestration("CountedEventOrTimer", 1.5, id);
    await client.waitForOrchestrationStart(id, false, 30);
    await client.raiseOrchestrationEvent(id, "go", null);
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.equal(st.serializedOutput, json("event"));
    const runs = executions.get(id);
    await sleep(2500); // the 1.5 s timer is due meanwhile
    const later = await client.getOrchestrationState(id, true);
    assertCompleted(later);
    assert.equal(later.serializedOutput, json("event"));
    assert.equal(executions.get(id), runs, "orchestrator ran again after completion");
  });

  it("sendEvent to an unknown instance is dropped and the sender completes", async () => {
    const id = uid("nowhere");
    const st = await run("SendToNowhere", uid("ghost-target"), id);
    assertCompleted(st);
    const history = await client.getOrchestrationHistory(id);
    assert.ok(history.some((e) => e.type === HistoryEventType.EventSent), "EventSent recorded in history");
  });

  it("unfiltered getAllInstances pages through every instance (page size 7)", async (t) => {
    const id = uid("needle");
    assertCompleted(await run("Simple", null, id));
    let count = 0;
    let found = false;
    const seen = new Set();
    for await (const st of client.getAllInstances({ pageSize: 7 })) {
      count++;
      assert.ok(!seen.has(st.instanceId), `duplicate ${st.instanceId}`);
      seen.add(st.instanceId);
      if (st.instanceId === id) found = true;
      if (count > 10_000) break;
    }
    assert.ok(found, `instance ${id} not found among ${count}`);
    t.diagnostic(`getAllInstances() iterated ${count} instances`);
  });
});

describe("more lifecycle probes", () => {
  it("a parent waiting on a child that gets terminated sees a failed sub-orchestration", async () => {
    const id = uid("termchild");
    await client.scheduleNewOrchestration("ParentOfTerminatedChild", undefined, id);
    await waitForStatus(client, `${id}-child`, S.RUNNING);
    await client.terminateOrchestration(`${id}-child`, "child killed");
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    const out = JSON.parse(st.serializedOutput);
    assert.equal(out.caught, true, `parent got a result instead of a failure: ${st.serializedOutput}`);
    assert.equal(out.name, "TaskFailedError");
  });

  it("a sub-orchestration that continues-as-new reports its final result to the parent", async () => {
    const id = uid("canchild2");
    const st = await run("ParentOfCanChild", null, id);
    assertCompleted(st);
    assert.equal(st.serializedOutput, json("child finished at 3"));
  });

  it("50 events raised back-to-back arrive complete and in order", async () => {
    const id = uid("many-ev");
    await client.scheduleNewOrchestration("Collect", 50, id);
    for (let i = 0; i < 50; i++) await client.raiseOrchestrationEvent(id, "item", i);
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.deepEqual(JSON.parse(st.serializedOutput), Array.from({ length: 50 }, (_, i) => i));
  });

  it("10 continue-as-new generations fed by rapid events lose nothing (saveEvents)", async () => {
    const id = uid("can-many");
    await client.scheduleNewOrchestration("CanManyEvents", { seen: [], n: 10 }, id);
    for (let i = 0; i < 10; i++) await client.raiseOrchestrationEvent(id, "e", i);
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.deepEqual(JSON.parse(st.serializedOutput), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("an event raised to a scheduled (PENDING) instance is delivered once it starts", async () => {
    const id = uid("pending-ev");
    await client.scheduleNewOrchestration("WaitForApproval", undefined, { instanceId: id, startAt: new Date(Date.now() + 1000) });
    await client.raiseOrchestrationEvent(id, "approval", "early");
    await assert.rejects(client.waitForOrchestrationStart(id, false, 0.3), (e) => e.name === "TimeoutError");
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.equal(st.serializedOutput, json({ approval: "early" }));
  });

  // An instance suspended before its first episode must not run: SDKs execute the first
  // step for ExecutionStarted before they apply a suspension delivered in the same batch.
  it("suspending a scheduled (PENDING) instance holds it past startAt until resumed", async () => {
    const id = uid("pending-susp");
    await client.scheduleNewOrchestration("Simple", "s", { instanceId: id, startAt: new Date(Date.now() + 500) });
    await client.suspendOrchestration(id);
    await waitForStatus(client, id, S.SUSPENDED);
    await sleep(1200);
    assert.equal((await client.getOrchestrationState(id)).runtimeStatus, S.SUSPENDED, "ran while suspended");
    await client.resumeOrchestration(id);
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.equal(st.serializedOutput, json({ echoed: "s" }));
  });

  it("instance ids with separators and unicode work with paging cursors", async () => {
    const prefix = `${uid("odd")}|`;
    const ids = [`${prefix}a|b`, `${prefix}c/d e`, `${prefix}ü:ß@`];
    for (const id of ids) assertCompleted(await run("Simple", id, id));
    const got = [];
    for await (const page of client.getAllInstances({ instanceIdPrefix: prefix, pageSize: 1 }).asPages()) {
      got.push(...page.values.map((v) => v.instanceId));
      if (got.length > 10) break;
    }
    assert.deepEqual([...got].sort(), [...ids].sort());

    const from = (await client.getOrchestrationState(ids[0])).createdAt;
    const listed = [];
    let key;
    for (let i = 0; i < 200; i++) {
      const page = await client.listInstanceIds({ completedTimeFrom: from, pageSize: 1, lastInstanceKey: key });
      listed.push(...page.values);
      if (!page.hasMoreResults) break;
      key = page.continuationToken;
    }
    for (const id of ids) assert.ok(listed.includes(id), `${id} missing from listInstanceIds pages`);
    assert.equal(new Set(listed).size, listed.length, "duplicates across listInstanceIds pages");
  });

  it("50 orchestrations started concurrently all complete", async () => {
    const ids = Array.from({ length: 50 }, () => uid("burst"));
    await Promise.all(ids.map((id, i) => client.scheduleNewOrchestration("Sequence", i, id)));
    const states = await Promise.all(ids.map((id) => client.waitForOrchestrationCompletion(id, true, 60)));
    for (const [i, st] of states.entries()) {
      assertCompleted(st);
      assert.equal(st.serializedOutput, json([i, i + 1, i + 2, i + 3, i + 4, i + 5]));
    }
  });
});

describe("small probes", () => {
  it("timers in the past and of zero length fire immediately", async () => {
    const id = uid("pasttimer");
    const t0 = Date.now();
    const st = await run("PastTimer", null, id);
    assertCompleted(st);
    assert.equal(st.serializedOutput, json("fired"));
    assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  });

  it("sub-orchestration tags and version reach the child", async () => {
    const id = uid("childtags");
    const st = await run("TaggedChildParent", null, id);
    assertCompleted(st);
    assert.deepEqual(JSON.parse(st.serializedOutput), { version: "2.0", parent: id });
    const child = await client.getOrchestrationState(`${id}-child`);
    assert.deepEqual(child.tags, { kind: "child" });
  });

  it("history of a failed orchestration ends with ExecutionCompleted carrying the failure", async () => {
    const id = uid("failhist");
    assert.equal((await run("ThrowInOrchestrator", null, id)).runtimeStatus, S.FAILED);
    const history = await client.getOrchestrationHistory(id);
    const done = history.find((e) => e.type === HistoryEventType.ExecutionCompleted);
    assert.ok(done, "ExecutionCompleted present");
    assert.equal(done.failureDetails?.errorType, "RangeError");
    assert.equal(done.failureDetails?.message, "bad range in orchestrator");
  });
});

describe("admin probes", () => {
  it("restart keeps tags; terminate twice and resume after terminate are harmless", async () => {
    const id = uid("restart-tags");
    const tags = { team: "t1" };
    await client.scheduleNewOrchestration("Double", 3, { instanceId: id, tags });
    assertCompleted(await client.waitForOrchestrationCompletion(id, true, 30));
    await client.restartOrchestration(id, false);
    const st = await client.waitForOrchestrationCompletion(id, true, 30);
    assertCompleted(st);
    assert.equal(st.serializedOutput, json(6));
    assert.deepEqual(st.tags, tags);

    const t = uid("term-twice");
    await client.scheduleNewOrchestration("LongWait", undefined, t);
    await client.waitForOrchestrationStart(t, false, 30);
    await client.terminateOrchestration(t, "first");
    await client.waitForOrchestrationCompletion(t, false, 30);
    await client.terminateOrchestration(t, "second");
    await client.resumeOrchestration(t);
    const after = await client.getOrchestrationState(t, true);
    assert.equal(after.runtimeStatus, S.TERMINATED);
    assert.equal(after.serializedOutput, json("first"));
  });

  it("purge by created-time window without statuses removes terminal instances only", async () => {
    const from = new Date(Date.now() - 500);
    const done = uid("pw-done");
    const running = uid("pw-run");
    assertCompleted(await run("Simple", null, done));
    await client.scheduleNewOrchestration("LongWait", undefined, running);
    await client.waitForOrchestrationStart(running, false, 30);
    const criteria = new PurgeInstanceCriteria();
    criteria.setCreatedTimeFrom(from);
    const r = await client.purgeOrchestration(criteria);
    assert.ok(r.deletedInstanceCount >= 1);
    assert.equal(await client.getOrchestrationState(done), undefined);
    assert.equal((await client.getOrchestrationState(running))?.runtimeStatus, S.RUNNING, "running instance purged");
    await client.terminateOrchestration(running, "cleanup");
    await client.waitForOrchestrationCompletion(running, false, 30);
  });

  it("history of 1000+ events streams completely (several chunks)", async () => {
    const id = uid("bighist");
    const st = await run("FanOutFanIn", 600, id, 90);
    assertCompleted(st);
    const history = await client.getOrchestrationHistory(id);
    const T = HistoryEventType;
    assert.equal(history.filter((e) => e.type === T.TaskScheduled).length, 600);
    assert.equal(history.filter((e) => e.type === T.TaskCompleted).length, 600);
    assert.ok(history.length > 1200, `only ${history.length} events`);
    const scheduledIds = new Set(history.filter((e) => e.type === T.TaskScheduled).map((e) => e.eventId));
    assert.equal(scheduledIds.size, 600);
    for (const e of history.filter((e) => e.type === T.TaskCompleted)) assert.ok(scheduledIds.has(e.taskScheduledId));
  });
});

describe("scale and size", () => {
  it("fan-out/fan-in over 100 activities", async () => {
    const id = uid("fan100");
    const state = await run("FanOutFanIn", 100, id, 60);
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.equal(out.results.length, 100);
    assert.equal(out.sum, (100 * 101 * 201) / 6);
    assert.equal(activityCalls.get(id), 100);
  });

  it("1 MiB activity result and orchestration output", async () => {
    const id = uid("big");
    const n = 1024 * 1024;
    const state = await run("BigPayload", n, id, 60);
    assertCompleted(state);
    const out = JSON.parse(state.serializedOutput);
    assert.equal(out.len, n);
    assert.equal(out.s.length, n);
  });
});

describe("worker health", () => {
  it("the SDK logged no errors while talking to the sidecar", () => {
    const errors = sdkProblems.filter((p) => p.level === "error");
    assert.deepEqual(errors, []);
  });
});
