// Durable entity end-to-end tests (@microsoft/durabletask-js client + worker).
//
// The API usage follows the SDK's own DTS e2e suite (test/e2e-azuremanaged/entity.spec.ts).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { EntityInstanceId, TaskEntity, OrchestrationStatus as S } from "@microsoft/durabletask-js";
import { createClient, createWorker, uid, sleep, waitUntil, sdkProblems } from "./helpers.mjs";

const json = (v) => JSON.stringify(v);

// ---------------------------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------------------------

class Counter extends TaskEntity {
  add(amount) {
    this.state.count += amount;
    return this.state.count;
  }
  get() {
    return this.state.count;
  }
  set(value) {
    this.state.count = value;
  }
  failIfNegative(amount) {
    if (amount < 0) throw new Error(`negative amount ${amount} refused`);
    this.state.count += amount;
    return this.state.count;
  }
  initializeState() {
    return { count: 0 };
  }
}

// `hold` runs until the test calls openGate(): an entity step kept in flight.
let gateHeld = false;
let openGate;
const gate = new Promise((resolve) => {
  openGate = resolve;
});

class Gated extends TaskEntity {
  async hold() {
    gateHeld = true;
    await gate;
    this.state.count += 1;
  }
  set(value) {
    this.state.count = value;
  }
  initializeState() {
    return { count: 0 };
  }
}

class Coordinator extends TaskEntity {
  signalCounter(args) {
    this.context.signalEntity(new EntityInstanceId("Counter", args.key), "add", args.amount);
    this.state.sent += 1;
  }
  startGreeting(args) {
    return this.context.scheduleNewOrchestration("E_Greet", args.name, { instanceId: args.instanceId });
  }
  initializeState() {
    return { sent: 0 };
  }
}

/** A low-level entity (ITaskEntity) that stores its input verbatim, falsy values included. */
const rawStore = () => ({
  run(op) {
    switch (op.name.toLowerCase()) {
      case "put":
        op.state.setState(op.getInput());
        return null;
      case "get":
        return op.state.getState();
      default:
        throw new Error(`unknown operation ${op.name}`);
    }
  },
});

// ---------------------------------------------------------------------------------------------
// Orchestrators
// ---------------------------------------------------------------------------------------------

const orchestrators = {
  E_Greet: async (_ctx, name) => `Hello, ${name}!`,

  E_CallAndSignal: async function* (ctx, key) {
    const id = new EntityInstanceId("Counter", key);
    const r1 = yield ctx.entities.callEntity(id, "add", 5);
    const r2 = yield ctx.entities.callEntity(id, "add", 10);
    ctx.entities.signalEntity(id, "add", 100); // fire-and-forget
    // calls to the same entity are processed after the earlier signal (FIFO per entity)
    const r3 = yield ctx.entities.callEntity(id, "get");
    return { r1, r2, r3 };
  },

  E_CallFailing: async function* (ctx, key) {
    const id = new EntityInstanceId("Counter", key);
    try {
      yield ctx.entities.callEntity(id, "failIfNegative", -1);
      return { caught: false };
    } catch (e) {
      const after = yield ctx.entities.callEntity(id, "failIfNegative", 2);
      return { caught: true, name: e.name, message: e.message, after };
    }
  },

  E_Locked: async function* (ctx, input) {
    const a = new EntityInstanceId("Counter", input.a);
    const b = new EntityInstanceId("Counter", input.b);
    const before = ctx.entities.isInCriticalSection().inSection;
    const lock = yield ctx.entities.lockEntities(a, b);
    let inside;
    try {
      const info = ctx.entities.isInCriticalSection();
      inside = { inSection: info.inSection, locked: (info.lockedEntities ?? []).map((e) => e.toString()).sort() };
      // transfer 30 from a to b inside the critical section
      const va = yield ctx.entities.callEntity(a, "add", -30);
      const vb = yield ctx.entities.callEntity(b, "add", 30);
      // hold the lock for a while so the test can observe lockedBy
      if (input.holdMs) yield ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + input.holdMs));
      inside.va = va;
      inside.vb = vb;
    } finally {
      lock.release();
    }
    const afterRelease = ctx.entities.isInCriticalSection().inSection;
    return { before, inside, afterRelease };
  },

  E_LockSignalRelease: async function* (ctx, key) {
    const id = new EntityInstanceId("Gated", key);
    const lock = yield ctx.entities.lockEntities(id);
    // A call left unawaited (the SDK refuses to signal a locked entity from the section),
    // sent in this episode; the release comes in a later one, while the call still runs.
    ctx.entities.callEntity(id, "hold");
    yield ctx.waitForExternalEvent("go");
    lock.release();
    return "done";
  },

  E_LockedIncrement: async function* (ctx, key) {
    // read-modify-write that is only correct under the lock
    const id = new EntityInstanceId("Counter", key);
    const lock = yield ctx.entities.lockEntities(id);
    try {
      const v = yield ctx.entities.callEntity(id, "get");
      yield ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + 200));
      yield ctx.entities.callEntity(id, "set", v + 1);
    } finally {
      lock.release();
    }
    return "ok";
  },
};

