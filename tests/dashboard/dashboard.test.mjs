// Browser tests of the dashboard: Playwright (playwright-core) drives Chromium against a
// real sidecar (started by run.sh; DASHBOARD_URL, DTS_ADDR) while a real
// @microsoft/durabletask-js worker runs the orchestrations below. Every wait is a
// Playwright auto-waiting locator or a poll with a deadline; no fixed sleeps.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";
import {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  NoOpLogger,
  RetryPolicy,
  EntityInstanceId,
  TaskEntity,
} from "@microsoft/durabletask-js";

const URL = process.env.DASHBOARD_URL;
const ADDR = process.env.DTS_ADDR;
const SHOTS = process.env.SCREENSHOT_DIR;
const API = `${URL}/runtime/webhooks/durabletask`;
const T = 20_000; // deadline of one UI expectation (the page polls every 3 s)

const uid = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

// ---------------------------------------------------------------------------------------------
// What the worker runs: one orchestration that has every kind of history the views draw.

const calls = new Map();
const count = (key) => {
  const n = (calls.get(key) ?? 0) + 1;
  calls.set(key, n);
  return n;
};

// `slow` runs until the test lets it finish: work in progress to look at.
let releaseSlow;
const slowGate = new Promise((resolve) => {
  releaseSlow = resolve;
});

const activities = {
  slow: async () => {
    await slowGate;
    return "done";
  },
  // Fails twice, then succeeds: three attempts, three bars on the timeline.
  flaky: (_ctx, key) => {
    const n = count(`flaky:${key}`);
    if (n < 3) throw new Error(`flaky attempt ${n} failed`);
    return `ok on attempt ${n}`;
  },
  greet: (_ctx, name) => `Hello, ${name}!`,
  // Fails on its first call only: the instance fails, a rewind then completes it.
  failsOnce: (_ctx, key) => {
    if (count(`once:${key}`) === 1) throw new Error("the first call fails");
    return "recovered";
  },
};

const orchestrators = {
  Dash_Child: async function* (ctx, name) {
    return yield ctx.callActivity("greet", name);
  },
  Dash_Workflow: async function* (ctx, key) {
    const retry = new RetryPolicy({ maxNumberOfAttempts: 5, firstRetryIntervalInMilliseconds: 200 });
    const a = yield ctx.callActivity("flaky", key, { retry });
    yield ctx.createTimer(1);
    const c = yield ctx.callSubOrchestrator("Dash_Child", "dashboard", { instanceId: `${ctx.instanceId}-child` });
    ctx.setCustomStatus("waiting for approval");
    const approval = yield ctx.waitForExternalEvent("approve");
    return { a, c, approval };
  },
  Dash_Fails: async function* (ctx, key) {
    return yield ctx.callActivity("failsOnce", key);
  },
  Dash_Slow: async function* (ctx) {
    return yield ctx.callActivity("slow");
  },
  Dash_Wait: async function* (ctx) {
    return yield ctx.waitForExternalEvent("go");
  },
  // Holds the lock of one counter until told to release it.
  Dash_Lock: async function* (ctx, key) {
    const lock = yield ctx.entities.lockEntities(new EntityInstanceId("Counter", key));
    try {
      yield ctx.waitForExternalEvent("release");
    } finally {
      lock.release();
    }
    return "released";
  },
};

class Counter extends TaskEntity {
  add(n) {
    this.state.count += n;
    return this.state.count;
  }
  initializeState() {
    return { count: 0 };
  }
}

// ---------------------------------------------------------------------------------------------

let client;
let worker;
let browser;
let page;
const pageErrors = [];

async function waitUntil(fn, what, timeoutMs = T) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const statusOf = async (id) => (await client.getOrchestrationState(id, true))?.runtimeStatus;
const apiStatus = async (id) => (await fetch(`${API}/instances/${encodeURIComponent(id)}`)).status;

/** The text of a test id becomes exactly `text` (Playwright auto-waits). */
const expectText = (testId, text) =>
  page.getByTestId(testId).filter({ hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: T });
const expectStatus = (status) => expectText("instance-status", status);
const instanceLink = (id) => page.getByRole("link", { name: id, exact: true });

async function openInstance(id) {
  await page.goto(`${URL}/#/instances/${encodeURIComponent(id)}`);
  await page.getByTestId("instance-id").filter({ hasText: id }).waitFor({ timeout: T });
}

