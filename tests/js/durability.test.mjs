// Durability / reconnection tests. Unlike the other files, these start their OWN sidecar
// process (from SIDECAR_BIN, exported by run.sh) on a private SQLite file, because they
// kill and restart it.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  NoOpLogger,
  OrchestrationStatus as S,
  VersionMatchStrategy,
  VersionFailureStrategy,
} from "@microsoft/durabletask-js";
import { uid, sleep, waitUntil } from "./helpers.mjs";
import { BIN, startOnFreePorts } from "./sidecar.mjs";

const json = (v) => JSON.stringify(v);

// Activities/orchestrators -----------------------------------------------------------------------

const activityRuns = new Map();
let slowFirstRun = true;

const helloRuns = new Map(); // instance id -> [worker tag, ...]

function registerAll(worker, tag) {
  worker.addNamedOrchestrator("D_Hello", async (ctx, name) => {
    helloRuns.set(ctx.instanceId, (helloRuns.get(ctx.instanceId) ?? []).concat(tag));
    return `Hello, ${name}!`;
  });
  worker.addNamedOrchestrator("D_Timer", async function* (ctx, seconds) {
    const before = ctx.currentUtcDateTime.getTime();
    yield ctx.createTimer(seconds);
    const v = yield ctx.callActivity("D_Record", "after-timer");
    return { waited: ctx.currentUtcDateTime.getTime() - before, v };
  });
  worker.addNamedOrchestrator("D_WaitEvent", async function* (ctx) {
    const e = yield ctx.waitForExternalEvent("go");
    return e;
  });
  worker.addNamedOrchestrator("D_Slow", async function* (ctx) {
    return yield ctx.callActivity("D_SlowActivity", ctx.instanceId);
  });
  worker.addNamedActivity("D_Record", (_ctx, v) => v);
  worker.addNamedActivity("D_SlowActivity", async (_ctx, key) => {
    activityRuns.set(key, (activityRuns.get(key) ?? 0) + 1);
    if (slowFirstRun) {
      slowFirstRun = false;
      await sleep(3000);
      return "first run (should have been abandoned)";
    }
    return "redelivered run";
  });
}

// ------------------------------------------------------------------------------------------------