// ---------------------------------------------------------------------------------------------

let client;
let worker;

before(async () => {
  client = createClient();
  worker = createWorker();
  worker.addNamedEntity("Counter", () => new Counter());
  worker.addNamedEntity("Coordinator", () => new Coordinator());
  worker.addNamedEntity("Gated", () => new Gated());
  worker.addNamedEntity("RawStore", rawStore);
  for (const [name, fn] of Object.entries(orchestrators)) worker.addNamedOrchestrator(name, fn);
  await worker.start();
});

after(async () => {
  await worker?.stop();
  await client?.stop();
});

/**
 * The entity's state, or undefined when the metadata carries none.
 * SDK quirk (0.4.0): EntityMetadata.state is a getter that THROWS when includesState is false
 * (e.g. an entity record without state), so `m?.state?.x` is not safe.
 */
const stateOf = (m) => (m?.includesState ? m.state : undefined);

/** Polls GetEntity until `pred(metadata)` holds; returns the metadata. */
async function waitForEntity(id, pred, what, timeoutMs = 15_000) {
  return waitUntil(
    async () => {
      const m = await client.getEntity(id);
      return m && pred(m) ? m : undefined;
    },
    { timeoutMs, what: `entity ${id}: ${what}` },
  );
}

async function runOrch(name, input, timeoutSec = 60) {
  const id = uid(name.toLowerCase());
  await client.scheduleNewOrchestration(name, input, id);
  const state = await client.waitForOrchestrationCompletion(id, true, timeoutSec);
  assert.ok(state, `no state for ${id}`);
  assert.equal(
    state.runtimeStatus,
    S.COMPLETED,
    `expected COMPLETED, got ${S[state.runtimeStatus]}: ${json(state.failureDetails)}`,
  );
  return { id, state, output: state.serializedOutput === undefined ? undefined : JSON.parse(state.serializedOutput) };
}

// ---------------------------------------------------------------------------------------------

