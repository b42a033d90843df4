// Two task hubs at once on the shared sidecar (run.sh's), through clients and workers that
// send the `taskhub` metadata on every call, as the Durable Task Scheduler builders of
// @microsoft/durabletask-js-azuremanaged do (that package is not on the npm registry, so its
// wire behaviour is reproduced with the core SDK's `metadataGenerator`: `taskhub`, an
// `x-user-agent`, and a `workerid` for workers). The same orchestration, activity and entity
// names are registered in both hubs with different behaviour, so every result shows which
// hub's worker ran it; instance ids are reused across the hubs on purpose.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import * as grpc from "@grpc/grpc-js";
import {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  TaskEntity,
  EntityInstanceId,
  NoOpLogger,
  OrchestrationStatus as S,
} from "@microsoft/durabletask-js";
import { ADDR, uid, waitUntil } from "./helpers.mjs";

const HUBS = ["orders", "billing"];

/** The metadata the scheduler builders attach to every call of a client or worker. */
const hubMetadata = (hub, workerId) => async () => {
  const m = new grpc.Metadata();
  m.set("taskhub", hub);
  m.set("x-user-agent", "durabletask-js-sidecar-tests");
  if (workerId) m.set("workerid", workerId);
  return m;
};

const hubClient = (hub) =>
  new TaskHubGrpcClient({ hostAddress: ADDR, metadataGenerator: hubMetadata(hub), logger: new NoOpLogger() });

/** Orchestrator, activity and entity of one hub: each stamps its results with the hub. */
function hubWorker(hub) {
  const w = new TaskHubGrpcWorker({
    hostAddress: ADDR,
    metadataGenerator: hubMetadata(hub, `${hostname()}:${process.pid}:${randomUUID()}`),
    logger: new NoOpLogger(),
    shutdownTimeoutMs: 2000,
  });
  const step = hub === "orders" ? 1 : 100;
  class Counter extends TaskEntity {
    add(n) {
      this.state.count += n * step;
    }
    initializeState() {
      return { count: 0 };
    }
  }
  w.addNamedActivity("Stamp", async (_ctx, name) => `${hub}:${name}`);
  w.addNamedOrchestrator("Greet", async function* (ctx, name) {
    const stamped = yield ctx.callActivity("Stamp", name);
    return `hello ${stamped}`;
  });
  w.addNamedEntity("Counter", () => new Counter());
  if (hub === "orders") {
    // Registered in one hub only: an instance of it in the other hub must not run here.
    w.addNamedOrchestrator("OrdersOnly", async function* () {
      return "ran in orders";
    });
  }
  return w;
}

async function completed(client, id) {
  const st = await client.waitForOrchestrationCompletion(id, true, 30);
  assert.ok(st, `instance ${id} not found`);
  return st;
}

async function collect(iterable) {
  const out = [];
  for await (const x of iterable) out.push(x);
  return out;
}

const stateOf = (m) => (m?.includesState ? m.state : undefined);

