// End-to-end tests of the web UI: a real `ratekeeper serve` on port 0 and
// Debian's Chromium, headless, driven by playwright-core. Every step waits
// for what the page shows, never for a fixed time. Screenshots land in
// target/ui-screenshots/.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

const ROOT = path.resolve(import.meta.dirname, "..");
const BINARY = process.env.RATEKEEPER_BIN ?? path.join(ROOT, "target", "debug", "ratekeeper");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOTS = path.join(ROOT, "target", "ui-screenshots");

/** Servers still running: a test that fails before it stops its server
 *  must not leave the run waiting on it (see `after`). */
const running = new Set();

/** A `ratekeeper serve` with a fresh store directory. */
async function startServer(...args) {
  const dir = mkdtempSync(path.join(tmpdir(), "ratekeeper-ui-"));
  const child = spawn(BINARY, ["serve", "--addr", "127.0.0.1:0", "--data-dir", dir, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  running.add(child);
  child.on("exit", () => running.delete(child));
  const url = await new Promise((resolve, reject) => {
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const found = output.match(/http:\/\/[0-9.]+:[0-9]+/);
      if (found) resolve(found[0]);
    });
    child.on("exit", (code) => reject(new Error(`ratekeeper serve exited with ${code}`)));
  });
  return {
    url,
    async stop() {
      const exited = new Promise((resolve) => child.on("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One API call from outside the page, as another client would make it. */
async function call(server, method, route, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(server.url + route, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function createLimit(server, name, slots, decay = 0) {
  const { status, body } = await call(server, "POST", "/v1/limits", {
    name,
    slots,
    slot_decay_per_second: decay,
  });
  assert.equal(status, 201, JSON.stringify(body));
}

async function acquire(server, name, holder) {
  const { status, body } = await call(server, "POST", "/v1/acquire", { names: [name], holder });
  assert.equal(status, 200, JSON.stringify(body));
  return body.lease_id;
}

let browser;

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Without these, Chromium reaches for Google's services, which this
    // closed network refuses.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  for (const child of running) child.kill("SIGKILL");
});

/** A new page that fails the test on any script error or console error
 *  (a Content-Security-Policy violation is one). */
async function open(url, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("console", (message) => {
    // Chromium logs every refused request (a 401 for a missing token, a
    // 422 for a bad field) itself; the tests check what the page does
    // about them.
    const refused = /the server responded with a status of 4\d\d/.test(message.text());
    if (message.type() === "error" && !refused) problems.push(message.text());
  });
  await page.goto(url);
  return {
    page,
    async close() {
      await context.close();
      assert.deepEqual(problems, [], "the page reported errors");
    },
  };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Waits until `check()` resolves truthy (checked every 20 ms, 10 s at most). */
async function until(check, what) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("a limit is created, edited, toggled, reset and deleted through the page", async () => {
  const server = await startServer();
  const { page, close } = await open(server.url);
  try {
    await page.getByText("No limits yet").waitFor();

    // Create, first with a name the server refuses: its message appears
    // beside the field, and nothing is created.
    // Every field's problem at once, in words, beside the field.
    await page.getByRole("button", { name: "New limit" }).click();
    const create = page.getByRole("dialog", { name: "New limit" });
    await create.getByLabel("Name").fill("vendor api");
    await create.getByLabel("Slots", { exact: true }).fill("-3");
    await create.getByRole("button", { name: "Create" }).click();
    const nameError = page.locator("#f-name-error");
    await nameError.waitFor({ state: "visible" });
    assert.match(await nameError.textContent(), /letters, digits and \. _ - : only, not “ ”/);
    assert.match(await page.locator("#f-slots-error").textContent(), /Slots are a whole number, 0 or more, not “-3”/);
    assert.equal(await create.getByLabel("Name").getAttribute("aria-invalid"), "true");
    assert.equal(await create.getByLabel("Slots", { exact: true }).getAttribute("aria-invalid"), "true");
    await shot(page, "create-refused");
    assert.deepEqual((await call(server, "GET", "/v1/limits")).body, []);
    await create.getByLabel("Slots", { exact: true }).fill("3");

    await create.getByLabel("Name").fill("vendor-api");
    await create.getByLabel("Description").fill("calls to the vendor");
    await create.getByRole("button", { name: "Create" }).click();
    // The new row may arrive over the event stream before the form closes.
    await page.getByRole("link", { name: "vendor-api" }).waitFor();
    await create.waitFor({ state: "hidden" });
    let limit = (await call(server, "GET", "/v1/limits/vendor-api")).body;
    assert.equal(limit.slots, 3);
    assert.equal(limit.description, "calls to the vendor");

    // Edit: a slot count that is not a number is refused by the server,
    // beside the field; then a good one is saved and shown.
    await page.getByRole("button", { name: "Edit vendor-api" }).click();
    const edit = page.getByRole("dialog", { name: "Edit vendor-api" });
    assert.equal(await edit.getByLabel("Name").isDisabled(), true);
    await edit.getByLabel("Slots", { exact: true }).fill("lots");
    await edit.getByRole("button", { name: "Save" }).click();
    const slotsError = page.locator("#f-slots-error");
    await slotsError.waitFor({ state: "visible" });
    assert.match(await slotsError.textContent(), /Slots are a whole number, 0 or more, not “lots”/);
    assert.equal((await call(server, "GET", "/v1/limits/vendor-api")).body.slots, 3);
    await edit.getByLabel("Slots", { exact: true }).fill("5");
    await edit.getByRole("button", { name: "Save" }).click();
    const slotsCell = page.locator('tr[data-name="vendor-api"] td[data-label="Slots"]');
    await until(async () => (await slotsCell.textContent()) === "5", "the row shows 5 slots");
    assert.equal((await call(server, "GET", "/v1/limits/vendor-api")).body.slots, 5);

    // Toggle: inactive, then active again.
    const toggle = page.getByRole("switch", { name: "Active: vendor-api" });
    assert.equal(await toggle.isChecked(), true);
    await toggle.click();
    await page.getByRole("dialog", { name: "Deactivate vendor-api?" }).getByRole("button", { name: "Deactivate" }).click();
    await until(async () => !(await call(server, "GET", "/v1/limits/vendor-api")).body.active, "the limit is inactive");
    await until(async () => !(await toggle.isChecked()), "the switch shows inactive");
    await toggle.click();
    await until(async () => (await call(server, "GET", "/v1/limits/vendor-api")).body.active, "the limit is active");

    // Reset, confirmed: a lease held elsewhere is revoked.
    const lease = await acquire(server, "vendor-api", "elsewhere");
    const heldCell = page.locator('tr[data-name="vendor-api"] .usage-text');
    await until(async () => (await heldCell.textContent()).startsWith("1/5"), "the row shows 1 held");
    await page.getByRole("button", { name: "Reset vendor-api" }).click();
    const confirmReset = page.getByRole("dialog", { name: "Reset vendor-api?" });
    await confirmReset.waitFor();
    await shot(page, "reset-confirmation");
    await confirmReset.getByRole("button", { name: "Reset" }).click();
    await until(async () => (await heldCell.textContent()).startsWith("0/5"), "the row shows 0 held");
    const renewed = await call(server, "POST", `/v1/leases/${lease}/renew`, {});
    assert.equal(renewed.body.error.code, "lease_revoked");

    // Delete: cancelling keeps it; confirming removes it.
    await page.getByRole("button", { name: "Delete vendor-api" }).click();
    await page.getByRole("dialog", { name: "Delete vendor-api?" }).getByRole("button", { name: "Cancel" }).click();
    assert.equal((await call(server, "GET", "/v1/limits/vendor-api")).status, 200);
    await page.getByRole("button", { name: "Delete vendor-api" }).click();
    await page.getByRole("dialog", { name: "Delete vendor-api?" }).getByRole("button", { name: "Delete" }).click();
    await page.getByText("No limits yet").waitFor();
    assert.equal((await call(server, "GET", "/v1/limits/vendor-api")).status, 404);
  } finally {
    await close();
    await server.stop();
  }
});

test("the list filters by name and follows changes made elsewhere", async () => {
  const server = await startServer();
  await createLimit(server, "db-primary", 4);
  await createLimit(server, "db-replica", 8);
  const { page, close } = await open(server.url);
  try {
    await page.getByRole("link", { name: "db-replica" }).waitFor();
    await createLimit(server, "vendor-api", 3); // another client, after the page loaded
    await page.getByRole("link", { name: "vendor-api" }).waitFor();
    await page.getByLabel("Filter limits by name").fill("db-");
    await page.getByRole("link", { name: "vendor-api" }).waitFor({ state: "detached" });
    assert.equal(await page.locator("tbody tr[data-name]").count(), 2);
    await call(server, "DELETE", "/v1/limits/db-primary");
    await page.getByRole("link", { name: "db-primary" }).waitFor({ state: "detached" });
    await page.getByLabel("Filter limits by name").fill("nothing-like-this");
    await page.getByText("No limit matches").waitFor();
  } finally {
    await close();
    await server.stop();
  }
});

test("the limit page shows holders, the queue and charts live as clients acquire and release", async () => {
  const server = await startServer();
  await createLimit(server, "jobs", 2);
  const { page, close } = await open(`${server.url}/#/limits/jobs`);
  try {
    await page.getByRole("heading", { name: "jobs", level: 1 }).waitFor();
    await page.getByText("Nobody holds a slot.").waitFor();

    const first = await acquire(server, "jobs", "worker-1");
    await acquire(server, "jobs", "worker-2");
    const leases = page.getByRole("region", { name: /Leases/ });
    await leases.getByRole("cell", { name: "worker-1" }).waitFor();
    await leases.getByRole("cell", { name: "worker-2" }).waitFor();

    // A third client waits: it appears in the queue, first in line.
    const third = call(server, "POST", "/v1/acquire", { names: ["jobs"], holder: "worker-3", timeout_seconds: 30 });
    const queue = page.getByRole("region", { name: /Waiting queue/ });
    await queue.getByRole("cell", { name: "worker-3" }).waitFor();
    const row = queue.locator("tbody tr").first();
    assert.equal(await row.locator('td[data-label="Position"]').textContent(), "1");
    await page.getByRole("img", { name: /Occupancy .* now 2 of 2 slots/ }).waitFor();
    await shot(page, "limit-page-busy");

    // worker-1 releases: worker-3 is granted, the queue empties.
    await call(server, "DELETE", `/v1/leases/${first}`);
    assert.equal((await third).status, 200);
    await leases.getByRole("cell", { name: "worker-3" }).waitFor();
    await leases.getByRole("cell", { name: "worker-1" }).waitFor({ state: "detached" });
    await page.getByText("Nobody is waiting.").waitFor();
    await page.getByRole("heading", { name: "Waiting queue (0)" }).waitFor();
    const granted = page.locator(".stat", { hasText: "Granted" }).locator("dd");
    await until(async () => (await granted.textContent()) === "3", "3 grants are counted");
  } finally {
    await close();
    await server.stop();
  }
});

test("a rate limit's page shows the admitted rate against the configured one", async () => {
  const server = await startServer();
  await createLimit(server, "api-rate", 1, 20);
  const { page, close } = await open(`${server.url}/#/limits/api-rate`);
  try {
    await page.getByRole("heading", { name: "api-rate", level: 1 }).waitFor();
    // Another client takes its turns, at least three seconds and until the
    // page shows the rate (a slow machine may sample late).
    let running = true;
    const started = Date.now();
    const load = (async () => {
      while (running || Date.now() - started < 3000) {
        const { status } = await call(server, "POST", "/v1/acquire", { names: ["api-rate"], mode: "rate_limit" });
        assert.equal(status, 200);
      }
    })();
    const admitted = page.locator(".stat", { hasText: "Admitted rate" }).locator("dd");
    const text = await until(async () => {
      const shown = await admitted.textContent();
      return Date.now() - started >= 3000 && /^[0-9.]+\/s of 20\/s$/.test(shown) && parseFloat(shown) >= 10
        ? shown
        : null;
    }, "the admitted rate is shown");
    running = false;
    await load;
    assert.ok(parseFloat(text) <= 25, text);
    await page.getByRole("img", { name: /Grants per second/ }).waitFor();
    await shot(page, "rate-limit-page");
  } finally {
    await close();
    await server.stop();
  }
});

test("a server that needs a token gets one from the user, kept for the tab", async () => {
  const server = await startServer("--admin-token", "admin-secret-for-tests");
  await call(server, "POST", "/v1/limits", { name: "guarded", slots: 1 }, "admin-secret-for-tests");
  const { page, close } = await open(server.url);
  try {
    const dialog = page.getByRole("dialog", { name: "This server needs a token" });
    await dialog.waitFor();
    await shot(page, "token-asked");
    await dialog.getByLabel("Access token").fill("wrong");
    await dialog.getByRole("button", { name: "Use token" }).click();
    await dialog.getByText("the token is not one this server accepts").waitFor();
    await dialog.getByLabel("Access token").fill("admin-secret-for-tests");
    await dialog.getByRole("button", { name: "Use token" }).click();
    await page.getByRole("link", { name: "guarded" }).waitFor();
    await page.getByRole("status").filter({ hasText: "live" }).waitFor();

    await page.reload();
    await page.getByRole("link", { name: "guarded" }).waitFor();
    assert.equal(await dialog.isVisible(), false);

    await page.getByRole("button", { name: "Forget token" }).click();
    await dialog.waitFor();
  } finally {
    await close();
    await server.stop();
  }
});

test("on a phone-sized screen the page fits and works from the keyboard", async () => {
  const server = await startServer();
  await createLimit(server, "a-rather-long-limit-name-for-a-small-screen", 3);
  const { page, close } = await open(server.url, { width: 390, height: 844 });
  try {
    await page.getByRole("link", { name: "a-rather-long-limit-name-for-a-small-screen" }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
    await shot(page, "phone-limits");

    // Keyboard only: focus "New limit", open the form, fill it, submit.
    await page.getByRole("button", { name: "New limit" }).focus();
    await page.keyboard.press("Enter");
    const create = page.getByRole("dialog", { name: "New limit" });
    await create.waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.id), "f-name");
    await page.keyboard.type("typed-limit");
    await page.keyboard.press("Tab");
    await page.keyboard.type("2");
    await page.keyboard.press("Enter");
    await page.getByRole("link", { name: "typed-limit" }).waitFor();
    assert.equal((await call(server, "GET", "/v1/limits/typed-limit")).body.slots, 2);

    // Escape closes a dialog without doing anything.
    await page.getByRole("button", { name: "Delete typed-limit" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("dialog", { name: "Delete typed-limit?" }).waitFor();
    await page.keyboard.press("Escape");
    assert.equal((await call(server, "GET", "/v1/limits/typed-limit")).status, 200);
  } finally {
    await close();
    await server.stop();
  }
});

test("a read-only token sees no write controls, and deactivating asks first", async () => {
  const admin = "admin-secret-for-tests";
  const client = "client-secret-for-tests";
  const server = await startServer("--admin-token", admin, "--client-token", client);
  await call(server, "POST", "/v1/limits", { name: "shared", slots: 2 }, admin);
  const { page, close } = await open(server.url);
  try {
    // A client token: the limits show, but nothing that changes them.
    const dialog = page.getByRole("dialog", { name: "This server needs a token" });
    await dialog.getByLabel("Access token").fill(client);
    await dialog.getByRole("button", { name: "Use token" }).click();
    await page.getByRole("link", { name: "shared" }).waitFor();
    await until(async () => (await page.locator("body").getAttribute("data-scope")) === "client", "the page knows the scope");
    assert.equal(await page.getByRole("button", { name: "New limit" }).isVisible(), false);
    assert.equal(await page.getByRole("button", { name: "Edit shared" }).isVisible(), false);
    assert.equal(await page.getByRole("button", { name: "Delete shared" }).isVisible(), false);
    const readOnly = page.getByRole("switch", { name: "Active: shared" });
    assert.equal(await readOnly.isDisabled(), true);
    assert.equal(await readOnly.isChecked(), true, "the switch still shows the limit's state");
    await shot(page, "read-only-token");

    // An admin token: the controls are there, and turning enforcement off
    // asks first; cancelling keeps the limit active.
    await page.getByRole("button", { name: "Forget token" }).click();
    await dialog.getByLabel("Access token").fill(admin);
    await dialog.getByRole("button", { name: "Use token" }).click();
    await page.getByRole("button", { name: "New limit" }).waitFor();
    const toggle = page.getByRole("switch", { name: "Active: shared" });
    await until(async () => !(await toggle.isDisabled()), "the switch is enabled");
    await toggle.click();
    const confirm = page.getByRole("dialog", { name: "Deactivate shared?" });
    await confirm.waitFor();
    await shot(page, "deactivate-confirmation");
    await confirm.getByRole("button", { name: "Cancel" }).click();
    await until(async () => await toggle.isChecked(), "the switch shows active again");
    assert.equal((await call(server, "GET", "/v1/limits/shared", undefined, admin)).body.active, true);
    await toggle.click();
    await confirm.getByRole("button", { name: "Deactivate" }).click();
    await until(async () => !(await call(server, "GET", "/v1/limits/shared", undefined, admin)).body.active, "the limit is inactive");
  } finally {
    await close();
    await server.stop();
  }
});

/** A reverse proxy on port 0 that serves `server` under `/prefix/`, as
 *  nginx's `location /prefix/ { proxy_pass http://server/; }` would. */
async function prefixProxy(server, prefix) {
  const http = await import("node:http");
  const target = new URL(server.url);
  const proxy = http.createServer((request, response) => {
    if (!request.url.startsWith(`${prefix}/`)) {
      response.writeHead(404).end("not under the prefix");
      return;
    }
    // The proxy is the server's own site to the browser: pass the request
    // on as the server's own host, as a proxy configured for it would.
    const { origin, ...headers } = request.headers;
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: request.method,
        path: request.url.slice(prefix.length),
        headers: { ...headers, host: target.host },
      },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        answer.pipe(response);
      },
    );
    request.pipe(upstream);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${proxy.address().port}${prefix}/`,
    close: () => new Promise((resolve) => { proxy.closeAllConnections(); proxy.close(resolve); }),
  };
}

test("behind a reverse proxy under a path prefix, the page and its live data work", async () => {
  const server = await startServer();
  await createLimit(server, "proxied", 2);
  const proxy = await prefixProxy(server, "/ratekeeper");
  const { page, close } = await open(proxy.url);
  try {
    await page.getByRole("link", { name: "proxied" }).waitFor();
    await page.getByRole("status").filter({ hasText: "live" }).waitFor();
    // A change made elsewhere arrives over the proxied event stream.
    await acquire(server, "proxied", "elsewhere");
    const held = page.locator('tr[data-name="proxied"] .usage-text');
    await until(async () => (await held.textContent()).startsWith("1/2"), "the row shows 1 held");
    await shot(page, "behind-a-path-prefix");
  } finally {
    await close();
    await proxy.close();
    await server.stop();
  }
});

test("when the server goes away the figures are greyed and a banner says since when", async () => {
  const server = await startServer();
  await createLimit(server, "open", 2);
  await createLimit(server, "shut", 0);
  const { page, close } = await open(server.url);
  try {
    await page.getByRole("status").filter({ hasText: "live" }).waitFor();
    // A limit of 0 slots says it is closed.
    const shutSlots = page.locator('tr[data-name="shut"] td[data-label="Slots"]');
    await until(async () => (await shutSlots.textContent()) === "0 (closed)", "the closed limit says so");
    const banner = page.locator("#stale");
    assert.equal(await banner.isVisible(), false);
    await server.stop();
    await banner.waitFor({ state: "visible" });
    assert.match(await banner.textContent(), /Not connected to the server since .*\((just now|\d+ s ago)\)/);
    // The banner counts the time since.
    await until(async () => /\d+ s ago/.test(await banner.textContent()), "the banner says how long ago");
    assert.equal(await page.locator("body").getAttribute("data-stale"), "true");
    await shot(page, "server-gone");
  } finally {
    await close();
  }
});

test("a queue whose head needs more than is free says why everyone waits", async () => {
  const server = await startServer();
  await createLimit(server, "pool", 3);
  const { status } = await call(server, "POST", "/v1/acquire", { names: ["pool"], occupy: 2, holder: "big" });
  assert.equal(status, 200);
  // Two waiters, left waiting inside their requests: the head needs 2
  // with 1 free, the one behind would fit but waits its turn.
  const pending = [];
  for (const [i, occupy] of [2, 1].entries()) {
    pending.push(fetch(`${server.url}/v1/acquire`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ names: ["pool"], occupy, wait_seconds: 15, timeout_seconds: 15 }),
    }).catch(() => null));
    await until(async () => (await call(server, "GET", "/v1/limits/pool")).body.waiting === i + 1, `${i + 1} waiting`);
  }
  const { page, close } = await open(`${server.url}/#/limits/pool`);
  try {
    const note = page.locator("#queue-note");
    await until(async () => /needs 2 slots and 1 slot is free/.test((await note.textContent()) ?? ""), "the queue says why");
    assert.match(await note.textContent(), /The one behind it waits too, even if it would fit/);
    await shot(page, "head-of-line");
  } finally {
    await close();
    await server.stop();
    await Promise.all(pending);
  }
});

test("the list shows how fast each limit grants now, beside its totals", async () => {
  const server = await startServer();
  await createLimit(server, "busy", 5);
  const { page, close } = await open(server.url);
  try {
    await page.getByRole("link", { name: "busy" }).waitFor();
    const rate = page.locator('tr[data-name="busy"] td[data-label="Grants /s"]');
    // Grants keep coming until the page has seen them for a second or two.
    let granting = true;
    const load = (async () => {
      while (granting) {
        const lease = await acquire(server, "busy", "load");
        await call(server, "DELETE", `/v1/leases/${lease}`);
      }
    })();
    await until(async () => Number((await rate.textContent()).replace(/[^0-9.]/g, "")) > 0, "the rate shows grants");
    granting = false;
    await load;
    await shot(page, "list-rates");
  } finally {
    await close();
    await server.stop();
  }
});

test("a limit page opens with the server's last minutes, on charts with axes, a legend and a tooltip", async () => {
  const server = await startServer();
  await createLimit(server, "exports", 3);
  await acquire(server, "exports", "before-the-page");
  await acquire(server, "exports", "before-the-page");
  // The server samples once a second: wait until it has a few seconds of
  // the two held slots, before anyone looks.
  const history = await until(async () => {
    const { body } = await call(server, "GET", "/v1/limits/exports/history");
    return body.samples.filter((s) => s.occupancy === 2).length >= 3 ? body : null;
  }, "the server has three samples of two held slots");
  const { page, close } = await open(`${server.url}/#/limits/exports`);
  try {
    const occupancy = page.locator(".chart-figure.occupancy");
    await occupancy.getByRole("img", { name: /Occupancy .* now 2 of 3 slots/ }).waitFor();
    // The first point of the chart is one the server sampled before the
    // page opened: the arrow keys walk the points, Home goes to the first.
    const times = await page.evaluate(
      (ats) => ats.map((at) => new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(at)),
      history.samples.map((s) => s.at),
    );
    const tooltip = occupancy.locator(".tooltip");
    const first = await until(async () => {
      await occupancy.getByRole("img").focus();
      await page.keyboard.press("Home");
      const index = times.indexOf(await tooltip.locator("strong").textContent());
      return index >= 0 ? history.samples[index] : null;
    }, "the chart's first point is one of the server's samples");
    // With that sample's value (the first may predate the leases).
    assert.match(await tooltip.textContent(), new RegExp(`occupied slots: ${first.occupancy}(?![0-9])`));
    // Under the pointer, the tooltip names the value and the slot count.
    const box = await occupancy.locator(".frame").boundingBox();
    await page.mouse.move(box.x + box.width - 2, box.y + box.height / 2);
    await until(async () => /occupied slots: 2.*slots: 3/.test(await tooltip.textContent()), "the tooltip follows the pointer");
    // Axes: round values from 0, and clock times.
    const values = await occupancy.locator(".y-axis span").allTextContents();
    assert.equal(values[0], "0");
    assert.ok(values.length >= 3, values.join(" "));
    const clockTimes = await occupancy.locator(".x-axis span").allTextContents();
    assert.ok(clockTimes.length >= 2 && clockTimes.every((t) => /\d{1,2}:\d{2}/.test(t)), clockTimes.join(" "));
    assert.deepEqual(await occupancy.locator(".legend li:not([hidden])").allTextContents(), ["occupied slots", "slots"]);
    await shot(page, "history-on-open");
    await page.mouse.move(0, 0);
    await tooltip.waitFor({ state: "hidden" });
  } finally {
    await close();
    await server.stop();
  }
});

test("lowering slots below what is held asks first, and cancelling changes nothing", async () => {
  const server = await startServer();
  await createLimit(server, "reports", 3);
  await acquire(server, "reports", "a");
  await acquire(server, "reports", "b");
  const { page, close } = await open(`${server.url}/#/limits/reports`);
  try {
    await page.getByRole("img", { name: /Occupancy .* now 2 of 3 slots/ }).waitFor();
    const edit = page.getByRole("dialog", { name: "Edit reports" });
    const confirm = page.getByRole("dialog", { name: "Lower reports to 1 slots?" });
    await page.getByRole("button", { name: "Edit reports" }).click();
    await edit.getByLabel("Slots", { exact: true }).fill("1");
    await edit.getByRole("button", { name: "Save" }).click();
    await confirm.waitFor();
    assert.match(await confirm.textContent(), /2 slots of reports are held now/);
    await shot(page, "lower-slots-confirmation");
    await confirm.getByRole("button", { name: "Cancel" }).click();
    assert.equal((await call(server, "GET", "/v1/limits/reports")).body.slots, 3);
    await edit.getByRole("button", { name: "Save" }).click();
    await confirm.getByRole("button", { name: "Lower slots" }).click();
    await edit.waitFor({ state: "hidden" });
    assert.equal((await call(server, "GET", "/v1/limits/reports")).body.slots, 1);
    // Raising it again asks nothing.
    await page.getByRole("button", { name: "Edit reports" }).click();
    await edit.getByLabel("Slots", { exact: true }).fill("4");
    await edit.getByRole("button", { name: "Save" }).click();
    await edit.waitFor({ state: "hidden" });
    assert.equal((await call(server, "GET", "/v1/limits/reports")).body.slots, 4);
  } finally {
    await close();
    await server.stop();
  }
});

test("a paused limit says why and for how long; a client token pauses from the page, an admin resumes", async () => {
  const admin = "admin-secret-for-tests";
  const client = "client-secret-for-tests";
  const server = await startServer("--admin-token", admin, "--client-token", client);
  await call(server, "POST", "/v1/limits", { name: "vendor", slots: 2 }, admin);
  await call(server, "POST", "/v1/limits", { name: "other", slots: 2 }, admin);
  const paused = await call(server, "POST", "/v1/limits/vendor/pause",
    { seconds: 600, reason: "429 from api.vendor.test", reporter: "worker-7" }, client);
  assert.equal(paused.status, 200, JSON.stringify(paused.body));
  const { page, close } = await open(server.url);
  try {
    const dialog = page.getByRole("dialog", { name: "This server needs a token" });
    await dialog.getByLabel("Access token").fill(client);
    await dialog.getByRole("button", { name: "Use token" }).click();
    const row = page.locator('tr[data-name="vendor"]');
    await until(async () => /paused (9|10) min/.test(await row.textContent()), "the list marks the paused limit");
    assert.ok(!/paused/.test(await page.locator('tr[data-name="other"]').textContent()), "only the paused one");
    await shot(page, "paused-in-list");

    await page.getByRole("link", { name: "vendor" }).click();
    const banner = page.locator(".pause-banner");
    await until(async () => /nothing is granted for (9|10) min .* more\. 429 from api\.vendor\.test — reported by worker-7/.test(await banner.textContent()),
      "the page says why, by whom and for how long");
    assert.equal(await banner.getByRole("button", { name: "Resume now" }).isVisible(), false, "a client token cannot resume");

    // A client token may pause, as workers do.
    await page.goto(`${server.url}/#/limits/other`);
    await page.getByRole("button", { name: "Pause other" }).click();
    const form = page.getByRole("dialog", { name: "Pause other" });
    await form.getByLabel("For how many seconds").fill("-5");
    await form.getByRole("button", { name: "Pause" }).click();
    await until(async () => /above 0/.test(await form.locator("#pause-error").textContent()), "a bad duration is refused on the page");
    await form.getByLabel("For how many seconds").fill("300");
    await form.getByLabel("Reason").fill("vendor maintenance");
    await form.getByRole("button", { name: "Pause" }).click();
    await until(async () => (await call(server, "GET", "/v1/limits/other", undefined, client)).body.paused?.reporter === "web UI",
      "the server has the pause");
    await until(async () => /vendor maintenance/.test(await banner.textContent()), "the banner shows the new pause");

    // An admin resumes.
    await page.getByRole("button", { name: "Forget token" }).click();
    await dialog.getByLabel("Access token").fill(admin);
    await dialog.getByRole("button", { name: "Use token" }).click();
    await page.goto(`${server.url}/#/limits/vendor`);
    const resume = banner.getByRole("button", { name: "Resume now" });
    await resume.waitFor();
    await shot(page, "paused-limit-page");
    await resume.click();
    await until(async () => await banner.isHidden(), "the banner goes");
    assert.equal((await call(server, "GET", "/v1/limits/vendor", undefined, admin)).body.paused, null);
  } finally {
    await close();
    await server.stop();
  }
});

test("a template is listed with its key count, and its page lists its busiest keys", async () => {
  const server = await startServer();
  const created = await call(server, "POST", "/v1/limits", { name: "tenant:*", slots: 2, description: "per tenant" });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  await acquire(server, "tenant:acme", "worker-1");
  await acquire(server, "tenant:acme", "worker-2");
  await acquire(server, "tenant:globex", "worker-3");
  const { page, close } = await open(server.url);
  try {
    const row = page.locator('tr[data-name="tenant:*"]');
    await until(async () => /template · 2 keys/.test(await row.textContent()), "the list shows the template with its keys");
    assert.equal(await page.locator('tr[data-name="tenant:acme"]').count(), 0, "instances are not rows of their own");
    await until(async () => /3 held over 2 keys/.test(await row.textContent()), "the template's usage is the sum over its keys");
    await shot(page, "template-in-list");

    await page.getByRole("link", { name: "tenant:*" }).click();
    const panel = page.getByRole("region", { name: /Instances/ });
    await until(async () => /Instances \(2 of at most 100,000\)/.test(await panel.textContent()), "the page counts the keys");
    const first = panel.locator("tbody tr").first();
    await until(async () => /tenant:acme\s*2/.test(await first.textContent()), "the busiest key comes first");
    assert.equal(await page.getByRole("region", { name: /Leases/ }).isVisible(), false, "a template holds nothing itself");
    await shot(page, "template-page");

    await panel.getByRole("link", { name: "tenant:acme" }).click();
    await until(async () => /A key of template tenant:\*/.test(await page.locator(".instance-of").textContent()), "a key's page names its template");
    await until(async () => /Leases \(2\)/.test(await page.locator("#leases-title").textContent()), "a key's page shows its holders");
  } finally {
    await close();
    await server.stop();
  }
});

test("an adaptive limit shows the rate in force beside the configured one", async () => {
  const server = await startServer();
  const created = await call(server, "POST", "/v1/limits",
    { name: "vendor", slots: 1, slot_decay_per_second: 100, adaptive: { decrease_factor: 0.5, recovery_seconds: 600 } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  let page, close;
  try {
    // A worker's report of a 429 without Retry-After: it slows down.
    const reported = await call(server, "POST", "/v1/limits/vendor/throttled", { reason: "429" });
    assert.equal(reported.body.adaptive.effective, 50, JSON.stringify(reported.body));
    ({ page, close } = await open(server.url));
    const row = page.locator('tr[data-name="vendor"]');
    await until(async () => /50(\.\d)? of 100/.test(await row.textContent()), "the list shows the rate in force");
    await page.getByRole("link", { name: "vendor" }).click();
    const note = page.locator(".adaptive-note");
    await until(async () => /Adaptive: 50(\.\d)?\/s in force of 100\/s configured, climbing back/.test(await note.textContent()), "the page explains");
    await shot(page, "adaptive-limit-page");
  } finally {
    await close?.();
    await server.stop();
  }
});
