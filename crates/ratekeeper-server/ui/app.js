// ratekeeper's web UI: hand-written, no dependencies, no build step.
//
// Reads and changes go through the HTTP API; everything live comes from the
// server's event stream (/v1/events). Nothing polls the server: a one-second
// local tick only ages the timers on screen and samples the charts. A limit
// page opens with the server's own samples of the last minutes
// (/v1/limits/{name}/history), so its charts start full.

const BUSIEST_SHOWN = 10; // instances a template's page lists
const HISTORY_SECONDS = 900; // how far back the charts reach (the server keeps as much)
const RATE_WINDOW_SECONDS = 10; // the admitted rate is averaged over this
const TOKEN_KEY = "ratekeeper-token";

// ---------------------------------------------------------------- state

const store = {
  /** The bearer token, kept for this tab only. */
  token: sessionStorage.getItem(TOKEN_KEY),
  /** Whether the server asked for a token. */
  tokenRequired: false,
  /** name -> { limit, seenAt }: the latest state and when (performance.now()) it was true. */
  limits: new Map(),
  /** name -> samples, about one a second, oldest first: { at (Unix ms),
   *  occupancy, waiting, granted, grantedSlots }, the last two counted
   *  since the sample before. */
  history: new Map(),
  /** name -> the running totals at the last local sample: { granted, grantedSlots }. */
  totals: new Map(),
  /** The open limit page's leases and queue: { name, leases, waiters, missing }. */
  detail: null,
  /** The live event stream, while open. */
  events: null,
  /** What the token may do: "admin" (change limits) or "client" (read). */
  scope: "admin",
};

// ---------------------------------------------------------------- helpers

const $ = (selector, root = document) => root.querySelector(selector);