describe("entities: client signal and get", () => {
  it("signalEntity updates state; getEntity returns it (with and without state)", async () => {
    const id = new EntityInstanceId("Counter", uid("c"));
    await client.signalEntity(id, "add", 10);
    await client.signalEntity(id, "add", 5);
    await client.signalEntity(id, "add", -3);
    const m = await waitForEntity(id, (m) => stateOf(m)?.count === 12, "count 12");
    assert.equal(m.id.toString(), id.toString());
    assert.equal(m.id.name, "counter"); // the SDK lower-cases entity names
    assert.equal(m.includesState, true);
    assert.ok(m.lastModifiedTime instanceof Date);
    assert.equal(m.lockedBy, undefined);

    const noState = await client.getEntity(id, false);
    assert.ok(noState);
    assert.equal(noState.includesState, false);
    assert.throws(() => noState.state, /includesState is false/); // SDK behaviour, see stateOf()
  });

  it("getEntity of an unknown entity is undefined", async () => {
    assert.equal(await client.getEntity(new EntityInstanceId("Counter", uid("none"))), undefined);
  });

  it("a failing operation leaves the state unchanged and later operations still run", async () => {
    const id = new EntityInstanceId("Counter", uid("fail"));
    await client.signalEntity(id, "failIfNegative", 7);
    await client.signalEntity(id, "failIfNegative", -1);
    await client.signalEntity(id, "failIfNegative", 1);
    const m = await waitForEntity(id, (m) => stateOf(m)?.count === 8, "count 8");
    assert.equal(stateOf(m).count, 8);
  });

  it("falsy state (0) is persisted", async () => {
    const id = new EntityInstanceId("RawStore", uid("zero"));
    await client.signalEntity(id, "put", 0);
    const m = await waitForEntity(id, (m) => m.includesState && stateOf(m) === 0, "state 0");
    assert.equal(stateOf(m), 0);
  });

  it("a scheduled signal is not delivered before its signalTime", async () => {
    const id = new EntityInstanceId("Counter", uid("sched"));
    const at = new Date(Date.now() + 3000);
    await client.signalEntity(id, "add", 100, { signalTime: at });
    await sleep(1500);
    assert.equal(stateOf(await client.getEntity(id))?.count ?? 0, 0, "delivered early");
    await waitForEntity(id, (m) => stateOf(m)?.count === 100, "count 100");
    assert.ok(Date.now() >= at.getTime());
  });

  it("entity signals another entity and starts an orchestration", async () => {
    const coord = new EntityInstanceId("Coordinator", uid("coord"));
    const target = uid("target");
    await client.signalEntity(coord, "signalCounter", { key: target, amount: 42 });
    await waitForEntity(new EntityInstanceId("Counter", target), (m) => stateOf(m)?.count === 42, "count 42");

    const orchId = uid("fromentity");
    await client.signalEntity(coord, "startGreeting", { name: "entity", instanceId: orchId });
    const st = await waitUntil(() => client.getOrchestrationState(orchId), { timeoutMs: 15_000, what: orchId });
    const done = await client.waitForOrchestrationCompletion(st.instanceId, true, 30);
    assert.equal(done.runtimeStatus, S.COMPLETED);
    assert.equal(done.serializedOutput, json("Hello, entity!"));
  });
});

describe("entities: orchestrations", () => {
  it("orchestration calls an entity (responses) and signals it", async () => {
    const key = uid("oc");
    const { output } = await runOrch("E_CallAndSignal", key);
    assert.deepEqual(output, { r1: 5, r2: 15, r3: 115 });
    const m = await client.getEntity(new EntityInstanceId("Counter", key));
    assert.equal(stateOf(m)?.count, 115);
  });

  it("a failed entity call surfaces as a catchable error in the orchestration", async () => {
    const key = uid("ocfail");
    const { output } = await runOrch("E_CallFailing", key);
    assert.equal(output.caught, true);
    assert.match(output.message, /negative amount -1 refused/);
    assert.equal(output.after, 2);
  });
});

