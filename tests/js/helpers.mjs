// Shared helpers for the JS SDK end-to-end tests.
//
// The sidecar address comes from DTS_ADDR (set by run.sh), e.g. "localhost:4001".
// Set DTS_SDK_LOG=1 to see the SDK's own client/worker logging on stderr.

import { randomUUID } from "node:crypto";
import { TaskHubGrpcClient, TaskHubGrpcWorker, ConsoleLogger, NoOpLogger } from "@microsoft/durabletask-js";

export const ADDR = process.env.DTS_ADDR ?? "localhost:4001";

/** SDK warnings/errors are collected here so tests can assert the worker stayed healthy. */
export const sdkProblems = [];

class CollectingLogger extends NoOpLogger {
  error(message, ...args) {
    sdkProblems.push({ level: "error", message: String(message), args });
  }
  warn(message, ...args) {
    sdkProblems.push({ level: "warn", message: String(message), args });
  }
}

function makeLogger() {
  return process.env.DTS_SDK_LOG === "1" ? new ConsoleLogger() : new CollectingLogger();
}

export function createClient() {
  return new TaskHubGrpcClient({ hostAddress: ADDR, logger: makeLogger() });
}

export function createWorker() {
  return new TaskHubGrpcWorker({ hostAddress: ADDR, logger: makeLogger(), shutdownTimeoutMs: 2000 });
}

/** A unique instance id for one test: `<prefix>-<random>`. */
export function uid(prefix) {
  return `${prefix}-${randomUUID().slice(0, 12)}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` until it returns a truthy value (returned) or `timeoutMs` elapses
 * (then throws, naming `what` and the last value seen).
 */
export async function waitUntil(fn, { timeoutMs = 10_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    }
    await sleep(intervalMs);
  }
}

/** Polls GetInstance until the instance has the wanted runtime status; returns that state. */
export async function waitForStatus(client, id, status, timeoutMs = 10_000) {
  let seen;
  try {
    return await waitUntil(
      async () => {
        const st = await client.getOrchestrationState(id, true);
        seen = st?.runtimeStatus;
        return st && st.runtimeStatus === status ? st : undefined;
      },
      { timeoutMs, what: `instance ${id} to reach status ${status}` },
    );
  } catch (e) {
    e.message += ` (last status seen: ${seen})`;
    throw e;
  }
}