describe("two task hubs (taskhub metadata on every call)", () => {
  const clients = {};
  const workers = [];

  before(async () => {
    for (const hub of HUBS) {
      const w = hubWorker(hub);
      await w.start();
      workers.push(w);
      clients[hub] = hubClient(hub);
    }
  });

  after(async () => {
    for (const w of workers) await w.stop();
    for (const c of Object.values(clients)) await c.stop();
  });

  it("the same instance id runs on each hub's own worker", async () => {
    const id = uid("order");
    for (const hub of HUBS) assert.equal(await clients[hub].scheduleNewOrchestration("Greet", hub.toUpperCase(), id), id);
    for (const hub of HUBS) {
      const st = await completed(clients[hub], id);
      assert.equal(st.runtimeStatus, S.COMPLETED, JSON.stringify(st.failureDetails));
      assert.equal(st.serializedInput, JSON.stringify(hub.toUpperCase()));
      assert.equal(st.serializedOutput, JSON.stringify(`hello ${hub}:${hub.toUpperCase()}`));
    }
  });

  it("a worker never receives the other hub's work", async () => {
    const id = uid("only");
    await clients.orders.scheduleNewOrchestration("OrdersOnly", undefined, id);
    const done = await completed(clients.orders, id);
    assert.equal(done.serializedOutput, JSON.stringify("ran in orders"));
    // Only billing's worker, which lacks the name, gets billing's work item: it fails it.
    await clients.billing.scheduleNewOrchestration("OrdersOnly", undefined, id);
    const failed = await completed(clients.billing, id);
    assert.equal(failed.runtimeStatus, S.FAILED);
    assert.match(failed.failureDetails?.message ?? "", /OrdersOnly/);
  });

  it("entities are per hub", async () => {
    const key = uid("acct");
    const eid = new EntityInstanceId("Counter", key);
    for (const hub of HUBS) {
      await clients[hub].signalEntity(eid, "add", 3);
      await clients[hub].signalEntity(eid, "add", 4);
    }
    for (const [hub, want] of [["orders", 7], ["billing", 700]]) {
      await waitUntil(async () => stateOf(await clients[hub].getEntity(eid))?.count === want, {
        timeoutMs: 15_000,
        what: `${hub} counter at ${want}`,
      });
    }
    const only = new EntityInstanceId("Counter", uid("billing-only"));
    await clients.billing.signalEntity(only, "add", 1);
    await waitUntil(async () => (await clients.billing.getEntity(only)) !== undefined, { what: "billing-only entity" });
    assert.equal(await clients.orders.getEntity(only), undefined);
    const keys = {};
    for (const hub of HUBS) {
      keys[hub] = (await collect(clients[hub].getEntities({ includeState: false }))).map(
        (m) => m.id.key,
      );
    }
    assert.ok(keys.orders.includes(key) && keys.billing.includes(key), JSON.stringify(keys));
    assert.ok(keys.billing.includes(only.key) && !keys.orders.includes(only.key), JSON.stringify(keys));
  });

  it("queries and purge see one hub; hub names are case-insensitive", async () => {
    const prefix = uid("q");
    const shared = `${prefix}-shared`;
    const solo = `${prefix}-orders-solo`;
    for (const hub of HUBS) await clients[hub].scheduleNewOrchestration("Greet", "q", shared);
    await clients.orders.scheduleNewOrchestration("Greet", "q", solo);
    for (const hub of HUBS) assert.equal((await completed(clients[hub], shared)).runtimeStatus, S.COMPLETED);
    assert.equal((await completed(clients.orders, solo)).runtimeStatus, S.COMPLETED);

    const ids = {};
    for (const hub of HUBS) {
      ids[hub] = (await collect(clients[hub].getAllInstances({ instanceIdPrefix: prefix }))).map((s) => s.instanceId).sort();
    }
    assert.deepEqual(ids.orders, [shared, solo].sort());
    assert.deepEqual(ids.billing, [shared]);
    const listed = await clients.billing.listInstanceIds({ pageSize: 1000 });
    assert.ok(!listed.values.includes(solo), "ListInstanceIds of billing shows an orders instance");

    const upper = hubClient("ORDERS");
    try {
      assert.equal((await upper.getOrchestrationState(solo))?.runtimeStatus, S.COMPLETED);
    } finally {
      await upper.stop();
    }

    const purged = await clients.orders.purgeOrchestration(shared);
    assert.equal(purged?.deletedInstanceCount, 1);
    assert.equal(await clients.orders.getOrchestrationState(shared), undefined);
    const kept = await clients.billing.getOrchestrationState(shared, true);
    assert.equal(kept?.serializedOutput, JSON.stringify("hello billing:q"));
  });

  it("a client without the metadata uses the default hub, which holds none of it", async () => {
    const id = uid("default-check");
    await clients.orders.scheduleNewOrchestration("Greet", "d", id);
    await completed(clients.orders, id);
    const plain = new TaskHubGrpcClient({ hostAddress: ADDR, logger: new NoOpLogger() });
    try {
      assert.equal(await plain.getOrchestrationState(id), undefined);
    } finally {
      await plain.stop();
    }
  });
});