/** Clicks a dialog-opening button, then the dialog's confirm button. */
async function confirm(button, confirmLabel) {
  await page.getByRole("button", { name: button }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByRole("button", { name: confirmLabel }).click();
  await dialog.waitFor({ state: "hidden", timeout: T });
}

async function shot(name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

before(async () => {
  assert.ok(URL && ADDR, "run through run.sh (DASHBOARD_URL, DTS_ADDR)");
  client = new TaskHubGrpcClient({ hostAddress: ADDR, logger: new NoOpLogger() });
  worker = new TaskHubGrpcWorker({ hostAddress: ADDR, logger: new NoOpLogger(), shutdownTimeoutMs: 2000 });
  for (const [name, fn] of Object.entries(orchestrators)) worker.addNamedOrchestrator(name, fn);
  for (const [name, fn] of Object.entries(activities)) worker.addNamedActivity(name, fn);
  worker.addNamedEntity("Counter", () => new Counter());
  await worker.start();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: process.env.HEADED !== "1",
    args: ["--no-sandbox"],
  });
  // A laptop-sized window.
  page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => m.type() === "error" && pageErrors.push(`${m.text()} (${m.location().url})`));
});

after(async () => {
  await browser?.close();
  await worker?.stop();
  await client?.stop();
});

// The instances the tests share, started once.
const wf = uid("dash-wf");
const failing = uid("dash-fail");