describe("durability and reconnection (own sidecar)", { skip: !BIN && "SIDECAR_BIN not set" }, () => {
  let dir;
  let sidecar;
  let addr;
  let client;
  const workers = [];

  let workerSeq = 0;
  const newWorker = () => {
    const w = new TaskHubGrpcWorker({ hostAddress: addr, logger: new NoOpLogger(), shutdownTimeoutMs: 200 });
    registerAll(w, `w${++workerSeq}`);
    workers.push(w);
    return w;
  };
  const stopWorker = async (w) => {
    const i = workers.indexOf(w);
    if (i >= 0) workers.splice(i, 1);
    await w.stop();
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "dts-js-durability-"));
    sidecar = await startOnFreePorts(1, ([port]) => ({
      dir,
      port,
      args: ["--http-port", "0", "--db", path.join(dir, "durability.sqlite")],
    }));
    addr = `localhost:${sidecar.port}`;
    client = new TaskHubGrpcClient({ hostAddress: addr, logger: new NoOpLogger() });
  });

  after(async () => {
    for (const w of workers.splice(0)) await w.stop().catch(() => {});
    await client?.stop();
    await sidecar?.kill("SIGTERM");
    if (process.env.KEEP_DB !== "1") rmSync(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  });

  it("work scheduled while no worker is connected is delivered when one connects", async () => {
    const id = uid("noworker");
    await client.scheduleNewOrchestration("D_Hello", "later", id);
    await sleep(500);
    assert.equal((await client.getOrchestrationState(id)).runtimeStatus, S.PENDING);
    const w = newWorker();
    await w.start();
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, S.COMPLETED);
    assert.equal(state.serializedOutput, json("Hello, later!"));
    await stopWorker(w);
  });

  it("an activity abandoned by a stopped worker is redelivered to the next worker", async () => {
    const id = uid("abandon");
    const w1 = newWorker();
    await w1.start();
    await client.scheduleNewOrchestration("D_Slow", undefined, id);
    await waitUntil(() => activityRuns.get(id) === 1, { what: "slow activity to start" });
    // Stop while the activity is still running: its result can no longer be reported.
    await stopWorker(w1);
    const w2 = newWorker();
    await w2.start();
    const state = await client.waitForOrchestrationCompletion(id, true, 30);
    assert.equal(state.runtimeStatus, S.COMPLETED, `failure: ${json(state.failureDetails)}`);
    assert.equal(state.serializedOutput, json("redelivered run"));
    assert.equal(activityRuns.get(id), 2);
    await stopWorker(w2);
  });

  it("state, pending events and durable timers survive a sidecar crash (SIGKILL) and restart", async () => {
    const w = newWorker();
    await w.start();
    const done = uid("done");
    await client.scheduleNewOrchestration("D_Hello", "before-crash", done);
    await client.waitForOrchestrationCompletion(done, false, 30);

    const timer = uid("crashtimer");
    const waiting = uid("crashevent");
    await client.scheduleNewOrchestration("D_Timer", 3, timer);
    await client.scheduleNewOrchestration("D_WaitEvent", undefined, waiting);
    await client.waitForOrchestrationStart(timer, false, 30);
    await client.waitForOrchestrationStart(waiting, false, 30);
    await client.raiseOrchestrationEvent(waiting, "go", "held-across-crash");
    // the event might be processed before the crash or after the restart; both are fine

    await sidecar.kill("SIGKILL");
    await sleep(300);
    await sidecar.start();

    // the same worker and client reconnect by themselves (SDK backoff starts at 1 s)
    const t = await client.waitForOrchestrationCompletion(timer, true, 40);
    assert.equal(t.runtimeStatus, S.COMPLETED, `failure: ${json(t.failureDetails)}`);
    const out = JSON.parse(t.serializedOutput);
    assert.equal(out.v, "after-timer");
    assert.ok(out.waited >= 3000, `timer fired after ${out.waited} ms of orchestration time`);

    const e = await client.waitForOrchestrationCompletion(waiting, true, 30);
    assert.equal(e.runtimeStatus, S.COMPLETED);
    assert.equal(e.serializedOutput, json("held-across-crash"));

    const d = await client.getOrchestrationState(done, true);
    assert.equal(d.runtimeStatus, S.COMPLETED);
    assert.equal(d.serializedOutput, json("Hello, before-crash!"));
    await stopWorker(w);
  });

  it("two workers connected at once: all work completes exactly once", async (t) => {
    const w1 = newWorker();
    const w2 = newWorker();
    await w1.start();
    await w2.start();
    const ids = Array.from({ length: 10 }, () => uid("two"));
    await Promise.all(ids.map((id, i) => client.scheduleNewOrchestration("D_Hello", `w${i}`, id)));
    for (const [i, id] of ids.entries()) {
      const st = await client.waitForOrchestrationCompletion(id, true, 30);
      assert.equal(st.runtimeStatus, S.COMPLETED);
      assert.equal(st.serializedOutput, json(`Hello, w${i}!`));
      assert.equal(helloRuns.get(id)?.length, 1, `${id} executed by ${helloRuns.get(id)}`);
    }
    const perWorker = {};
    for (const id of ids) for (const tag of helloRuns.get(id)) perWorker[tag] = (perWorker[tag] ?? 0) + 1;
    t.diagnostic(`episodes per worker: ${json(perWorker)}`);
    await stopWorker(w1);
    await stopWorker(w2);
  });

  // PROTOCOL.md §4.1: what no connected stream's filters accept stays PENDING until a
  // stream that accepts it connects.
  it("work-item filters: a worker only gets the orchestrations it registered", async () => {
    // "auto" filters list exactly the registered orchestrators/activities.
    const only = new TaskHubGrpcWorker({
      hostAddress: addr,
      logger: new NoOpLogger(),
      shutdownTimeoutMs: 200,
      workItemFilters: "auto",
    });
    only.addNamedOrchestrator("F_Known", async () => "known");
    workers.push(only);
    await only.start();
    const unknown = uid("filtered");
    const known = uid("unfiltered");
    await client.scheduleNewOrchestration("F_Other", null, unknown);
    await client.scheduleNewOrchestration("F_Known", null, known);
    const k = await client.waitForOrchestrationCompletion(known, true, 30);
    assert.equal(k.runtimeStatus, S.COMPLETED);
    assert.equal(k.serializedOutput, json("known"));
    await sleep(500);
    assert.equal((await client.getOrchestrationState(unknown)).runtimeStatus, S.PENDING, "dispatched to a worker that filters it out");

    // a worker that registers it picks it up
    const other = new TaskHubGrpcWorker({ hostAddress: addr, logger: new NoOpLogger(), shutdownTimeoutMs: 200, workItemFilters: "auto" });
    other.addNamedOrchestrator("F_Other", async () => "other");
    workers.push(other);
    await other.start();
    const u = await client.waitForOrchestrationCompletion(unknown, true, 30);
    assert.equal(u.runtimeStatus, S.COMPLETED);
    assert.equal(u.serializedOutput, json("other"));
    await stopWorker(only);
    await stopWorker(other);
  });

  it("versioning: Reject abandons the work item until a matching worker takes it; Fail fails it", async () => {
    const mk = (version, failureStrategy, tag) => {
      const w = new TaskHubGrpcWorker({
        hostAddress: addr,
        logger: new NoOpLogger(),
        shutdownTimeoutMs: 200,
        versioning: { version, matchStrategy: VersionMatchStrategy.Strict, failureStrategy },
      });
      w.addNamedOrchestrator("V_Echo", async (ctx) => `${tag} ran ${ctx.version}`);
      workers.push(w);
      return w;
    };
    const v1 = mk("1.0", VersionFailureStrategy.Reject, "v1");
    await v1.start();
    const id = uid("ver2");
    await client.scheduleNewOrchestration("V_Echo", null, { instanceId: id, version: "2.0" });
    await sleep(1500); // v1 keeps abandoning it
    const pending = await client.getOrchestrationState(id);
    assert.ok([S.PENDING, S.RUNNING].includes(pending.runtimeStatus), `status ${S[pending.runtimeStatus]}`);

    const v2 = mk("2.0", VersionFailureStrategy.Reject, "v2");
    await v2.start();
    const st = await client.waitForOrchestrationCompletion(id, true, 60);
    assert.equal(st.runtimeStatus, S.COMPLETED);
    assert.equal(st.serializedOutput, json("v2 ran 2.0"));
    await stopWorker(v1);
    await stopWorker(v2);

    const strict = mk("1.0", VersionFailureStrategy.Fail, "strict");
    await strict.start();
    const bad = uid("ver-fail");
    await client.scheduleNewOrchestration("V_Echo", null, { instanceId: bad, version: "3.0" });
    const failed = await client.waitForOrchestrationCompletion(bad, true, 30);
    assert.equal(failed.runtimeStatus, S.FAILED);
    assert.equal(failed.failureDetails?.errorType, "VersionMismatch");
    await stopWorker(strict);
  });

  it("the sidecar logged no errors", () => {
    const errors = sidecar
      .log()
      .split("\n")
      .filter((l) => /\bERROR\b/.test(l));
    assert.deepEqual(errors, []);
  });
});