/** Builds an element. Text is always set as text, never parsed as HTML. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const integer = new Intl.NumberFormat("en");
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

function formatNumber(value) {
  return Number.isInteger(value) ? integer.format(value) : decimal.format(value);
}

/** "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min". */
function formatDuration(ms) {
  const clamped = Math.max(0, ms);
  if (clamped < 1000) return `${Math.round(clamped)} ms`;
  const seconds = clamped / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function limitPath(name) {
  return `/v1/limits/${encodeURIComponent(name)}`;
}

function limitHash(name) {
  return `#/limits/${encodeURIComponent(name)}`;
}

/** Decaying slots now: the server's figure, decayed since it was true. */
function decayingNow({ limit, seenAt }) {
  const elapsed = (performance.now() - seenAt) / 1000;
  return Math.max(0, limit.decaying - limit.slot_decay_per_second * elapsed);
}

/** Why the queue waits, in words, when it is not plain to see: a closed
 *  limit, or a head of the queue that needs more than is free (everyone
 *  behind it waits too, first come, first served). */
function whyWaiting(entry, waiters) {
  if (!entry || waiters.length === 0 || !entry.limit.active) return null;
  const { limit } = entry;
  if (limit.slots === 0) return "This limit is closed (0 slots): every request waits until it is given slots.";
  if (pauseNow(limit)) return "This limit is paused: the queue is served in order, from the first in line, when the pause ends.";
  const free = Math.max(0, Math.floor(limit.slots - limit.held - decayingNow(entry) + 1e-9));
  const head = waiters[0];
  if (head.occupy <= free) return null;
  const slots = (n) => `${formatNumber(n)} slot${n === 1 ? "" : "s"}`;
  const rest = waiters.length - 1;
  const behind = rest === 0
    ? ""
    : rest === 1
      ? " The one behind it waits too, even if it would fit: requests are served first come, first served."
      : ` The ${rest} behind it wait too, even those that would fit: requests are served first come, first served.`;
  return `The first in line needs ${slots(head.occupy)} and ${slots(free)} ${free === 1 ? "is" : "are"} free.${behind}`;
}

/** The pause that holds a limit now, or null (a pause the server set may
 *  have ended since: nothing tells the page when nobody waits). */
function pauseNow(limit) {
  return limit.paused && limit.paused.until > Date.now() ? limit.paused : null;
}

/** A rate as configured, or, for a lowered adaptive limit, the rate in
 *  force and the configured one: "42.5 of 100". */
function inForce(limit) {
  const configured = formatNumber(limit.slot_decay_per_second);
  const adaptive = limit.adaptive;
  if (!adaptive || adaptive.scale >= 1) return configured;
  return `${formatNumber(Math.round(adaptive.effective * 10) / 10)} of ${configured}`;
}

/** "paused 29 s" for a list row. */
function pauseBadge(limit) {
  const pause = pauseNow(limit);
  if (!pause) return "";
  return el("span", {
    class: "badge paused",
    title: `${pause.reason ?? "paused"} (reported by ${pause.reporter ?? "someone"})`,
    text: `paused ${formatDuration(pause.until - Date.now())}`,
  });
}

function isRateLimit(limit) {
  return limit.slot_decay_per_second > 0;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** An API path as a URL relative to the page, so that the UI and the API
 *  work behind a reverse proxy that serves them under a path prefix
 *  (`https://host/ratekeeper/`). */
function relative(path) {
  return path.replace(/^\//, "");
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (store.token) headers.authorization = `Bearer ${store.token}`;
  let response;
  try {
    response = await fetch(relative(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "unreachable", "The server cannot be reached.");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const error = data?.error ?? { code: `http_${response.status}`, message: response.statusText };
  if (response.status === 401) askForToken(store.token ? error.message : null);
  throw new ApiError(response.status, error.code, error.message, error.field);
}

/** Shows only the controls the token may use: a read-only (client) token
 *  sees no New/Edit/Reset/Delete and a switch it cannot flip. */
function setScope(scope) {
  store.scope = scope;
  document.body.dataset.scope = scope;
  for (const input of document.querySelectorAll('input[role="switch"]')) {
    input.disabled = scope !== "admin";
    input.title = scope === "admin" ? "" : "Changing a limit needs an admin token";
  }
}

// ---------------------------------------------------------------- live data

function setConnection(state, text) {
  const node = $("#connection");
  node.dataset.state = state;
  setText(node, text ?? { live: "live", connecting: "connecting…", down: "disconnected" }[state]);
  if (state === "live") {
    store.liveSince = Date.now();
    store.staleSince = null;
  } else if (store.liveSince && !store.staleSince) {
    // Live before, not now: what is shown is as it was then.
    store.staleSince = Date.now();
  }
  showStaleness();
}

/** Greys the data and says since when it has not been updated, while the
 *  page is not connected after having been. */
function showStaleness() {
  const banner = $("#stale");
  const stale = store.staleSince !== null && store.staleSince !== undefined;
  document.body.dataset.stale = String(stale);
  banner.hidden = !stale;
  if (!stale) return;
  const seconds = Math.floor((Date.now() - store.staleSince) / 1000);
  const at = new Date(store.staleSince).toLocaleTimeString();
  const ago = seconds < 1 ? "just now" : seconds < 60 ? `${seconds} s ago` : `${formatDuration(seconds * 1000)} ago`;
  setText(banner, `Not connected to the server since ${at} (${ago}): the figures below are as they were then. Reconnecting…`);
}

let reconnectTimer = null;

function closeEvents() {
  store.events?.close();
  store.events = null;
  clearTimeout(reconnectTimer);
}

/** (Re)connects: checks access with one read, then opens the event stream,
 *  which starts with a snapshot of every limit. */
async function connect() {
  closeEvents();
  setConnection("connecting");
  try {
    applySnapshot(await api("GET", "/v1/limits"));
    setScope((await api("GET", "/v1/whoami")).scope);
  } catch (error) {
    if (error.status === 401) {
      setConnection("down", "token needed");
    } else {
      setConnection("down", error.message);
      reconnectTimer = setTimeout(connect, 2000);
    }
    return;
  }
  const query = store.token ? `?access_token=${encodeURIComponent(store.token)}` : "";
  const source = new EventSource(relative(`/v1/events${query}`));
  const on = (kind, handle) =>
    source.addEventListener(kind, (event) => handle(JSON.parse(event.data)));
  source.addEventListener("open", () => setConnection("live"));
  on("snapshot", applySnapshot);
  on("limit", upsertLimit);
  on("limit_deleted", ({ name }) => removeLimit(name));
  on("lease", leaseChanged);
  on("lease_ended", ({ id }) => leaseEnded(id));
  // Events were lost: read everything afresh.
  source.addEventListener("resync", () => {
    api("GET", "/v1/limits").then(applySnapshot, () => {});
    refreshDetail();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (a token revoked?) or the server is gone: start over.
      setConnection("down");
      reconnectTimer = setTimeout(connect, 2000);
    } else {
      setConnection("connecting", "reconnecting…");
    }
  });
  store.events = source;
  refreshDetail();
}

function applySnapshot(limits) {
  const seen = new Set();
  for (const limit of limits) {
    upsertLimit(limit);
    seen.add(limit.name);
  }
  for (const name of [...store.limits.keys()]) {
    if (!seen.has(name)) removeLimit(name);
  }
}

function upsertLimit(limit) {
  store.limits.set(limit.name, { limit, seenAt: performance.now() });
  if (!store.history.has(limit.name)) store.history.set(limit.name, []);
  if (store.detail?.name === limit.name) scheduleDetailRefresh();
  scheduleUpdate();
}

/** A limit as an API answer gave it. While the event stream is live, its
 *  events carry the same change in order, and an answer that arrives after
 *  later events would put older state back; so answers count only while
 *  the stream is down. */
function answered(limit) {
  if (store.events?.readyState !== EventSource.OPEN) upsertLimit(limit);
}

function removeLimit(name) {
  store.limits.delete(name);
  store.history.delete(name);
  store.totals.delete(name);
  if (store.detail?.name === name) {
    store.detail = { name, leases: [], waiters: [], missing: true };
    toast(`Limit ${name} was deleted.`);
  }
  scheduleUpdate();
}

function leaseChanged(lease) {
  const detail = store.detail;
  if (!detail || !lease.limits.includes(detail.name)) return;
  const index = detail.leases.findIndex((held) => held.id === lease.id);
  if (index >= 0) detail.leases[index] = lease;
  else detail.leases.push(lease);
  scheduleUpdate();
}

function leaseEnded(id) {
  const detail = store.detail;
  if (!detail) return;
  const before = detail.leases.length;
  detail.leases = detail.leases.filter((lease) => lease.id !== id);
  if (detail.leases.length !== before) scheduleUpdate();
}

// The queue has no events of its own: a limit event for the open limit
// (its waiting count changed) reads its details again, at most a few times
// a second however busy the limit is.
let detailTimer = null;

function scheduleDetailRefresh() {
  if (detailTimer === null) detailTimer = setTimeout(refreshDetail, 150);
}

async function refreshDetail() {
  clearTimeout(detailTimer);
  detailTimer = null;
  const name = store.detail?.name;
  if (name === undefined) return;
  try {
    const details = await api("GET", limitPath(name));
    // A template's page lists its busiest instances.
    const instances = details.template
      ? (await api("GET", `${limitPath(name)}/instances?order=busiest&count=${BUSIEST_SHOWN}`)).instances
      : [];
    if (store.detail?.name !== name) return;
    store.detail = { name, leases: details.leases, waiters: details.waiters, instances, missing: false };
    // An instance is in no snapshot: its page learns of it here.
    if (!store.limits.has(name)) upsertLimit(details);
    else answered(details);
  } catch (error) {
    if (store.detail?.name !== name) return;
    if (error.code === "limit_not_found") store.detail = { name, leases: [], waiters: [], missing: true };
  }
  scheduleUpdate();
}

/** Once a second: a sample of every limit for the charts. */
function sample() {
  const now = Date.now();
  for (const [name, entry] of store.limits) {
    const samples = store.history.get(name);
    const { limit } = entry;
    const totals = { granted: limit.counters.granted_total, grantedSlots: limit.counters.granted_slots_total };
    const before = store.totals.get(name) ?? totals;
    store.totals.set(name, totals);
    samples.push({
      at: now,
      occupancy: limit.held + decayingNow(entry),
      waiting: limit.waiting,
      // A reset starts the totals again: never a negative count.
      granted: Math.max(0, totals.granted - before.granted),
      grantedSlots: Math.max(0, totals.grantedSlots - before.grantedSlots),
    });
    while (samples.length > 0 && samples[0].at < now - HISTORY_SECONDS * 1000) samples.shift();
  }
}

/** Puts the server's samples of `name` before the ones taken here. */
async function loadHistory(name) {
  let history;
  try {
    history = await api("GET", `${limitPath(name)}/history`);
  } catch {
    return; // the charts then start empty, as they would without history
  }
  if (!history.tracked) return;
  // The page may be opened before the event stream's snapshot names the
  // limit: keep the samples for when it does.
  if (!store.history.has(name)) store.history.set(name, []);
  const samples = store.history.get(name);
  const firstHere = samples[0]?.at ?? Infinity;
  const earlier = history.samples
    .filter((s) => s.at < firstHere - 500)
    .map((s) => ({ at: s.at, occupancy: s.occupancy, waiting: s.waiting, granted: s.granted, grantedSlots: s.granted_slots }));
  samples.unshift(...earlier);
  scheduleUpdate();
}

/** Grants per second between consecutive samples, timed by the later one. */
function grantsPerSecond(samples) {
  return samples.slice(1).map((s, i) => ({
    at: s.at,
    value: s.granted / Math.max(0.001, (s.at - samples[i].at) / 1000),
  }));
}

/** How fast a count of the samples (`granted`, `grantedSlots`) grew per
 *  second over the last RATE_WINDOW_SECONDS samples. */
function recentRate(samples, key) {
  if (!samples || samples.length < 2) return null;
  const span = Math.min(RATE_WINDOW_SECONDS, samples.length - 1);
  const recent = samples.slice(-span);
  const seconds = (samples.at(-1).at - samples.at(-1 - span).at) / 1000;
  if (seconds <= 0) return null;
  return recent.reduce((sum, s) => sum + s[key], 0) / seconds;
}

/** Slots admitted per second over the last RATE_WINDOW_SECONDS samples. */
function admittedRate(samples) {
  return recentRate(samples, "grantedSlots");
}

// ---------------------------------------------------------------- rendering

let updateScheduled = false;

/** Redraws the live parts of the page once per frame, however many events
 *  arrived since the last one. */
function scheduleUpdate() {
  if (updateScheduled) return;
  updateScheduled = true;
  requestAnimationFrame(() => {
    updateScheduled = false;
    view?.update();
  });
}

/** The page on screen: { update() }. */
let view = null;

function route() {
  const match = location.hash.match(/^#\/limits\/(.+)$/);
  if (match) {
    const name = decodeURIComponent(match[1]);
    store.detail = { name, leases: [], waiters: [], missing: false };
    view = limitPage(name);
    document.title = `${name} · ratekeeper`;
    refreshDetail();
    loadHistory(name);
  } else {
    store.detail = null;
    view = limitsPage();
    document.title = "Limits · ratekeeper";
  }
  $("#main").replaceChildren(view.root);
  view.update();
}

/** The live bar of one limit: held and decaying slots against its slots,
 *  and how many wait. */
function usageBar() {
  const held = el("span", { class: "held" });
  const decaying = el("span", { class: "decaying" });
  const meter = el("span", { class: "meter", role: "img" }, held, decaying);
  const text = el("span", { class: "usage-text" });
  const root = el("span", { class: "usage" }, meter, text);
  return {
    root,
    update(entry) {
      const { limit } = entry;
      const decayingSlots = decayingNow(entry);
      // A template's figures are sums over its keys, each with its slots.
      const keys = limit.template ? Math.max(limit.template.instances, 1) : 1;
      const slots = Math.max(limit.slots * keys, 1);
      held.style.width = `${Math.min(100, (limit.held / slots) * 100)}%`;
      decaying.style.width = `${Math.min(100 - (limit.held / slots) * 100, (decayingSlots / slots) * 100)}%`;
      const parts = [`${formatNumber(limit.held)} of ${formatNumber(limit.slots)} held`];
      if (isRateLimit(limit)) parts.push(`${decayingSlots.toFixed(1)} decaying`);
      parts.push(`${formatNumber(limit.waiting)} waiting`);
      meter.setAttribute("aria-label", parts.join(", "));
      const occupied = isRateLimit(limit)
        ? (limit.held + decayingSlots).toFixed(1)
        : formatNumber(limit.held);
      text.replaceChildren(
        limit.template ? `${occupied} held over ${formatNumber(limit.template.instances)} keys` : `${occupied}/${formatNumber(limit.slots)}`,
        limit.waiting > 0
          ? el("span", { class: "waiting-count", text: ` · ${formatNumber(limit.waiting)} waiting` })
          : "",
        limit.active ? pauseBadge(limit) : "",
      );
    },
  };
}

/** The active switch of one limit. */
function activeSwitch(name) {
  const input = el("input", { type: "checkbox", role: "switch", "aria-label": `Active: ${name}` });
  input.disabled = store.scope !== "admin";
  /** Whether a change is on its way: the server's state then waits. */
  let busy = false;
  input.addEventListener("change", async () => {
    const active = input.checked;
    if (!active) {
      if (!(await confirmDeactivate(name))) {
        input.checked = true;
        return;
      }
    }
    busy = true;
    input.disabled = true;
    try {
      answered(await api("PATCH", limitPath(name), { active }));
      toast(`${name} is now ${active ? "active" : "inactive"}.`);
    } catch (error) {
      input.checked = !active;
      toast(error.message, true);
    } finally {
      busy = false;
      input.disabled = store.scope !== "admin";
    }
  });
  return {
    root: el("label", { class: "switch" }, input, el("span", { class: "visually-hidden", text: "active" })),
    update(limit) {
      if (!busy) input.checked = limit.active;
    },
  };
}

function actionButtons(name, { small } = {}) {
  const size = small ? "small" : "";
  return el(
    "span",
    { class: "row-actions admin-only" },
    el("button", { type: "button", class: size, "aria-label": `Edit ${name}`, text: "Edit", onclick: () => openLimitForm(name) }),
    el("button", { type: "button", class: size, "aria-label": `Reset ${name}`, text: "Reset", onclick: () => resetLimit(name) }),
    el("button", { type: "button", class: size, "aria-label": `Delete ${name}`, text: "Delete", onclick: () => deleteLimit(name) }),
  );
}

const COLUMNS = ["Name", "Slots", "Decay /s", "Active", "Now", "Grants /s", "Granted", "Waited", "Expired", "Denied", "Actions"];
const NUMERIC_COLUMNS = new Set(["Slots", "Grants /s", "Granted", "Waited", "Expired", "Denied"]);

function limitsPage() {
  const filter = el("input", {
    id: "filter",
    type: "search",
    placeholder: "Filter by name",
    "aria-label": "Filter limits by name",
    autocomplete: "off",
    oninput: () => view.update(),
  });
  const rows = el("tbody");
  const empty = el("p", { class: "empty", hidden: true });
  const table = el(
    "table",
    { class: "cards", "aria-labelledby": "limits-title" },
    el("thead", {}, el("tr", {}, COLUMNS.map((title, i) =>
      el("th", { scope: "col", class: NUMERIC_COLUMNS.has(title) ? "num" : i === COLUMNS.length - 1 ? "admin-only" : null },
        i === COLUMNS.length - 1 ? el("span", { class: "visually-hidden", text: title }) : title)))),
    rows,
  );
  const root = el(
    "section",
    {},
    el(
      "div",
      { class: "toolbar" },
      el("h1", { id: "limits-title", text: "Limits" }),
      filter,
      el("button", { type: "button", class: "primary admin-only", text: "New limit", onclick: () => openLimitForm(null) }),
    ),
    el("div", { class: "panel" }, table, empty),
  );
  /** name -> the row's live parts. */
  const shown = new Map();

  function row(name) {
    const usage = usageBar();
    const active = activeSwitch(name);
    const cell = (label, className, ...content) => el("td", { "data-label": label, class: className }, ...content);
    const slots = cell("Slots", "num");
    const decay = cell("Decay /s", "num");
    const instanceCount = el("span", { class: "badge template", hidden: true });
    const rate = cell("Grants /s", "num");
    const counters = ["Granted", "Waited", "Expired", "Denied"].map((label) => cell(label, "num"));
    const tr = el(
      "tr",
      { "data-name": name },
      cell("Name", "", el("a", { href: limitHash(name), text: name }), instanceCount),
      slots,
      decay,
      cell("Active", "", active.root),
      cell("Now", "", usage.root),
      rate,
      counters,
      cell("Actions", "admin-only", actionButtons(name, { small: true })),
    );
    return {
      tr,
      update(entry) {
        const { limit } = entry;
        setText(slots, limit.slots === 0 ? "0 (closed)" : formatNumber(limit.slots));
        instanceCount.hidden = !limit.template;
        if (limit.template) {
          const n = limit.template.instances;
          setText(instanceCount, `template · ${formatNumber(n)} key${n === 1 ? "" : "s"}`);
        }
        setText(decay, isRateLimit(limit) ? inForce(limit) : "–");
        active.update(limit);
        usage.update(entry);
        const perSecond = recentRate(store.history.get(limit.name), "granted");
        setText(rate, perSecond === null ? "…" : formatNumber(Math.round(perSecond * 10) / 10));
        const c = limit.counters;
        [c.granted_total, c.waited_total, c.expired_total, c.denied_total].forEach((value, i) =>
          setText(counters[i], formatNumber(value)));
      },
    };
  }

  return {
    root,
    update() {
      const needle = filter.value.trim().toLowerCase();
      const names = [...store.limits.keys()]
        .sort()
        .filter((name) => !store.limits.get(name).limit.instance_of && name.toLowerCase().includes(needle));
      for (const [name, parts] of shown) {
        if (!names.includes(name)) {
          parts.tr.remove();
          shown.delete(name);
        }
      }
      names.forEach((name, index) => {
        let parts = shown.get(name);
        if (!parts) {
          parts = row(name);
          shown.set(name, parts);
        }
        // Moved only when out of place, so a focused control keeps focus.
        if (rows.children[index] !== parts.tr) rows.insertBefore(parts.tr, rows.children[index] ?? null);
        parts.update(store.limits.get(name));
      });
      empty.hidden = names.length > 0;
      setText(empty, store.limits.size === 0
        ? "No limits yet. Create one here, or with `ratekeeper limit create NAME --slots 3`."
        : `No limit matches “${filter.value.trim()}”.`);
    },
  };
}

/** Steps of 1, 2 or 5 times a power of ten: about `count` of them reach `top`. */
function niceStep(top, count, whole) {
  const raw = top / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw);
  return whole ? Math.max(1, Math.round(step)) : step;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const clockSeconds = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** A line chart of the last HISTORY_SECONDS, newest at the right: a time
 *  axis with clock ticks, a value axis with round ticks, a legend, and a
 *  tooltip under the pointer (or the arrow keys when focused). `series` and
 *  `referenceName` name the line and the optional dashed reference line
 *  (the slot count, the configured rate); `format` writes a value. */
function chart(title, className, { series, referenceName = null, format = formatNumber, whole = false }) {
  const width = 300;
  const height = 100;
  const graph = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  const grid = svg("g", { class: "grid" });
  const area = svg("polygon", { class: "area" });
  const line = svg("polyline", { class: "line" });
  const reference = svg("line", { class: "reference", x1: 0, x2: width });
  const cursor = svg("line", { class: "cursor", y1: 0, y2: height });
  cursor.style.display = "none";
  graph.append(grid, area, line, reference, cursor);
  const dot = el("span", { class: "dot", hidden: true });
  const tip = el("div", { class: "tooltip", role: "status", hidden: true });
  const canvas = el("div", { class: "canvas", tabindex: "0", role: "img" }, graph);
  const frame = el("div", { class: "frame" }, canvas, dot, tip);
  const yAxis = el("div", { class: "y-axis", "aria-hidden": "true" });
  const xAxis = el("div", { class: "x-axis", "aria-hidden": "true" });
  const now = el("span", { class: "now" });
  const legend = el("ul", { class: "legend" },
    el("li", {}, el("span", { class: "swatch line" }), series),
    referenceName ? el("li", { class: "reference-key" }, el("span", { class: "swatch reference" }), referenceName) : null);
  const figure = el("figure", { class: `chart-figure ${className}` },
    el("figcaption", {}, `${title}: `, now),
    el("div", { class: "plot" }, yAxis, frame, el("span"), xAxis),
    legend);

  /** Where the pointer is, as a fraction of the width; null: nowhere. */
  let pointer = null;
  /** The points last drawn, and the reference, for the tooltip. */
  let drawn = { points: [], mark: null, start: 0, end: 1, top: 1 };

  function showTip() {
    const { points, mark, start, end, top } = drawn;
    if (pointer === null || points.length === 0) {
      tip.hidden = true;
      dot.hidden = true;
      cursor.style.display = "none";
      return;
    }
    const at = start + pointer * (end - start);
    const point = points.reduce((best, p) => (Math.abs(p.at - at) < Math.abs(best.at - at) ? p : best));
    const x = (point.at - start) / (end - start);
    const y = 1 - point.value / top;
    cursor.style.display = "inline";
    cursor.setAttribute("x1", x * width);
    cursor.setAttribute("x2", x * width);
    dot.hidden = false;
    dot.style.left = `${x * 100}%`;
    dot.style.top = `${y * 100}%`;
    tip.hidden = false;
    tip.replaceChildren(
      el("strong", { text: clockSeconds.format(point.at) }),
      el("span", { text: `${series}: ${format(point.value)}` }),
      mark === null ? "" : el("span", { class: "muted", text: `${referenceName}: ${format(mark)}` }),
    );
    tip.classList.toggle("left", x > 0.6);
    tip.style.left = `${x * 100}%`;
  }

  frame.addEventListener("pointermove", (event) => {
    const box = frame.getBoundingClientRect();
    pointer = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    showTip();
  });
  frame.addEventListener("pointerleave", () => {
    pointer = null;
    showTip();
  });
  canvas.addEventListener("focus", () => {
    pointer = 1;
    showTip();
  });
  canvas.addEventListener("blur", () => {
    pointer = null;
    showTip();
  });
  canvas.addEventListener("keydown", (event) => {
    const { points, start, end } = drawn;
    if (pointer === null || points.length === 0) return;
    const at = start + pointer * (end - start);
    let index = points.findIndex((p) => p.at >= at - 1);
    if (index < 0) index = points.length - 1;
    if (event.key === "ArrowLeft") index = Math.max(0, index - 1);
    else if (event.key === "ArrowRight") index = Math.min(points.length - 1, index + 1);
    else if (event.key === "Home") index = 0;
    else if (event.key === "End") index = points.length - 1;
    else return;
    event.preventDefault();
    pointer = (points[index].at - start) / (end - start);
    showTip();
  });

  return {
    root: figure,
    /** Draws `points` ({ at, value }, oldest first) up to `end` (Unix ms). */
    update(points, { reference: mark = null, current, end = Date.now() } = {}) {
      const start = end - HISTORY_SECONDS * 1000;
      const shown = points.filter((p) => p.at >= start);
      const highest = Math.max(1, mark ?? 0, ...shown.map((p) => p.value));
      const step = niceStep(highest * 1.1, 3, whole);
      const top = Math.ceil((highest * 1.1) / step) * step;
      const x = (at) => ((at - start) / (end - start)) * width;
      const y = (v) => height - (v / top) * height;
      const coordinates = shown.map((p) => `${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`);
      line.setAttribute("points", coordinates.join(" "));
      area.setAttribute("points", shown.length
        ? `${x(shown[0].at).toFixed(1)},${height} ${coordinates.join(" ")} ${x(shown.at(-1).at).toFixed(1)},${height}`
        : "");
      reference.style.display = mark === null ? "none" : "";
      if (mark !== null) {
        reference.setAttribute("y1", y(mark));
        reference.setAttribute("y2", y(mark));
      }

      // Value ticks: 0, step, 2 step… up to the top.
      const values = [];
      for (let v = 0; v <= top + step / 1e6; v += step) values.push(v);
      // Time ticks: every five minutes of the clock.
      const times = [];
      const every = 5 * 60 * 1000;
      for (let t = Math.ceil(start / every) * every; t <= end; t += every) times.push(t);
      grid.replaceChildren(
        ...values.map((v) => svg("line", { x1: 0, x2: width, y1: y(v), y2: y(v) })),
        ...times.map((t) => svg("line", { x1: x(t), x2: x(t), y1: 0, y2: height })),
      );
      // Placed through the style object: the page's CSP refuses style attributes.
      const label = (text, side, fraction) => {
        const node = el("span", { text });
        node.style[side] = `${fraction * 100}%`;
        // A time at either end stays inside the chart.
        if (side === "left") node.classList.toggle("end", fraction > 0.9);
        if (side === "left") node.classList.toggle("start", fraction < 0.1);
        return node;
      };
      yAxis.replaceChildren(...values.map((v) => label(format(v), "top", 1 - v / top)));
      xAxis.replaceChildren(...times.map((t) => label(clock.format(t), "left", (t - start) / (end - start))));
      legend.querySelector(".reference-key")?.toggleAttribute("hidden", mark === null);

      drawn = { points: shown, mark, start, end, top };
      showTip();
      setText(now, current);
      canvas.setAttribute("aria-label", `${title} over the last ${HISTORY_SECONDS / 60} minutes; now ${current}`);
    },
  };
}

function stat(label) {
  const value = el("dd");
  return { root: el("div", { class: "stat" }, el("dt", { text: label }), value), value };
}

function limitPage(name) {
  const active = activeSwitch(name);
  const description = el("p", { class: "description" });
  const stats = {
    slots: stat("Slots"),
    held: stat("Held"),
    decaying: stat("Decaying"),
    waiting: stat("Waiting"),
    rate: stat("Admitted rate"),
    granted: stat("Granted"),
  };
  const occupancy = chart("Occupancy", "occupancy", { series: "occupied slots", referenceName: "slots" });
  const waiting = chart("Waiting", "waiting", { series: "requests waiting", whole: true });
  const grants = chart("Grants per second", "grants", {
    series: "grants/s",
    referenceName: "configured rate",
    format: (v) => formatNumber(Math.round(v * 10) / 10),
  });
  const leaseRows = el("tbody");
  const waiterRows = el("tbody");
  const instanceRows = el("tbody");
  const instanceTitle = el("h2", { id: "instances-title" });
  const instancesPanel = el("section", { class: "panel", "aria-labelledby": "instances-title", hidden: true },
    instanceTitle,
    el("p", { class: "hint", text: "Each key gets its own limit with the template's settings, made when first used and dropped when idle. The busiest first." }));
  const instanceOf = el("p", { class: "hint instance-of", hidden: true });
  const adaptiveNote = el("p", { class: "hint adaptive-note", hidden: true });
  const leaseTitle = el("h2", { id: "leases-title" });
  const waiterTitle = el("h2", { id: "queue-title" });
  const queueNote = el("p", { class: "hint queue-note", id: "queue-note", hidden: true });
  const pauseText = el("span", { id: "pause-text" });
  const pauseBanner = el(
    "div",
    { class: "pause-banner", role: "status", hidden: true },
    pauseText,
    el("button", { type: "button", class: "small admin-only", text: "Resume now", onclick: () => resumeLimit(name) }),
  );
  const body = el(
    "div",
    {},
    el("div", { class: "heading" }, el("h1", { text: name }), el("span", { class: "switch" }, active.root, "Active"),
      el("button", { type: "button", class: "pause-button", "aria-label": `Pause ${name}`, text: "Pause…", onclick: () => openPauseForm(name) }),
      actionButtons(name)),
    pauseBanner,
    adaptiveNote,
    instanceOf,
    description,
    el("dl", { class: "summary" }, Object.values(stats).map((s) => s.root)),
    el("div", { class: "charts" }, occupancy.root, waiting.root, grants.root),
    instancesPanel,
    el("section", { class: "panel holders", "aria-labelledby": "leases-title" }, leaseTitle,
      table(["Holder", "Slots", "Age", "Expires in", "Lease"], leaseRows)),
    el("section", { class: "panel holders", "aria-labelledby": "queue-title" }, waiterTitle, queueNote,
      table(["Position", "Holder", "Occupy", "Mode", "Waiting for"], waiterRows)),
  );
  instancesPanel.append(table(["Key", "Held", "Decaying", "Waiting", "Paused"], instanceRows));
  const missing = el("p", { class: "empty" });
  const root = el(
    "section",
    {},
    el("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, el("a", { href: "#/", text: "Limits" }), ` / ${name}`),
    body,
    missing,
  );

  function table(columns, rows) {
    return el("table", { class: "cards" },
      el("thead", {}, el("tr", {}, columns.map((title) => el("th", { scope: "col", text: title })))),
      rows);
  }

  function cells(labels, values) {
    return el("tr", {}, values.map((value, i) => el("td", { "data-label": labels[i], text: value })));
  }

  return {
    root,
    update() {
      const entry = store.limits.get(name);
      const gone = store.detail?.missing || (!entry && store.events !== null);
      body.hidden = !entry;
      missing.hidden = Boolean(entry);
      setText(missing, gone ? `There is no limit named “${name}”.` : "Loading…");
      if (!entry) return;
      const { limit } = entry;
      const samples = store.history.get(name) ?? [];
      const rate = isRateLimit(limit);
      const decayingSlots = decayingNow(entry);
      active.update(limit);
      instancesPanel.hidden = !limit.template;
      for (const panel of root.querySelectorAll(".holders")) panel.hidden = Boolean(limit.template);
      instanceOf.hidden = !limit.instance_of;
      adaptiveNote.hidden = !limit.adaptive;
      if (limit.adaptive) {
        const a = limit.adaptive;
        const what = rate ? "/s" : " slots";
        const configured = rate ? limit.slot_decay_per_second : limit.slots;
        const state = a.scale >= 1
          ? `at its configured ${formatNumber(configured)}${what}`
          : `${formatNumber(Math.round(a.effective * 10) / 10)}${what} in force of ${formatNumber(configured)}${what} configured, climbing back`;
        setText(adaptiveNote, `Adaptive: ${state}. Each report of throttling multiplies it by ${a.decrease_factor}; it recovers fully over ${formatNumber(a.recovery_seconds)} s.`);
      }
      if (limit.instance_of) {
        instanceOf.replaceChildren("A key of template ", el("a", { href: limitHash(limit.instance_of), text: limit.instance_of }),
          ": its settings are the template's; it is dropped when idle.");
      }
      if (limit.template) {
        const shown = store.detail?.instances ?? [];
        setText(instanceTitle, `Instances (${formatNumber(limit.template.instances)} of at most ${formatNumber(limit.template.max_instances)})`);
        instanceRows.replaceChildren(...shown.map((instance) => el("tr", {},
          el("td", { "data-label": "Key" }, el("a", { href: limitHash(instance.name), text: instance.name })),
          el("td", { "data-label": "Held", text: formatNumber(instance.held) }),
          el("td", { "data-label": "Decaying", text: instance.decaying.toFixed(2) }),
          el("td", { "data-label": "Waiting", text: formatNumber(instance.waiting) }),
          el("td", { "data-label": "Paused", text: pauseNow(instance) ? formatDuration(pauseNow(instance).until - Date.now()) : "–" }))));
        if (shown.length === 0) instanceRows.append(el("tr", {}, el("td", { colspan: 5, class: "empty", text: "No key is in use." })));
      }
      const pause = pauseNow(limit);
      pauseBanner.hidden = !pause;
      if (pause) {
        const left = formatDuration(pause.until - Date.now());
        const since = formatDuration(Date.now() - pause.since);
        const inactive = limit.active ? "" : " It is inactive, so the pause holds nothing back until it is activated.";
        setText(pauseText, `Paused: nothing is granted for ${left} more. ${pause.reason ?? "No reason given"} — reported by ${pause.reporter ?? "someone"} ${since} ago.${inactive}`);
      }
      setText(description, limit.description ?? "");
      setText(stats.slots.value, formatNumber(limit.slots) + (rate ? ` (+${formatNumber(limit.slot_decay_per_second)}/s)` : "") + (limit.template ? " per key" : ""));
      setText(stats.held.value, formatNumber(limit.held));
      setText(stats.decaying.value, rate ? decayingSlots.toFixed(2) : "–");
      setText(stats.waiting.value, `${formatNumber(limit.waiting)}` + (limit.waiting_slots > limit.waiting ? ` (${formatNumber(limit.waiting_slots)} slots)` : ""));
      const admitted = admittedRate(samples);
      setText(stats.rate.value, admitted === null
        ? "…"
        : `${formatNumber(Math.round(admitted * 10) / 10)}/s` + (rate ? ` of ${formatNumber(limit.slot_decay_per_second)}/s` : ""));
      setText(stats.granted.value, formatNumber(limit.counters.granted_total));

      const occupied = limit.held + decayingSlots;
      const series = (key) => samples.map((s) => ({ at: s.at, value: s[key] }));
      occupancy.update(series("occupancy"), limit.template
        ? { reference: null, current: `${formatNumber(Math.round(occupied * 10) / 10)} over all keys` }
        : { reference: limit.slots, current: `${formatNumber(Math.round(occupied * 10) / 10)} of ${formatNumber(limit.slots)} slots` });
      waiting.update(series("waiting"), { current: `${formatNumber(limit.waiting)} waiting` });
      const perSecond = grantsPerSecond(samples);
      grants.update(perSecond, {
        reference: rate ? limit.slot_decay_per_second : null,
        current: `${formatNumber(Math.round((perSecond.at(-1)?.value ?? 0) * 10) / 10)}/s` + (rate ? ` (configured ${formatNumber(limit.slot_decay_per_second)}/s)` : ""),
      });

      const detail = store.detail ?? { leases: [], waiters: [] };
      const now = Date.now();
      const leases = [...detail.leases].sort((a, b) => a.granted_at - b.granted_at);
      setText(leaseTitle, `Leases (${leases.length})`);
      leaseRows.replaceChildren(
        ...leases.map((lease) => cells(["Holder", "Slots", "Age", "Expires in", "Lease"], [
          lease.holder ?? "—",
          formatNumber(lease.occupy),
          formatDuration(now - lease.granted_at),
          formatDuration(lease.expires_at - now),
          lease.id.slice(0, 8),
        ])),
      );
      if (leases.length === 0) leaseRows.append(el("tr", {}, el("td", { colspan: 5, class: "empty", text: "Nobody holds a slot." })));
      setText(waiterTitle, `Waiting queue (${detail.waiters.length})`);
      waiterRows.replaceChildren(
        ...detail.waiters.map((waiter, index) => cells(["Position", "Holder", "Occupy", "Mode", "Waiting for"], [
          String(index + 1),
          waiter.holder ?? "—",
          formatNumber(waiter.occupy),
          waiter.mode === "rate_limit" ? "rate limit" : "concurrency",
          formatDuration(now - waiter.enqueued_at),
        ])),
      );
      if (detail.waiters.length === 0) waiterRows.append(el("tr", {}, el("td", { colspan: 5, class: "empty", text: "Nobody is waiting." })));
      const why = whyWaiting(store.limits.get(name), detail.waiters);
      queueNote.hidden = !why;
      setText(queueNote, why ?? "");
    },
  };
}

// ---------------------------------------------------------------- dialogs and actions

function toast(message, isError = false) {
  const node = $("#toast");
  node.classList.toggle("error", isError);
  node.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (node.textContent = ""), isError ? 8000 : 4000);
}

function confirmDeactivate(name) {
  const text = `While inactive, ${name} enforces nothing: every request on it is granted at once, and waiters are let through now. Leases held keep counting.`;
  return confirmAction(`Deactivate ${name}?`, text, "Deactivate");
}

/** Asks before a change that lets more through (deactivating) or that
 *  leaves more held than the new slot count; true: go on. */
async function confirmChange(name, body) {
  const limit = store.limits.get(name)?.limit;
  if (!limit) return true;
  if (limit.active && body.active === false && !(await confirmDeactivate(name))) return false;
  if (typeof body.slots === "number" && body.slots < limit.held) {
    const text = `${formatNumber(limit.held)} slots of ${name} are held now. Their leases are not revoked: nobody else is granted until fewer than ${formatNumber(body.slots)} are held.`;
    return confirmAction(`Lower ${name} to ${formatNumber(body.slots)} slots?`, text, "Lower slots");
  }
  return true;
}

function confirmAction(title, text, label) {
  const dialog = $("#confirm-dialog");
  setText($("#confirm-title"), title);
  setText($("#confirm-text"), text);
  setText($("#confirm-ok"), label);
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) =>
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true }));
}

/** Asks for how long and why, then pauses the limit. A client token may. */
function openPauseForm(name) {
  const dialog = $("#pause-dialog");
  dialog.dataset.name = name;
  setText($("#pause-title"), `Pause ${name}`);
  $("#pause-error").hidden = true;
  $("#p-seconds").value = "60";
  $("#p-reason").value = "";
  dialog.showModal();
}

async function submitPauseForm(event) {
  event.preventDefault();
  const dialog = $("#pause-dialog");
  const name = dialog.dataset.name;
  const seconds = Number($("#p-seconds").value.trim());
  const error = $("#pause-error");
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 604800) {
    setText(error, "Enter a number of seconds above 0, at most 604800 (7 days).");
    error.hidden = false;
    $("#p-seconds").focus();
    return;
  }
  const reason = $("#p-reason").value.trim();
  try {
    answered(await api("POST", `${limitPath(name)}/pause`, { seconds, ...(reason ? { reason, reporter: "web UI" } : { reporter: "web UI" }) }));
    dialog.close();
    toast(`${name} is paused for ${formatDuration(seconds * 1000)}.`);
  } catch (failure) {
    setText(error, failure.message);
    error.hidden = false;
  }
}

