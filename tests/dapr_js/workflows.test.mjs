// End-to-end tests: Dapr's JavaScript SDK (@dapr/durabletask-js) client and worker against the
// sidecar. A port of tests/dapr/test_workflows.py (Dapr's Python SDK); run through run.sh, which
// starts the sidecar and sets DAPR_JS_ADDR.
//
// This SDK speaks the upstream protocol of its time, not Dapr's fork: its proto has no
// taskExecutionId, no PurgeInstancesRequest.force, no ListInstanceIDs / GetInstanceHistory /
// RerunWorkflowFromEvent, and the SDK has no retry policy and no patching (is_patched). The
// Python tests of those features are listed at the end as skipped, with the reason; where a
// test only partly depends on them, the rest of it is ported.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { OrchestrationStatus as S } from "@dapr/durabletask-js/orchestration/enum/orchestration-status.enum.js";
import { PurgeInstanceCriteria } from "@dapr/durabletask-js/orchestration/orchestration-purge-criteria.js";
import { OrchestrationFailedError } from "@dapr/durabletask-js/orchestration/exception/orchestration-failed-error.js";
import { createClient, startWorker, uid, waitForStatus, waitUntil, sdkProblems } from "./helpers.mjs";
import { activities, orchestrators, flakyAttempts } from "./workflows.mjs";

const WAIT = 30; // seconds, for the SDK's waitFor* calls

let client;
let worker;

before(async () => {
  worker = await startWorker({ orchestrators, activities });
  client = createClient();
});

after(async () => {
  await worker?.stop();
  await client?.stop();
});

async function completed(id) {
  const state = await client.waitForOrchestrationCompletion(id, true, WAIT);
  assert.ok(state, `${id} not found`);
  return state;
}

/** The instance's output, after asserting it completed (else its failure and the SDK's errors). */
function output(state) {
  assert.equal(
    state.runtimeStatus,
    S.COMPLETED,
    `${state.instanceId}: status ${S[state.runtimeStatus]}, failure ${JSON.stringify(state.failureDetails)}; ` +
      `SDK errors: ${sdkProblems.slice(-5).join(" | ")}`,
  );
  return state.serializedOutput === undefined ? undefined : JSON.parse(state.serializedOutput);
}

