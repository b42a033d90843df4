// The dashboard against a sidecar with --auth-tokens-file: the page loads without a token,
// its first API call gets a 401 and it asks for one; an unknown token is asked for again, a
// `read` token shows the list. Starts its OWN sidecar (SIDECAR_BIN, exported by run.sh).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.SIDECAR_BIN;
const T = 20_000;
const READ = "dash-read-token-0123456789";
const CLIENT = "dash-client-token-0123456789";

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const c = connect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

async function waitUntil(fn, what) {
  const deadline = Date.now() + T;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("dashboard with bearer tokens (own sidecar)", { skip: !BIN && "SIDECAR_BIN not set" }, () => {
  let dir, proc, logFile, base, browser, page;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "dts-dash-auth-"));
    const tokens = path.join(dir, "tokens.txt");
    writeFileSync(tokens, `read ${READ}\nclient ${CLIENT}\n`);
    const [port, httpPort] = [await freePort(), await freePort()];
    base = `http://127.0.0.1:${httpPort}`;
    logFile = path.join(dir, "sidecar.log");
    const log = openSync(logFile, "a");
    proc = spawn(BIN, ["--port", String(port), "--http-port", String(httpPort), "--db", path.join(dir, "db.sqlite"),
      "--auth-tokens-file", tokens, "--log-level", "warn"], { stdio: ["ignore", log, log] });
    await waitUntil(async () => proc.exitCode === null && (await portOpen(httpPort)), "sidecar to listen");
    browser = await chromium.launch({ executablePath: process.env.CHROMIUM, headless: true, args: ["--no-sandbox"] });
    page = await browser.newPage();
  });

  after(async () => {
    await browser?.close();
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
    }
    if (process.exitCode) console.error(readFileSync(logFile, "utf8"));
    rmSync(dir, { recursive: true, force: true });
  });

  it("asks for a token on a 401 and lists instances with a read token", async () => {
    const id = `dash-auth-${Date.now()}`;
    const started = await fetch(`${base}/runtime/webhooks/durabletask/orchestrators/Nobody/${id}`, {
      method: "POST",
      headers: { authorization: `Bearer ${CLIENT}` },
    });
    assert.equal(started.status, 202);

    await page.goto(`${base}/`);
    const dialog = page.getByRole("dialog", { name: "Access token" });
    await dialog.waitFor({ timeout: T });
    assert.match(await dialog.textContent(), /missing bearer token/);

    await dialog.getByLabel(/Bearer token/).fill("not-a-known-token-0000");
    await dialog.getByRole("button", { name: "Use token" }).click();
    await page.getByText("the bearer token is not known").waitFor({ timeout: T });

    await dialog.getByLabel(/Bearer token/).fill(READ);
    await dialog.getByRole("button", { name: "Use token" }).click();
    await page.getByRole("link", { name: id, exact: true }).waitFor({ timeout: T });
    assert.equal(await dialog.isVisible(), false);
    // Kept for the tab only.
    assert.equal(await page.evaluate(() => sessionStorage.getItem("durabletask-sidecar.token")), READ);
  });
});