describe("dashboard", () => {
  it("serves its assets with content types and validators", async () => {
    const index = await fetch(`${URL}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get("content-type"), /^text\/html/);
    const js = await fetch(`${URL}/ui/app.js`);
    assert.match(js.headers.get("content-type"), /^text\/javascript/);
    assert.equal(js.headers.get("cache-control"), "no-cache");
    const again = await fetch(`${URL}/ui/app.js`, { headers: { "if-none-match": js.headers.get("etag") } });
    assert.equal(again.status, 304);
    assert.equal((await fetch(`${URL}/ui/nope.js`)).status, 404);
  });

  it("lists instances with status counts and filters them by status, name and id prefix", async () => {
    await client.scheduleNewOrchestration("Dash_Workflow", "k1", wf);
    await client.scheduleNewOrchestration("Dash_Fails", "k2", failing);
    await waitUntil(async () => (await statusOf(failing)) === 3 /* FAILED */, `${failing} to fail`);
    await waitUntil(
      async () => (await client.getOrchestrationState(wf, true))?.serializedCustomStatus?.includes("approval"),
      `${wf} to wait for approval`,
    );

    await page.goto(`${URL}/`);
    await instanceLink(wf).waitFor({ timeout: T });
    await instanceLink(failing).waitFor({ timeout: T });
    await expectText("count-Failed", "1");

    // Status: tick Failed and apply.
    await page.getByRole("checkbox", { name: "Failed" }).check();
    await page.getByRole("button", { name: "Apply" }).click();
    await instanceLink(wf).waitFor({ state: "detached", timeout: T });
    await instanceLink(failing).waitFor({ timeout: T });
    await expectText("count-total", "1");

    // Name: typed and submitted with Enter (once the cleared filter shows everything again).
    await page.getByRole("link", { name: "Clear" }).click();
    await instanceLink(wf).waitFor({ timeout: T });
    await page.getByLabel("Name").fill("Dash_Workflow");
    await page.getByLabel("Name").press("Enter");
    await instanceLink(failing).waitFor({ state: "detached", timeout: T });
    await instanceLink(wf).waitFor({ timeout: T });

    // Id prefix.
    await page.getByRole("link", { name: "Clear" }).click();
    await instanceLink(failing).waitFor({ timeout: T });
    await page.getByLabel("Id prefix").fill("dash-fail-");
    await page.getByLabel("Id prefix").press("Enter");
    await instanceLink(wf).waitFor({ state: "detached", timeout: T });
    await instanceLink(failing).waitFor({ timeout: T });

    // Created window: from tomorrow matches nothing; up to tomorrow matches them all.
    await page.getByRole("link", { name: "Clear" }).click();
    await instanceLink(wf).waitFor({ timeout: T });
    const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    const tomorrow = local(new Date(Date.now() + 86_400_000));
    await page.getByLabel("Created from").fill(tomorrow);
    await page.getByLabel("Created from").press("Enter");
    await page.getByText("No instance matches.").waitFor({ timeout: T });
    await expectText("count-total", "0");
    await page.getByRole("link", { name: "Clear" }).click();
    await instanceLink(wf).waitFor({ timeout: T });
    await page.getByLabel("to", { exact: true }).fill(tomorrow);
    await page.getByLabel("to", { exact: true }).press("Enter");
    await instanceLink(failing).waitFor({ timeout: T });
    await instanceLink(wf).waitFor({ timeout: T });

    // The list refreshes by itself: a new instance shows up without a reload.
    await page.getByRole("link", { name: "Clear" }).click();
    await instanceLink(wf).waitFor({ timeout: T });
    const late = uid("dash-late");
    await client.scheduleNewOrchestration("Dash_Wait", null, late);
    await instanceLink(late).waitFor({ timeout: T });
    await client.terminateOrchestration(late, "done");
    await shot("instances");
  });

  it("shows an instance's history as a table and a timeline, with retries as separate bars", async () => {
    await openInstance(wf);
    const table = page.getByTestId("history-table");
    await table.getByRole("cell", { name: "TaskFailed", exact: true }).first().waitFor({ timeout: T });
    assert.equal(await table.getByRole("cell", { name: "TaskFailed", exact: true }).count(), 2);
    await table.getByRole("cell", { name: "TimerFired", exact: true }).first().waitFor();
    await table.getByRole("cell", { name: "SubOrchestrationInstanceCompleted", exact: true }).waitFor();
    const timeline = page.getByTestId("timeline");
    await timeline.locator(".vis-item.bar-ok").first().waitFor({ timeout: T });
    // Two failed attempts of `flaky`, then the successful one; plus the child's bar.
    assert.equal(await timeline.locator(".vis-item.bar-failed").count(), 2);
    assert.ok((await timeline.locator(".vis-item.bar-ok").count()) >= 2);
    assert.ok((await timeline.locator(".vis-item.bar-timer").count()) >= 1);
    await page.getByTestId("payload-custom status").filter({ hasText: "waiting for approval" }).waitFor();
    await shot("instance");

    // The child links back to its parent.
    await page.getByRole("link", { name: `${wf}-child` }).first().click();
    await page.getByTestId("instance-id").filter({ hasText: `${wf}-child` }).waitFor({ timeout: T });
    await page.getByRole("link", { name: wf, exact: true }).click();
    await page.getByTestId("instance-id").filter({ hasText: new RegExp(`^${wf}$`) }).waitFor({ timeout: T });
  });

  it("shows work in progress as a dashed bar and a TaskScheduled row, then its completion", async () => {
    const id = uid("dash-slow");
    await client.scheduleNewOrchestration("Dash_Slow", null, id);
    await openInstance(id);
    const table = page.getByTestId("history-table");
    await table.getByRole("row").filter({ hasText: "TaskScheduled" }).filter({ hasText: "in progress" })
      .waitFor({ timeout: T });
    const timeline = page.getByTestId("timeline");
    await timeline.locator(".vis-item.bar-pending").filter({ hasText: "slow" }).waitFor({ timeout: T });
    releaseSlow();
    await expectStatus("Completed");
    await timeline.locator(".vis-item.bar-ok").filter({ hasText: "slow" }).waitFor({ timeout: T });
    assert.equal(await table.getByRole("cell", { name: "TaskScheduled", exact: true }).count(), 0);
  });

  it("raises an event with a payload checked in the page; it completes the waiting instance", async () => {
    await openInstance(wf);
    await page.getByRole("button", { name: "Raise event…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Event name").fill("approve");
    await dialog.getByLabel("Payload").fill('{"by": dashboard}');
    await dialog.getByText("Payload is not valid JSON").first().waitFor();
    await dialog.getByRole("button", { name: "Send event" }).click();
    await dialog.getByRole("alert").filter({ hasText: "not valid JSON" }).waitFor();
    assert.equal(await statusOf(wf), 0 /* RUNNING */);
    await dialog.getByLabel("Payload").fill('{"by": "dashboard"}');
    await dialog.getByRole("button", { name: "Send event" }).click();
    await expectStatus("Completed");
    await page.getByTestId("payload-output").filter({ hasText: '"by": "dashboard"' }).waitFor({ timeout: T });
  });

  it("suspends, resumes and terminates an instance", async () => {
    const id = uid("dash-wait");
    await client.scheduleNewOrchestration("Dash_Wait", null, id);
    await openInstance(id);
    await expectStatus("Running");
    await page.getByRole("button", { name: "Suspend" }).click();
    await expectStatus("Suspended");
    await page.getByRole("button", { name: "Resume" }).click();
    await expectStatus("Running");
    // Keyboard: the button takes focus and Enter opens the dialog; Escape cancels it.
    await page.getByRole("button", { name: "Terminate…" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("dialog").waitFor();
    await page.keyboard.press("Escape");
    await page.getByRole("dialog").waitFor({ state: "hidden" });
    assert.equal(await statusOf(id), 0 /* RUNNING */);
    await confirm("Terminate…", "Terminate");
    await expectStatus("Terminated");
    assert.equal(await statusOf(id), 5 /* TERMINATED */);
  });

  it("shows a failure's details and rewinds the failed instance", async () => {
    await openInstance(failing);
    await expectStatus("Failed");
    await page.locator(".failure").getByText("the first call fails").first().waitFor();
    await page.getByText("Stack trace").first().waitFor();
    // (the stack trace stays folded: it names this machine's paths)
    await shot("failed-instance");
    await confirm("Rewind…", "Rewind");
    await expectStatus("Completed");
    await page.getByTestId("payload-output").filter({ hasText: "recovered" }).waitFor({ timeout: T });
  });

  it("restarts an instance as a new one, then purges it", async () => {
    await openInstance(failing);
    await expectStatus("Completed");
    await confirm("Restart…", "Restart");
    await waitUntil(async () => !page.url().endsWith(encodeURIComponent(failing)), "the page of the new instance");
    const restarted = decodeURIComponent(page.url().split("#/instances/")[1]);
    assert.notEqual(restarted, failing);
    await page.getByTestId("instance-id").filter({ hasText: restarted }).waitFor({ timeout: T });
    await expectStatus("Completed");

    await confirm("Purge…", "Purge");
    await page.getByRole("heading", { name: "Orchestration instances" }).waitFor({ timeout: T });
    assert.equal(await apiStatus(restarted), 404);
    await instanceLink(failing).waitFor({ timeout: T });
    assert.equal(await instanceLink(restarted).count(), 0);
  });

  it("bulk-terminates and bulk-purges the current filter, showing the count first", async () => {
    const prefix = `${uid("bulk")}-`;
    const ids = [1, 2, 3].map((n) => `${prefix}${n}`);
    for (const id of ids) await client.scheduleNewOrchestration("Dash_Wait", null, id);
    // Paging (two a page here): newest first, the third on page 2 and back.
    await page.goto(`${URL}/#/?prefix=${encodeURIComponent(prefix)}&top=2`);
    await instanceLink(ids[2]).waitFor({ timeout: T });
    await instanceLink(ids[1]).waitFor({ timeout: T });
    assert.equal(await instanceLink(ids[0]).count(), 0);
    await page.getByRole("button", { name: "Older →" }).click();
    await instanceLink(ids[0]).waitFor({ timeout: T });
    await page.getByText("Page 2").waitFor();
    assert.equal(await instanceLink(ids[2]).count(), 0);
    assert.ok(await page.getByRole("button", { name: "Older →" }).isDisabled());
    await page.getByRole("button", { name: "← Newer" }).click();
    await instanceLink(ids[2]).waitFor({ timeout: T });

    await page.goto(`${URL}/#/?prefix=${encodeURIComponent(prefix)}`);
    for (const id of ids) await instanceLink(id).waitFor({ timeout: T });

    await page.getByRole("button", { name: "Terminate all matching…" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByTestId("bulk-count").filter({ hasText: /^3 running/ }).waitFor({ timeout: T });
    await dialog.getByRole("button", { name: "Terminate 3" }).click();
    await dialog.waitFor({ state: "hidden", timeout: T });
    await expectText("count-Terminated", "3");
    for (const id of ids) assert.equal(await statusOf(id), 5 /* TERMINATED */);

    await page.getByRole("button", { name: "Purge all matching…" }).click();
    await dialog.getByTestId("bulk-count").filter({ hasText: /^3 completed/ }).waitFor({ timeout: T });
    await dialog.getByRole("button", { name: "Purge 3" }).click();
    await dialog.waitFor({ state: "hidden", timeout: T });
    await expectText("count-total", "0");
    await page.getByText("No instance matches.").waitFor({ timeout: T });
    for (const id of ids) assert.equal(await apiStatus(id), 404);
    // Outside the filter nothing was touched.
    assert.equal(await apiStatus(wf), 200);
  });

  it("lists entities, shows one entity's state and lock owner, and signals an operation", async () => {
    const free = uid("free");
    const held = uid("held");
    await client.signalEntity(new EntityInstanceId("Counter", free), "add", 7);
    await client.signalEntity(new EntityInstanceId("Counter", held), "add", 1);
    await waitUntil(async () => (await client.getEntity(new EntityInstanceId("Counter", held)))?.includesState, "held's state");
    const locker = uid("dash-lock");
    await client.scheduleNewOrchestration("Dash_Lock", held, locker);

    await page.goto(`${URL}/#/entities`);
    await page.getByRole("link", { name: free, exact: true }).waitFor({ timeout: T });
    await page.getByRole("link", { name: held, exact: true }).waitFor({ timeout: T });
    // The lock owner shows in the list once the orchestration holds the lock.
    await page.getByRole("row").filter({ hasText: held }).getByRole("link", { name: locker }).waitFor({ timeout: T });
    await shot("entities");

    // Filter by name and key prefix.
    await page.getByLabel("Entity name").fill("counter");
    await page.getByLabel("Key prefix").fill(free);
    await page.getByLabel("Key prefix").press("Enter");
    await page.getByRole("link", { name: held, exact: true }).waitFor({ state: "detached", timeout: T });
    await page.getByRole("link", { name: free, exact: true }).click();

    await page.getByTestId("entity-state").filter({ hasText: '"count": 7' }).waitFor({ timeout: T });
    await expectText("entity-lock", "not locked");
    await page.getByRole("textbox", { name: "Operation", exact: true }).fill("add");
    await page.getByLabel("Input").fill("5x");
    await page.getByText("Input is not valid JSON").first().waitFor();
    await page.getByLabel("Input").fill("5");
    await page.getByLabel("Input").press("Enter");
    await page.getByTestId("entity-state").filter({ hasText: '"count": 12' }).waitFor({ timeout: T });

    await page.goto(`${URL}/#/entities/counter/${encodeURIComponent(held)}`);
    await page.getByTestId("entity-lock").getByRole("link", { name: locker }).waitFor({ timeout: T });
    await client.raiseOrchestrationEvent(locker, "release", null);
    await expectText("entity-lock", "not locked");
  });

  it("switches task hubs with the selector; each hub lists only its own instances", async () => {
    const other = uid("dash-hub");
    // No worker serves hub `ops`: the instance stays pending there.
    const started = await fetch(`${API}/orchestrators/Dash_Wait/${other}?taskHub=Ops`, { method: "POST" });
    assert.equal(started.status, 202);
    await page.goto(`${URL}/`);
    await instanceLink(wf).waitFor({ timeout: T });
    assert.equal(await instanceLink(other).count(), 0, "the default hub shows another hub's instance");
    await page.getByLabel("Task hub").selectOption("ops");
    await page.waitForURL(/[?&]taskHub=ops/, { timeout: T });
    await instanceLink(other).waitFor({ timeout: T });
    assert.equal(await instanceLink(wf).count(), 0, "hub ops shows the default hub's instance");
    // Actions go to the selected hub: terminate it from its page.
    await instanceLink(other).click();
    await confirm("Terminate…", "Terminate");
    await expectStatus("Terminated");
    await waitUntil(async () => {
      const r = await fetch(`${API}/instances/${other}?taskHub=ops`);
      return r.ok && (await r.json()).runtimeStatus === "Terminated";
    }, `${other} to be terminated in hub ops`);
    await page.getByLabel("Task hub").selectOption("default");
    await page.waitForURL((u) => !u.search.includes("taskHub"), { timeout: T });
    await instanceLink(wf).waitFor({ timeout: T });
  });

  it("raised no script error in the page", () => {
    assert.deepEqual(pageErrors, []);
  });
});
