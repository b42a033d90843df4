// Shared helpers of the Dapr JavaScript SDK (@dapr/durabletask-js) end-to-end tests.
//
// The sidecar address comes from DAPR_JS_ADDR (set by run.sh), e.g. "localhost:4001".
// The SDK logs every work item with console.log/info and has no logger option, so its console
// output is swallowed unless DTS_SDK_LOG=1; console.error/warn lines are kept in `sdkProblems`
// so a test can show them when it fails.

import { randomUUID } from "node:crypto";
import { TaskHubGrpcClient, TaskHubGrpcWorker } from "@dapr/durabletask-js";
// Node built-ins only, so it resolves from here without tests/js/node_modules.
import { waitUntil, waitForRuntimeStatus } from "../js/sidecar.mjs";

export const ADDR = process.env.DAPR_JS_ADDR ?? "localhost:4001";

export const sdkProblems = [];

if (process.env.DTS_SDK_LOG !== "1") {
  const keep = (level) => (...args) => sdkProblems.push(`${level}: ${args.map(String).join(" ")}`);
  console.log = () => {};
  console.info = () => {};
  console.debug = () => {};
  console.warn = keep("warn");
  console.error = keep("error");
}

export const createClient = () => new TaskHubGrpcClient(ADDR);

/** A started worker with every orchestrator and activity of `registry` registered by name. */
export async function startWorker({ orchestrators, activities }) {
  const worker = new TaskHubGrpcWorker(ADDR);
  for (const [name, fn] of Object.entries(orchestrators)) worker.addNamedOrchestrator(name, fn);
  for (const [name, fn] of Object.entries(activities)) worker.addNamedActivity(name, fn);
  await worker.start();
  return worker;
}

/** A unique, readable instance id: `<prefix>-<12 hex>`. */
export const uid = (prefix) => `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 12)}`;

export { waitUntil };

/** Polls GetInstance until the instance has `status`; returns that state. */
export const waitForStatus = (client, id, status, timeoutMs) =>
  waitForRuntimeStatus(() => client.getOrchestrationState(id), id, status, timeoutMs);