async function resumeLimit(name) {
  try {
    answered(await api("POST", `${limitPath(name)}/resume`));
    toast(`${name} was resumed.`);
  } catch (error) {
    toast(error.message, true);
  }
}

async function resetLimit(name) {
  const text = `Every lease on ${name} is revoked (holders find out when they next renew) and its decaying slots are cleared. Waiters stay queued.`;
  if (!(await confirmAction(`Reset ${name}?`, text, "Reset"))) return;
  try {
    answered(await api("POST", `${limitPath(name)}/reset`));
    toast(`${name} was reset.`);
  } catch (error) {
    toast(error.message, true);
  }
}

async function deleteLimit(name) {
  const text = `Its leases end, and requests waiting on it fail with limit_deleted. This cannot be undone.`;
  if (!(await confirmAction(`Delete ${name}?`, text, "Delete"))) return;
  try {
    await api("DELETE", limitPath(name));
    store.limits.delete(name);
    toast(`${name} was deleted.`);
    if (store.detail?.name === name) location.hash = "#/";
    else scheduleUpdate();
  } catch (error) {
    toast(error.message, true);
  }
}

const FIELDS = ["name", "slots", "slot_decay_per_second", "description"];

/** The editing limit's name, or null when creating one. */
let editing = null;

function clearFormErrors() {
  for (const field of FIELDS) {
    $(`#f-${field}`).removeAttribute("aria-invalid");
    const message = $(`#f-${field}-error`);
    message.hidden = true;
    message.textContent = "";
  }
  $("#limit-form-error").hidden = true;
}

