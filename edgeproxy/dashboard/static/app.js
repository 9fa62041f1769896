// edgeproxy dashboard: polls the admin JSON API with the token from sessionStorage.
// No framework, no inline code (the page's CSP forbids it), text only through
// textContent: stored URLs and tags come from clients and are never markup.
"use strict";

const TOKEN_KEY = "edgeproxy-admin-token";
const POLL_MS = 3000;
const WINDOW_MS = 5 * 60 * 1000; // the chart's span
const PAGE_SIZE = 20;
const MAX_LISTING = 5000; // /entries' limit cap (admin.MAX_LIMIT)

// Outcome rows, as /stats' "outcomes" counts them: every request once, by
// what the client got (the access log's cache outcome).
const OUTCOMES = ["hit", "miss", "stale", "revalidated", "collapsed", "client-304", "bypass"];
// Answered from the cache without the origin, and every request that looked.
const FROM_CACHE = ["hit", "collapsed", "stale", "client-304"];
const LOOKED = [...FROM_CACHE, "miss", "revalidated"];

const $ = (id) => document.getElementById(id);
const num = (v) => (typeof v === "number" && isFinite(v) ? v : 0);
const count = (s, names) => names.reduce((a, n) => a + num((s.outcomes || {})[n]), 0);

const lookups = (s) => count(s, LOOKED);
const cacheAnswered = (s) => count(s, FROM_CACHE);
const requests = (s) => count(s, Object.keys(s.outcomes || {}));

const state = {
  timer: null,
  busy: false,
  workers: new Map(), // Edgeproxy-Worker -> {t, stats, rate, ratio}
  samples: [], // {t, rate, ratio}
  entries: { prefix: "", tag: "", page: 0 },
  dryRun: null, // the purge body a dry run counted, until an input changes
};

// -- API ----------------------------------------------------------------------

class AuthError extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Accept: "application/json", Authorization: "Bearer " + token };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
    credentials: "omit",
  });
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (resp.status === 401) throw new AuthError((data && data.error) || "wrong token");
  if (!resp.ok) throw new Error((data && data.error) || "HTTP " + resp.status);
  return { data, worker: resp.headers.get("Edgeproxy-Worker") || "-" };
}

// -- login ----------------------------------------------------------------------

function showLogin(message) {
  stopPolling();
  sessionStorage.removeItem(TOKEN_KEY);
  $("main-view").hidden = true;
  $("logout").hidden = true;
  $("refresh").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("conn").textContent = "";
  $("token").focus();
}

async function showMain() {
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  $("logout").hidden = false;
  $("refresh").hidden = false;
  await poll();
  if (!$("main-view").hidden) {
    await loadEntries();
    state.timer = setInterval(poll, POLL_MS);
  }
}

function stopPolling() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
}

function handleError(err, where) {
  if (err instanceof AuthError) {
    showLogin(err.message);
    return;
  }
  (where || $("api-error")).textContent = err.message;
}

// -- polling --------------------------------------------------------------------

async function poll() {
  if (state.busy) return;
  state.busy = true;
  try {
    const [stats, config, status] = await Promise.all([
      api("/stats"),
      api("/config"),
      api("/dashboard/status"),
    ]);
    $("api-error").textContent = "";
    noteStats(stats.data, stats.worker, performance.now());
    renderStats(stats.data, status.data);
    renderConfig(config.data);
    renderOrigins(status.data.origins);
    renderPurges(status.data.purges);
    $("conn").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    handleError(err);
  } finally {
    state.busy = false;
  }
}

// Counters are per worker process (any worker may answer): rates come from the
// same worker's previous poll, and the totals add each worker's latest rate.
function noteStats(stats, worker, t) {
  const prev = state.workers.get(worker);
  const dt = prev ? (t - prev.t) / 1000 : 0;
  if (prev && dt <= 0) return; // no time passed: keep the baseline for the next poll
  const entry = { t, stats, rate: 0, ratio: null };
  // Counters going down: that worker restarted; this poll is its new baseline.
  if (prev && requests(stats) >= requests(prev.stats)) {
    const dLookups = lookups(stats) - lookups(prev.stats);
    entry.rate = (requests(stats) - requests(prev.stats)) / dt;
    entry.ratio = dLookups > 0 ? (cacheAnswered(stats) - cacheAnswered(prev.stats)) / dLookups : null;
  }
  state.workers.set(worker, entry);
  for (const [w, e] of state.workers) if (t - e.t > 10 * POLL_MS) state.workers.delete(w);
  if (!prev) return; // the first poll of a worker gives no rate yet
  let rate = 0;
  let weighted = 0;
  let weight = 0;
  for (const e of state.workers.values()) {
    rate += e.rate;
    if (e.ratio !== null) {
      weighted += e.ratio * Math.max(e.rate, 1e-9);
      weight += Math.max(e.rate, 1e-9);
    }
  }
  const ratio = weight > 0 ? weighted / weight : null;
  state.samples.push({ t, rate, ratio });
  while (state.samples.length && t - state.samples[0].t > WINDOW_MS) state.samples.shift();
  $("req-rate").textContent = rate.toFixed(rate < 10 ? 2 : 0);
  $("hit-ratio").textContent = ratio === null ? "no lookups" : (100 * ratio).toFixed(1) + "%";
  drawChart(t);
}

