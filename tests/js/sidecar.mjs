// What the JavaScript suites (tests/js, tests/dapr_js, tests/dashboard) share: polling, and a
// sidecar process of a test file's own (SIDECAR_BIN, exported by run.sh) for tests that need
// flags the suite's shared sidecar lacks or that kill and restart it.
//
// Node built-ins only: the other suites import this file across directories, and a package
// import would resolve against tests/js/node_modules, which their run.sh does not install.

import { spawn } from "node:child_process";
import { openSync, readFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import path from "node:path";

export const BIN = process.env.SIDECAR_BIN;

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

/**
 * Polls `getState()` (an SDK's GetInstance) until the instance has the wanted runtime status;
 * returns that state.
 */
export async function waitForRuntimeStatus(getState, id, status, timeoutMs = 10_000) {
  let seen;
  try {
    return await waitUntil(
      async () => {
        const state = await getState();
        seen = state?.runtimeStatus;
        return state?.runtimeStatus === status ? state : undefined;
      },
      { timeoutMs, what: `instance ${id} to reach status ${status}` },
    );
  } catch (e) {
    e.message += ` (last status seen: ${seen})`;
    throw e;
  }
}

/** `count` distinct TCP ports free on 127.0.0.1 when asked: all held at once, then released. */
export async function freePorts(count) {
  const servers = [];
  try {
    for (let i = 0; i < count; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, "127.0.0.1", resolve);
      });
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
export function portOpen(port) {
  return new Promise((resolve) => {
    const c = connect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

/**
 * The sidecar binary on gRPC `port` with the flags `args` (besides --port and --log-level),
 * its output appended to `dir`/sidecar.log. It is up once `readyPort` (by default the gRPC
 * port) accepts connections; `start` may be called again after `kill`, on the same ports.
 */
export class Sidecar {
  constructor({ dir, port, args = [], readyPort = port }) {
    this.logFile = path.join(dir, "sidecar.log");
    this.port = port;
    this.args = args;
    this.readyPort = readyPort;
    this.proc = undefined;
  }

  /**
   * Spawns the binary and waits until `readyPort` accepts connections. Throws at once, with
   * the exit status and the end of the log, if the process exits first (a SidecarExited).
   */
  async start({ timeoutMs = 10_000 } = {}) {
    const log = openSync(this.logFile, "a");
    const proc = spawn(BIN, ["--port", String(this.port), ...this.args, "--log-level", "warn"], {
      stdio: ["ignore", log, log],
    });
    this.proc = proc;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    try {
      await waitUntil(
        async () => {
          if (proc.exitCode !== null || proc.signalCode !== null) {
            throw new SidecarExited(proc, this.log());
          }
          return await portOpen(this.readyPort);
        },
        { timeoutMs, what: "sidecar to listen" },
      );
    } catch (e) {
      if (!(e instanceof SidecarExited)) {
        proc.kill("SIGKILL");
        await exited;
        e.message += `\n== sidecar log (end)\n${tail(this.log())}`;
      }
      throw e;
    }
  }

  /** Sends `signal` and waits for the exit; nothing if it is not running. */
  async kill(signal = "SIGKILL") {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill(signal);
    await exited;
  }

  /** The log so far ("" if there is none yet). */
  log() {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }
}

/** The sidecar process ended before it listened; the message ends with its log. */
export class SidecarExited extends Error {
  constructor(proc, log) {
    const status = proc.signalCode ?? `exit code ${proc.exitCode}`;
    super(`the sidecar exited before it listened (${status})\n== sidecar log (end)\n${tail(log)}`);
  }
}

function tail(text, lines = 40) {
  return text.split("\n").slice(-lines).join("\n");
}

/**
 * A started sidecar on `count` free ports picked here; `options(ports)` gives its Sidecar
 * options. A picked port can be taken by another process before the sidecar binds it, so a
 * sidecar that exits before it listens is started again on new ports (three tries in all,
 * as tests/lib/sidecar.sh does).
 */
export async function startOnFreePorts(count, options, { timeoutMs } = {}) {
  for (let attempt = 1; ; attempt++) {
    const sidecar = new Sidecar(options(await freePorts(count)));
    try {
      await sidecar.start({ timeoutMs });
      return sidecar;
    } catch (e) {
      if (!(e instanceof SidecarExited) || attempt === 3) throw e;
      console.error(`sidecar did not come up (attempt ${attempt}): ${e.message}`);
    }
  }
}