/** What is wrong with the form's fields, in words a person uses: field ->
 *  sentence, every field at once. The server checks again; these are the
 *  same rules (names, bounds) told before asking it. */
function formProblems(creating) {
  const problems = {};
  if (creating) {
    const name = $("#f-name").value.trim();
    const bad = [...name].find((c) => !/[A-Za-z0-9._:-]/.test(c));
    if (name === "") problems.name = "Give the limit a name.";
    else if (name.length > 128) problems.name = `A name has at most 128 characters; this one has ${name.length}.`;
    else if (bad !== undefined) problems.name = `A name may hold letters, digits and . _ - : only, not “${bad}”.`;
    else if (name === "." || name === "..") problems.name = "“.” and “..” cannot be names.";
  }
  const slots = $("#f-slots").value.trim();
  if (slots === "") {
    if (creating) problems.slots = "Say how many slots: a whole number, 0 or more.";
  } else if (!/^\d+$/.test(slots)) {
    problems.slots = `Slots are a whole number, 0 or more, not “${slots}”.`;
  } else if (Number(slots) > 1e15) {
    problems.slots = "Slots can be at most 1 000 000 000 000 000.";
  }
  const decay = $("#f-slot_decay_per_second").value.trim();
  if (decay !== "" && !(Number.isFinite(Number(decay)) && Number(decay) >= 0)) {
    problems.slot_decay_per_second = `Decay is a number of slots per second, 0 or more, not “${decay}”.`;
  } else if (Number(decay) > 1e9) {
    problems.slot_decay_per_second = "Decay can be at most 1 000 000 000 per second.";
  }
  if (new TextEncoder().encode($("#f-description").value).length > 1024) {
    problems.description = "A description has at most 1 024 bytes.";
  }
  return problems;
}