function drawChart(now) {
  const w = 600;
  const h = 150;
  const top = 10;
  const peak = Math.max(1, ...state.samples.map((s) => s.rate));
  // The x axis spans the samples held (at least a minute, at most the window),
  // so a freshly opened page draws a line, not a dot at the right edge.
  const span = Math.min(WINDOW_MS, Math.max(60000, now - state.samples[0].t));
  $("window").textContent = span >= 60000 ? Math.round(span / 60000) + " min" : "";
  const x = (t) => ((w * (t - (now - span))) / span).toFixed(1);
  const y = (v) => (h - (h - top) * v).toFixed(1);
  $("rate-line").setAttribute("points", state.samples.map((s) => x(s.t) + "," + y(s.rate / peak)).join(" "));
  $("ratio-line").setAttribute(
    "points",
    state.samples.filter((s) => s.ratio !== null).map((s) => x(s.t) + "," + y(s.ratio)).join(" ")
  );
  $("chart").dataset.samples = String(state.samples.length);
  $("rate-peak").textContent = peak.toFixed(peak < 10 ? 2 : 0);
}

function renderStats(stats, status) {
  const body = $("outcomes").tBodies[0];
  body.replaceChildren();
  for (const label of OUTCOMES) {
    const row = body.insertRow();
    row.id = "outcome-" + label;
    row.insertCell().textContent = label;
    const cell = row.insertCell();
    cell.className = "num";
    cell.textContent = String(count(stats, [label]));
  }
  const extra = body.insertRow();
  extra.insertCell().textContent = "origin requests";
  const cell = extra.insertCell();
  cell.className = "num";
  cell.textContent = String(num(stats.origin_requests));

  const limit = status.cache.size_limit;
  $("cache-size").textContent = bytes(num(stats.bytes)) + " / " + bytes(limit);
  $("cache-meter").style.width = Math.min(100, (100 * num(stats.bytes)) / Math.max(1, limit)) + "%";
  $("cache-entries").textContent = num(stats.entries) + " stored responses";
}

function renderConfig(config) {
  $("config-version").textContent = "v" + config.version;
  $("config-loaded").textContent =
    "loaded " + when(config.loaded_at) + (config.trigger ? " (" + config.trigger + ")" : "");
  $("config-error").textContent = config.last_error
    ? "last reload failed " + when(config.last_error_at) + ": " + config.last_error
    : "";
}

function renderOrigins(origins) {
  const body = $("origins").tBodies[0];
  body.replaceChildren();
  for (const [name, servers] of Object.entries(origins)) {
    for (const s of servers) {
      const row = body.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = s.server;
      const st = row.insertCell();
      st.textContent = !s.up ? "down" + (s.down_for !== null ? " " + s.down_for + "s" : "")
        : s.probation ? "probation" : "up";
      st.className = s.up ? (s.probation ? "warn" : "ok") : "bad";
      row.insertCell().textContent = String(s.failures);
      row.insertCell().textContent = String(s.inflight);
    }
  }
}

function renderPurges(purges) {
  const body = $("purges").tBodies[0];
  body.replaceChildren();
  for (const p of purges) {
    const row = body.insertRow();
    row.insertCell().textContent = when(p.at);
    row.insertCell().textContent = p.kind + " " + p.target;
    row.insertCell().textContent = p.soft ? "soft" : "hard";
    row.insertCell().textContent = String(p.purged);
  }
}

// -- entries ------------------------------------------------------------------

