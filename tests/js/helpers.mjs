// Shared helpers for the JS SDK end-to-end tests.
//
// The sidecar address comes from DTS_ADDR (set by run.sh), e.g. "localhost:4001".
// Set DTS_SDK_LOG=1 to see the SDK's own client/worker logging on stderr.

import { randomUUID } from "node:crypto";
import { TaskHubGrpcClient, TaskHubGrpcWorker, ConsoleLogger, NoOpLogger } from "@microsoft/durabletask-js";
import { sleep, waitUntil, waitForRuntimeStatus } from "./sidecar.mjs";

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

export { sleep, waitUntil };

/** Polls GetInstance until the instance has the wanted runtime status; returns that state. */
export const waitForStatus = (client, id, status, timeoutMs) =>
  waitForRuntimeStatus(() => client.getOrchestrationState(id, true), id, status, timeoutMs);