/** Shows each problem next to its field, and focuses the first. */
function showFormProblems(problems) {
  let first = null;
  for (const [field, text] of Object.entries(problems)) {
    const input = $(`#f-${field}`);
    input.setAttribute("aria-invalid", "true");
    const message = $(`#f-${field}-error`);
    message.textContent = text;
    message.hidden = false;
    first ??= input;
  }
  first?.focus();
}

function showFormError(error) {
  const input = error.field && FIELDS.includes(error.field) ? $(`#f-${error.field}`) : null;
  if (input) {
    showFormProblems({ [error.field]: error.message });
  } else {
    const message = $("#limit-form-error");
    message.textContent = error.message;
    message.hidden = false;
  }
}

function openLimitForm(name) {
  editing = name;
  const form = $("#limit-form");
  form.reset();
  clearFormErrors();
  const limit = name === null ? null : store.limits.get(name)?.limit;
  setText($("#limit-title"), name === null ? "New limit" : `Edit ${name}`);
  setText($("#limit-submit"), name === null ? "Create" : "Save");
  $("#f-name").value = limit?.name ?? "";
  $("#f-name").disabled = name !== null;
  $("#f-slots").value = limit ? String(limit.slots) : "";
  $("#f-slot_decay_per_second").value = limit ? String(limit.slot_decay_per_second) : "0";
  $("#f-description").value = limit?.description ?? "";
  $("#f-active").checked = limit?.active ?? true;
  $("#limit-dialog").showModal();
  (name === null ? $("#f-name") : $("#f-slots")).focus();
}