describe("entities: locks / critical sections", () => {
  it("lockEntities: critical section over two entities, lockedBy visible while held", async () => {
    const a = uid("la");
    const b = uid("lb");
    await client.signalEntity(new EntityInstanceId("Counter", a), "set", 100);
    await waitForEntity(new EntityInstanceId("Counter", a), (m) => stateOf(m)?.count === 100, "count 100");

    const id = uid("locked");
    await client.scheduleNewOrchestration("E_Locked", { a, b, holdMs: 3000 }, id);
    const held = await waitForEntity(new EntityInstanceId("Counter", b), (m) => stateOf(m)?.count === 30, "b = 30");
    assert.equal(held.lockedBy, id, "lockedBy names the orchestration holding the lock");
    assert.equal((await client.getEntity(new EntityInstanceId("Counter", a))).lockedBy, id);

    const state = await client.waitForOrchestrationCompletion(id, true, 60);
    assert.equal(state.runtimeStatus, S.COMPLETED, json(state.failureDetails));
    const out = JSON.parse(state.serializedOutput);
    assert.equal(out.before, false);
    assert.equal(out.inside.inSection, true);
    assert.deepEqual(out.inside.locked, [`@counter@${a}`, `@counter@${b}`].sort());
    assert.equal(out.inside.va, 70);
    assert.equal(out.inside.vb, 30);
    assert.equal(out.afterRelease, false);

    await waitForEntity(new EntityInstanceId("Counter", a), (m) => m.lockedBy === undefined, "lock released");
    assert.equal((await client.getEntity(new EntityInstanceId("Counter", b))).lockedBy, undefined);
  });

  it("locks serialize concurrent read-modify-write orchestrations", async () => {
    const key = uid("serial");
    const ids = [uid("inc"), uid("inc"), uid("inc")];
    await Promise.all(ids.map((id) => client.scheduleNewOrchestration("E_LockedIncrement", key, id)));
    for (const id of ids) {
      const st = await client.waitForOrchestrationCompletion(id, true, 60);
      assert.equal(st.runtimeStatus, S.COMPLETED, json(st.failureDetails));
    }
    const m = await client.getEntity(new EntityInstanceId("Counter", key));
    assert.equal(stateOf(m)?.count, 3, "lost update: the lock did not serialize the orchestrations");
    // the unlock is a message the entity processes after the orchestration completed
    await waitForEntity(new EntityInstanceId("Counter", key), (m) => m.lockedBy === undefined, "lock released");
  });
});

describe("entities: query and clean", () => {
  it("getEntities: prefix filter, includeState, paging", async () => {
    const prefix = uid("q");
    const ids = [1, 2, 3, 4, 5].map((i) => new EntityInstanceId("Counter", `${prefix}-${i}`));
    for (const [i, id] of ids.entries()) await client.signalEntity(id, "add", (i + 1) * 10);
    // an entity of another type with the same key prefix must not match `@counter@prefix`
    await client.signalEntity(new EntityInstanceId("RawStore", `${prefix}-x`), "put", "other");
    for (const id of ids) await waitForEntity(id, (m) => stateOf(m)?.count > 0, "created");

    const all = [];
    for await (const m of client.getEntities({ instanceIdStartsWith: `@Counter@${prefix}`, includeState: true })) all.push(m);
    assert.deepEqual(all.map((m) => m.id.toString()).sort(), ids.map((i) => i.toString()).sort());
    assert.deepEqual(all.map((m) => stateOf(m)?.count).sort((a, b) => a - b), [10, 20, 30, 40, 50]);

    const noState = [];
    for await (const m of client.getEntities({ instanceIdStartsWith: `@Counter@${prefix}`, includeState: false }))
      noState.push(m);
    assert.equal(noState.length, 5);
    assert.ok(noState.every((m) => m.includesState === false));

    const pages = [];
    for await (const page of client
      .getEntities({ instanceIdStartsWith: `@Counter@${prefix}`, includeState: true, pageSize: 2 })
      .asPages()) {
      assert.ok(page.values.length <= 2, `page of ${page.values.length} > 2`);
      pages.push(page.values.map((m) => m.id.toString()));
      if (pages.length > 10) break;
    }
    assert.ok(pages.length >= 3, `expected >= 3 pages of <= 2, got ${json(pages)}`);
    assert.deepEqual(pages.flat().sort(), ids.map((i) => i.toString()).sort());

    // a name-only prefix matches all entities of that type
    const byName = [];
    for await (const m of client.getEntities({ instanceIdStartsWith: "RawStore", includeState: false })) byName.push(m);
    assert.ok(byName.some((m) => m.id.key === `${prefix}-x`));
    assert.ok(byName.every((m) => m.id.name === "rawstore"));
  });

  it("deleting an entity and cleanEntityStorage", async () => {
    const prefix = uid("clean");
    const gone = new EntityInstanceId("Counter", `${prefix}-gone`);
    const kept = new EntityInstanceId("Counter", `${prefix}-kept`);
    await client.signalEntity(gone, "add", 1);
    await client.signalEntity(kept, "add", 2);
    await waitForEntity(gone, (m) => stateOf(m)?.count === 1, "gone = 1");
    await waitForEntity(kept, (m) => stateOf(m)?.count === 2, "kept = 2");

    await client.signalEntity(gone, "delete"); // implicit TaskEntity operation: clears the state
    // After deletion the entity either no longer exists (PROTOCOL.md §8.2: exists = state, lock
    // or backlog) or exists without state (PYMEM keeps the record until cleanEntityStorage).
    await waitUntil(
      async () => {
        const m = await client.getEntity(gone);
        return m === undefined || !m.includesState;
      },
      { timeoutMs: 15_000, what: "entity deleted" },
    );

    const result = await client.cleanEntityStorage({ removeEmptyEntities: true, releaseOrphanedLocks: true }, true);
    assert.equal(typeof result.emptyEntitiesRemoved, "number");
    assert.equal(typeof result.orphanedLocksReleased, "number");
    assert.ok(result.emptyEntitiesRemoved >= 0 && result.orphanedLocksReleased >= 0);

    const defaults = await client.cleanEntityStorage();
    assert.equal(typeof defaults.emptyEntitiesRemoved, "number");

    assert.equal(await client.getEntity(gone), undefined, "empty entity gone after cleanEntityStorage");
    assert.equal(stateOf(await client.getEntity(kept))?.count, 2, "non-empty entity kept");
    const listed = [];
    for await (const m of client.getEntities({ instanceIdStartsWith: `@Counter@${prefix}` })) listed.push(m.id.key);
    assert.deepEqual(listed, [`${prefix}-kept`]);
  });
});