describe("Dapr JS SDK workflows", () => {
  it("runs an activity sequence; activities see their task ids", async () => {
    const id = await client.scheduleNewOrchestration("sequence", ["a", "b", "c"], uid("sequence"));
    const results = output(await completed(id));
    assert.deepEqual(
      results.map((r) => r.greeting),
      ["Hello a", "Hello b", "Hello c"],
    );
    assert.ok(results.every((r) => r.orchestrationId === id));
    // The ids of the orchestrator's ScheduleTask actions, handed back in each ActivityRequest
    // (the Python test checks the fork's taskExecutionId and GetInstanceHistory instead).
    assert.deepEqual(
      results.map((r) => r.taskId),
      [1, 2, 3],
    );
  });

  it("fans out and in; each activity has its own task id", async () => {
    const id = await client.scheduleNewOrchestration("fanOut", 5, uid("fan-out"));
    const ids = output(await completed(id));
    assert.equal(ids.length, 5);
    assert.equal(new Set(ids).size, 5, `task ids ${ids}`);
  });

  it("retries a failing activity (orchestrator-coded retry; the SDK has no retry policy)", async () => {
    const key = uid("key");
    const id = await client.scheduleNewOrchestration("retrying", key, uid("retrying"));
    const { taskIds, failures } = output(await completed(id));
    assert.deepEqual(failures, [
      { errorType: "Error", message: "attempt 1 fails on purpose" },
      { errorType: "Error", message: "attempt 2 fails on purpose" },
    ]);
    // Each retry is a new ScheduleTask action, so a new task id (with a retry policy the Python
    // SDK keeps one task execution id across attempts).
    assert.equal(taskIds.length, 3);
    assert.equal(new Set(taskIds).size, 3, `task ids ${taskIds}`);
    assert.deepEqual(flakyAttempts.get(key), taskIds);
  });

  it("fails the workflow with the activity's failure when it is not caught", async () => {
    const id = await client.scheduleNewOrchestration("failing", "widgets", uid("failing"));
    const state = await completed(id);
    assert.equal(state.runtimeStatus, S.FAILED, `status ${S[state.runtimeStatus]}`);
    assert.ok(state.failureDetails, "no failure details");
    assert.equal(state.failureDetails.errorType, "TaskFailedError");
    assert.match(state.failureDetails.message, /out of widgets/);
    assert.throws(() => state.raiseIfFailed(), OrchestrationFailedError);
  });

  it("fails an instance of a workflow or activity the worker does not have", async () => {
    // This SDK sends no work-item filters, so it takes every work item and fails what it lacks.
    const id = await client.scheduleNewOrchestration("notRegistered", 1, uid("no-workflow"));
    const state = await completed(id);
    assert.equal(state.runtimeStatus, S.FAILED, `status ${S[state.runtimeStatus]}`);
    assert.equal(state.failureDetails?.errorType, "OrchestratorNotRegisteredError");
    assert.match(state.failureDetails.message, /notRegistered/);

    const act = await client.scheduleNewOrchestration("callsMissingActivity", undefined, uid("no-activity"));
    const actState = await completed(act);
    assert.equal(actState.runtimeStatus, S.FAILED, `status ${S[actState.runtimeStatus]}`);
    assert.match(actState.failureDetails?.message ?? "", /missingActivity/);
  });

  it("runs a sub-orchestration with the instance id the parent chose", async () => {
    const id = await client.scheduleNewOrchestration("parent", "kid", uid("parent"));
    const results = output(await completed(id));
    assert.deepEqual(
      results.map((r) => r.greeting),
      ["Hello kid"],
    );
    const child = await client.getOrchestrationState(`${id}-child`);
    assert.ok(child, "child instance not found");
    assert.equal(child.name, "sequence");
    assert.equal(child.runtimeStatus, S.COMPLETED);
    assert.equal(results[0].orchestrationId, `${id}-child`);
  });

  it("surfaces a failed sub-orchestration to the parent as a catchable task failure", async () => {
    const id = await client.scheduleNewOrchestration("parentOfFailure", "gadgets", uid("parent-of-failure"));
    const caught = output(await completed(id));
    assert.equal(caught.caught, true);
    assert.match(caught.message, /out of gadgets/);
    assert.equal((await client.getOrchestrationState(`${id}-child`))?.runtimeStatus, S.FAILED);
  });

  it("fans out to 200 activities", async () => {
    const id = await client.scheduleNewOrchestration("fanOut", 200, uid("fan-out-200"));
    const ids = output(await completed(id));
    assert.equal(new Set(ids).size, 200);
  });

  it("starts a scheduled instance no earlier than its start time", async () => {
    // Every other start of this SDK sends the Unix epoch as the scheduled start time.
    const startAt = new Date(Date.now() + 1500);
    const id = await client.scheduleNewOrchestration("startedAt", undefined, uid("scheduled"), startAt);
    const { startedAt } = output(await completed(id));
    assert.ok(new Date(startedAt) >= startAt, `started at ${startedAt}, scheduled for ${startAt.toISOString()}`);
  });

  it("delivers an external event", async () => {
    const id = await client.scheduleNewOrchestration("approval", undefined, uid("approval"));
    await client.waitForOrchestrationStart(id, false, WAIT);
    await client.raiseOrchestrationEvent(id, "approval", true);
    assert.deepEqual(output(await completed(id)), { approved: true });
  });

  it("buffers events while suspended and runs on when resumed", async () => {
    const id = await client.scheduleNewOrchestration("approval", undefined, uid("suspend"));
    await client.waitForOrchestrationStart(id, false, WAIT);
    await client.suspendOrchestration(id);
    await waitForStatus(client, id, S.SUSPENDED);
    await client.raiseOrchestrationEvent(id, "approval", "later");
    // Still suspended after the event arrived (whether the sidecar already handed it to the
    // worker is not observable through this SDK, which has no history API; completing with the
    // event's data after the resume shows it was kept).
    await waitForStatus(client, id, S.SUSPENDED);
    await client.resumeOrchestration(id);
    assert.deepEqual(output(await completed(id)), { approved: "later" });
  });

  it("fires a durable timer no earlier than asked", async () => {
    const started = Date.now();
    const id = await client.scheduleNewOrchestration("nap", 1, uid("nap"));
    const slept = output(await completed(id));
    assert.ok(slept >= 1, `orchestration time advanced ${slept} s`);
    assert.ok(Date.now() - started >= 1000);
  });

  it("terminates with an output", async () => {
    const id = await client.scheduleNewOrchestration("waitForever", undefined, uid("terminate"));
    await client.waitForOrchestrationStart(id, false, WAIT);
    await client.terminateOrchestration(id, "stopped");
    const state = await completed(id);
    assert.equal(state.runtimeStatus, S.TERMINATED);
    assert.equal(JSON.parse(state.serializedOutput), "stopped");
  });

  it("purges an instance by id once it has finished, not while it runs", async () => {
    const id = await client.scheduleNewOrchestration("approval", undefined, uid("purge"));
    await client.waitForOrchestrationStart(id, false, WAIT);
    assert.equal((await client.purgeOrchestration(id)).deletedInstanceCount, 0);
    assert.equal((await client.getOrchestrationState(id))?.runtimeStatus, S.RUNNING);
    await client.raiseOrchestrationEvent(id, "approval", "purge me");
    output(await completed(id));
    const res = await client.purgeOrchestration(id);
    assert.equal(res.deletedInstanceCount, 1);
    assert.equal(await client.getOrchestrationState(id), undefined);
    assert.equal((await client.purgeOrchestration(id)).deletedInstanceCount, 0);
  });

  it("purges by criteria: status and creation time, sparing other instances", async () => {
    const from = new Date();
    const done = await client.scheduleNewOrchestration("sequence", ["q"], uid("purge-done"));
    output(await completed(done));
    const live = await client.scheduleNewOrchestration("waitForever", undefined, uid("purge-live"));
    await client.waitForOrchestrationStart(live, false, WAIT);

    const criteria = new PurgeInstanceCriteria();
    criteria.setCreatedTimeFrom(from);
    criteria.setRuntimeStatusList([S.COMPLETED, S.RUNNING]);
    criteria.setTimeout(WAIT * 1000); // milliseconds here, unlike the waitFor* seconds
    const res = await client.purgeOrchestration(criteria);
    // Only terminal instances are purged: the running one stays.
    assert.equal(res.deletedInstanceCount, 1);
    assert.equal(await client.getOrchestrationState(done), undefined);
    assert.equal((await client.getOrchestrationState(live))?.runtimeStatus, S.RUNNING);

    await client.terminateOrchestration(live);
    await completed(live);
  });

  it("continues as new until the count is reached", async () => {
    const id = await client.scheduleNewOrchestration("counter", 1, uid("counter"));
    const state = await completed(id);
    assert.deepEqual(output(state), { finalCount: 3 });
    assert.equal(JSON.parse(state.serializedInput), 3);
  });

  it("shows the custom status the workflow sets", async () => {
    const id = await client.scheduleNewOrchestration("withStatus", undefined, uid("status"));
    // setCustomStatus takes a string, which the SDK sends as is (not JSON-encoded).
    await waitUntilCustomStatus(id, "waiting for go");
    await client.raiseOrchestrationEvent(id, "go", { now: true });
    const state = await completed(id);
    assert.deepEqual(output(state), { go: { now: true } });
    assert.equal(state.serializedCustomStatus, "done");
  });

  it("races an event against a timer (whenAny)", async () => {
    const answered = await client.scheduleNewOrchestration("deadline", 60, uid("deadline-event"));
    await client.waitForOrchestrationStart(answered, false, WAIT);
    await client.raiseOrchestrationEvent(answered, "answer", 42);
    assert.deepEqual(output(await completed(answered)), { answer: 42 });

    const silent = await client.scheduleNewOrchestration("deadline", 0.2, uid("deadline-timer"));
    assert.deepEqual(output(await completed(silent)), { timedOut: true });
  });

  it("left the worker without errors other than the failures caused on purpose", () => {
    // The SDK console.errors each failed activity and the failure it fails a workflow with.
    const unexpected = sdkProblems.filter((p) => !/fails on purpose|out of (widgets|gadgets)|notRegistered|missingActivity/.test(p));
    assert.deepEqual(unexpected, []);
  });

  // The Python suite's tests of Dapr-fork features this SDK cannot express (see the top).
  const noFork = "@dapr/durabletask-js 1.0.0 speaks the upstream protocol without this fork feature";
  it("purge with force refuses live instances (PurgeInstancesRequest.force)", { skip: noFork }, () => {});
  it("ListInstanceIDs pages through every status", { skip: noFork }, () => {});
  it("RerunWorkflowFromEvent is unimplemented", { skip: noFork }, () => {});
  it("task execution ids survive retries (TaskScheduledEvent.taskExecutionId)", { skip: noFork }, () => {});
  it("patching fails the workflow with a reason (is_patched)", { skip: "the SDK has no patching API" }, () => {});
});

async function waitUntilCustomStatus(id, wanted) {
  await waitUntil(async () => (await client.getOrchestrationState(id))?.serializedCustomStatus === wanted, {
    what: `custom status ${JSON.stringify(wanted)} on ${id}`,
  });
}