/** A number field's value: a number when it reads as one, else the text as
 *  typed, so that the server's own validation names what is wrong. */
function numberField(id) {
  const text = $(id).value.trim();
  if (text === "") return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}

async function submitLimitForm(event) {
  event.preventDefault();
  clearFormErrors();
  const problems = formProblems(editing === null);
  if (Object.keys(problems).length > 0) {
    showFormProblems(problems);
    return;
  }
  const body = {
    slots: numberField("#f-slots"),
    slot_decay_per_second: numberField("#f-slot_decay_per_second"),
    description: $("#f-description").value,
    active: $("#f-active").checked,
  };
  const submit = $("#limit-submit");
  submit.disabled = true;
  try {
    let limit;
    if (editing === null) {
      if (body.description === "") delete body.description;
      limit = await api("POST", "/v1/limits", { name: $("#f-name").value.trim(), ...body });
      toast(`Created ${limit.name}.`);
    } else {
      if (!(await confirmChange(editing, body))) return;
      limit = await api("PATCH", limitPath(editing), body);
      toast(`Saved ${limit.name}.`);
    }
    answered(limit);
    $("#limit-dialog").close();
  } catch (error) {
    showFormError(error);
  } finally {
    submit.disabled = false;
  }
}

function askForToken(message) {
  store.tokenRequired = true;
  updateTokenButton();
  const dialog = $("#token-dialog");
  const error = $("#token-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("#token-input").setAttribute("aria-invalid", message ? "true" : "false");
  if (!dialog.open) dialog.showModal();
  $("#token-input").focus();
}

function submitToken(event) {
  event.preventDefault();
  const token = $("#token-input").value.trim();
  if (!token) {
    askForToken("Enter a token.");
    return;
  }
  store.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token-input").value = "";
  $("#token-dialog").close();
  updateTokenButton();
  connect();
}

function updateTokenButton() {
  const button = $("#forget-token");
  button.hidden = !store.token && !store.tokenRequired;
  setText(button, store.token ? "Forget token" : "Enter token");
}

function tokenButtonClicked() {
  if (!store.token) {
    askForToken(null);
    return;
  }
  store.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  updateTokenButton();
  connect();
}

// ---------------------------------------------------------------- start

$("#limit-form").addEventListener("submit", submitLimitForm);
$("#limit-form [data-cancel]").addEventListener("click", () => $("#limit-dialog").close());
$("#token-form").addEventListener("submit", submitToken);
$("#pause-form").addEventListener("submit", submitPauseForm);
$("#pause-form [data-cancel]").addEventListener("click", () => $("#pause-dialog").close());
$("#forget-token").addEventListener("click", tokenButtonClicked);
window.addEventListener("hashchange", () => {
  route();
  $("#main").focus();
});
setInterval(() => {
  sample();
  scheduleUpdate();
  showStaleness();
}, 1000);
updateTokenButton();
route();
connect();