async function loadEntries() {
  const { prefix, tag, page } = state.entries;
  const limit = Math.min((page + 1) * PAGE_SIZE, MAX_LISTING);
  const params = new URLSearchParams({ limit: String(limit) });
  if (prefix) params.set("prefix", prefix);
  if (tag) params.set("tag", tag);
  let answer;
  try {
    answer = (await api("/entries?" + params.toString())).data;
  } catch (err) {
    handleError(err);
    return;
  }
  const shown = answer.entries.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
  const body = $("entries").tBodies[0];
  body.replaceChildren();
  for (const e of shown) {
    const row = body.insertRow();
    row.className = "entry";
    const url = row.insertCell();
    url.className = "url";
    url.textContent = e.url;
    const vary = Object.entries(e.vary || {}).map(([k, v]) => k + "=" + (v === null ? "" : v));
    if (vary.length) url.title = "vary: " + vary.join(" ");
    row.insertCell().textContent = String(e.status);
    row.insertCell().textContent = String(e.age);
    row.insertCell().textContent = e.soft_purged ? "soft-purged" : String(e.ttl);
    row.insertCell().textContent = bytes(e.size);
    row.insertCell().textContent = (e.tags || []).join(" ");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "purge-entry";
    button.textContent = "Purge";
    button.dataset.url = e.url;
    row.insertCell().append(button);
  }
  const more = answer.truncated && limit < MAX_LISTING;
  const first = shown.length ? page * PAGE_SIZE + 1 : 0;
  $("page-info").textContent = shown.length
    ? "entries " + first + "-" + (first + shown.length - 1) + (more ? " (more)" : "")
    : "no entries";
  $("prev").disabled = page === 0;
  $("next").disabled = !more;
}

async function purgeEntry(url) {
  try {
    const { data } = await api("/purge", { method: "POST", body: { url } });
    $("purge-result").textContent = "purged " + data.purged + " stored response(s) of " + url;
  } catch (err) {
    handleError(err, $("purge-result"));
  }
  await loadEntries();
  await poll();
}

// -- purge form ---------------------------------------------------------------

function purgeBody() {
  const kind = $("purge-kind").value;
  const body = { [kind]: $("purge-value").value.trim() };
  if ($("purge-soft").checked) body.soft = true;
  return body;
}

async function countPurge(event) {
  event.preventDefault();
  const body = purgeBody();
  state.dryRun = null;
  $("purge-apply").disabled = true;
  try {
    const { data } = await api("/purge", { method: "POST", body: { ...body, dry_run: true } });
    state.dryRun = JSON.stringify(body);
    $("purge-result").textContent = "dry run: would purge " + data.purged + " stored response(s)";
    $("purge-apply").textContent = "Purge " + data.purged + (body.soft ? " (soft)" : "");
    $("purge-apply").disabled = false;
  } catch (err) {
    handleError(err, $("purge-result"));
  }
}

async function applyPurge() {
  const body = purgeBody();
  if (JSON.stringify(body) !== state.dryRun) return; // inputs changed since the count
  $("purge-apply").disabled = true;
  state.dryRun = null;
  try {
    const { data } = await api("/purge", { method: "POST", body });
    $("purge-result").textContent =
      (body.soft ? "soft-purged " : "purged ") + data.purged + " stored response(s)";
  } catch (err) {
    handleError(err, $("purge-result"));
  }
  $("purge-apply").textContent = "Purge";
  await loadEntries();
  await poll();
}

function invalidateDryRun() {
  state.dryRun = null;
  $("purge-apply").disabled = true;
  $("purge-apply").textContent = "Purge";
}

// -- formatting -----------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function when(epochSeconds) {
  return typeof epochSeconds === "number" ? new Date(epochSeconds * 1000).toLocaleString() : "–";
}

// -- wiring ---------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    showMain();
  });
  $("logout").addEventListener("click", () => showLogin(""));
  $("refresh").addEventListener("click", () => poll());
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.entries = { prefix: $("search-prefix").value.trim(), tag: $("search-tag").value.trim(), page: 0 };
    loadEntries();
  });
  $("prev").addEventListener("click", () => {
    state.entries.page = Math.max(0, state.entries.page - 1);
    loadEntries();
  });
  $("next").addEventListener("click", () => {
    state.entries.page += 1;
    loadEntries();
  });
  $("entries").tBodies[0].addEventListener("click", (event) => {
    const button = event.target.closest("button.purge-entry");
    if (button) purgeEntry(button.dataset.url);
  });
  $("purge-form").addEventListener("submit", countPurge);
  $("purge-apply").addEventListener("click", applyPurge);
  for (const el of $("purge-form").querySelectorAll("input, select")) {
    el.addEventListener("input", invalidateDryRun);
    el.addEventListener("change", invalidateDryRun);
  }
  if (sessionStorage.getItem(TOKEN_KEY)) showMain();
  else showLogin("");
});