describe("entities: what clients see (issue 13 §5)", () => {
  it("an entity with only a delayed signal does not exist yet; listed only as transient", async () => {
    const id = new EntityInstanceId("Counter", uid("later"));
    await client.signalEntity(id, "add", 1, { signalTime: new Date(Date.now() + 3_600_000) });
    // Reading `.state` of an "exists without state" answer throws in this SDK: it must be absent.
    assert.equal(await client.getEntity(id), undefined);
    const listed = async (includeTransient) => {
      const found = [];
      for await (const m of client.getEntities({ instanceIdStartsWith: id.toString(), includeTransient })) {
        found.push(m.id.toString());
      }
      return found;
    };
    assert.deepEqual(await listed(false), []);
    assert.deepEqual(await listed(true), [id.toString()]);
  });

  it("a finished lock owner's release is visible as soon as its completion is", async () => {
    // The owner calls `hold`; once `hold` runs, the test lets the owner release the lock
    // and complete. `hold` runs until the test opens the gate, so the entity's unlock
    // message waits behind it: the entity cannot apply the release before the read below.
    const key = uid("gated");
    const id = new EntityInstanceId("Gated", key);
    await client.signalEntity(id, "set", 5);
    await waitForEntity(id, (m) => stateOf(m)?.count === 5, "count 5");
    const orch = uid("owner");
    await client.scheduleNewOrchestration("E_LockSignalRelease", key, orch);
    try {
      await waitUntil(() => gateHeld, { timeoutMs: 15_000, what: "hold to start" });
      await client.raiseOrchestrationEvent(orch, "go", null);
      const done = await client.waitForOrchestrationCompletion(orch, true, 30);
      assert.equal(done.runtimeStatus, S.COMPLETED, json(done.failureDetails));
      // No poll: the very next read must not name the finished owner.
      const m = await client.getEntity(id);
      assert.equal(m.lockedBy, undefined, "the completed orchestration still shows as the lock owner");
      assert.equal(stateOf(m)?.count, 5, "hold finished early");
    } finally {
      openGate();
    }
    await waitForEntity(id, (m) => stateOf(m)?.count === 6, "hold to finish");
  });
});

describe("entities: worker health", () => {
  it("the SDK logged no errors", () => {
    assert.deepEqual(
      sdkProblems.filter((p) => p.level === "error"),
      [],
    );
  });
});
