// Workflows and activities of the Dapr JavaScript SDK end-to-end tests: the set of
// tests/dapr/workflows.py (Dapr's Python SDK), ported to @dapr/durabletask-js. One worker
// registers them all by these names.
//
// Orchestrators are async generators that yield SDK tasks. The SDK's quirks that shape them:
// * an orchestrator must be an *async* generator: a plain generator object is taken for the
//   return value of an orchestrator that schedules nothing (it completes with output "{}").
// * callActivity / callSubOrchestrator / continueAsNew drop falsy inputs (0, "", false) and
//   activities/orchestrators drop falsy outputs, so every value here is truthy.
// * createTimer(seconds) counts from the wall clock, not from currentUtcDateTime, so the
//   timer below passes a Date computed from currentUtcDateTime (deterministic on replay).

import { whenAll, whenAny } from "@dapr/durabletask-js/task/index.js";

/** Task ids each attempt of `flaky` saw, per key. */
export const flakyAttempts = new Map();

export const activities = {
  // The Python version also returns the fork's task execution id; this SDK's ActivityContext
  // has only orchestrationId and taskId (its protocol has no taskExecutionId).
  greet: (ctx, name) => ({ greeting: `Hello ${name}`, orchestrationId: ctx.orchestrationId, taskId: ctx.taskId }),

  /** Fails on its first two attempts for a key; then returns the task ids of all attempts. */
  flaky: (ctx, key) => {
    const seen = (flakyAttempts.get(key) ?? []).concat(ctx.taskId);
    flakyAttempts.set(key, seen);
    if (seen.length < 3) throw new Error(`attempt ${seen.length} fails on purpose`);
    return seen;
  },

  alwaysFails: (_ctx, what) => {
    class InventoryError extends Error {}
    throw new InventoryError(`out of ${what}`);
  },
};

export const orchestrators = {
  async *sequence(ctx, names) {
    const results = [];
    for (const name of names) results.push(yield ctx.callActivity("greet", name));
    return results;
  },

  async *fanOut(ctx, count) {
    const results = yield whenAll(Array.from({ length: count }, (_, i) => ctx.callActivity("greet", `${i}`)));
    return results.map((r) => r.taskId);
  },

  async *approval(ctx) {
    const decision = yield ctx.waitForExternalEvent("approval");
    return { approved: decision };
  },

  async *nap(ctx, seconds) {
    const started = ctx.currentUtcDateTime;
    yield ctx.createTimer(new Date(started.getTime() + seconds * 1000));
    return (ctx.currentUtcDateTime.getTime() - started.getTime()) / 1000;
  },

  async *waitForever(ctx) {
    yield ctx.waitForExternalEvent("never");
  },

  async *parent(ctx, name) {
    return yield ctx.callSubOrchestrator("sequence", [name], `${ctx.instanceId}-child`);
  },

  // This SDK has no retry policy (the Python test passes RetryPolicy to call_activity), so the
  // retry loop is the orchestrator's own: catch the task failure, wait on a durable timer, retry.
  async *retrying(ctx, key) {
    const failures = [];
    for (let attempt = 1; attempt <= 5; attempt++) {
      try {
        const taskIds = yield ctx.callActivity("flaky", key);
        return { taskIds, failures };
      } catch (e) {
        failures.push({ errorType: e.details?.errorType, message: e.details?.message });
        yield ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + 100));
      }
    }
    throw new Error("flaky never succeeded");
  },

  /** Catches a failed sub-orchestration and returns what the SDK tells about it. */
  async *parentOfFailure(ctx, what) {
    try {
      yield ctx.callSubOrchestrator("failing", what, `${ctx.instanceId}-child`);
      return { caught: false };
    } catch (e) {
      return { caught: true, errorType: e.details?.errorType, message: e.details?.message };
    }
  },

  async *callsMissingActivity(ctx) {
    return yield ctx.callActivity("missingActivity", "x");
  },

  async *startedAt(ctx) {
    return { startedAt: ctx.currentUtcDateTime.toISOString() };
  },

  async *failing(ctx, what) {
    yield ctx.callActivity("alwaysFails", what);
    return "unreachable";
  },

  async *counter(ctx, n) {
    if (n < 3) {
      ctx.continueAsNew(n + 1, false);
      return;
    }
    return { finalCount: n };
  },

  async *withStatus(ctx) {
    ctx.setCustomStatus("waiting for go");
    const go = yield ctx.waitForExternalEvent("go");
    ctx.setCustomStatus("done");
    return { go };
  },

  async *deadline(ctx, seconds) {
    const event = ctx.waitForExternalEvent("answer");
    const timer = ctx.createTimer(new Date(ctx.currentUtcDateTime.getTime() + seconds * 1000));
    const winner = yield whenAny([event, timer]);
    return winner === event ? { answer: event.getResult() } : { timedOut: true };
  },
};
