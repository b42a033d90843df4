// The dashboard against a sidecar with --auth-tokens-file: the page loads without a token,
// its first API call gets a 401 and it asks for one; an unknown token is asked for again, a
// `read` token shows the list. Starts its OWN sidecar (SIDECAR_BIN, exported by run.sh).

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
// Node built-ins only, so it resolves from here without tests/js/node_modules.
import { BIN, startOnFreePorts } from "../js/sidecar.mjs";

const T = 20_000;
const READ = "dash-read-token-0123456789";
const CLIENT = "dash-client-token-0123456789";

describe("dashboard with bearer tokens (own sidecar)", { skip: !BIN && "SIDECAR_BIN not set" }, () => {
  let dir, sidecar, base, browser, page;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "dts-dash-auth-"));
    const tokens = path.join(dir, "tokens.txt");
    writeFileSync(tokens, `read ${READ}\nclient ${CLIENT}\n`);
    sidecar = await startOnFreePorts(
      2,
      ([port, httpPort]) => ({
        dir,
        port,
        args: ["--http-port", String(httpPort), "--db", path.join(dir, "db.sqlite"), "--auth-tokens-file", tokens],
        readyPort: httpPort,
      }),
      { timeoutMs: T },
    );
    base = `http://127.0.0.1:${sidecar.readyPort}`;
    browser = await chromium.launch({ executablePath: process.env.CHROMIUM, headless: true, args: ["--no-sandbox"] });
    page = await browser.newPage();
  });

  after(async () => {
    await browser?.close();
    await sidecar?.kill("SIGTERM");
    if (process.exitCode) console.error(sidecar?.log());
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
