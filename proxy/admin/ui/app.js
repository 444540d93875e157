// switchyard's dashboard: plain JavaScript, no build step, nothing from another host.
// It reads the admin API like any client (GET /v1/dashboard, /v1/dashboard/services/{s},
// /v1/events) and acts only through POST/PUT/DELETE with the bearer token, kept in this tab's
// sessionStorage. Views are addressed by the URL's hash, so every service and instance has a
// link that can be shared: #/services?q=&state=&sort=&order=, #/service/NAME?state=&tag=&q=&sort=&order=&page=,
// #/service/NAME/instance/ID, #/events.
"use strict";

const TOKEN_KEY = "switchyard.token";
const PAGE = 100;
const STATES = ["healthy", "unhealthy", "unknown", "draining", "ejected", "stale"];

const $ = (id) => document.getElementById(id);
let overview = null;       // the last GET /v1/dashboard
let events = [];           // the recent events, newest last
let lastEventId = null;    // for Last-Event-ID on reconnect
let refreshTimer = null;
let renderGen = 0;         // a view is drawn only by the latest render (an older one may finish later)
const stale = (gen) => gen !== renderGen;

// ---- small DOM helpers (text only: nothing from the registry is ever parsed as HTML) ----
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const num = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const ms = (v) => (v === null || v === undefined ? "–" : Number(v) < 10 ? Number(v).toFixed(2) : Number(v).toFixed(0));
function ago(msAgo) {
  if (msAgo === null || msAgo === undefined) return "–";
  const s = Math.round(msAgo / 1000);
  return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago";
}
function say(text) { $("status").textContent = text; }

// ---- the admin API ----
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}
async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}), cache: "no-store" };
  if (body) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  if (r.status === 401) {
    askToken("This call needs the admin token.");
    throw new Error("the admin token is needed (401)");
  }
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && data.message) || method + " " + path + ": HTTP " + r.status);
  return data;
}

// ---- routing by hash ----
function route() {
  const hash = location.hash.replace(/^#/, "") || "/services";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params };
}
function link(parts, params) {
  const p = "#/" + parts.map(encodeURIComponent).join("/");
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString() : "";
  return q ? p + "?" + q : p;
}
function setParams(changes) {
  const { parts, params } = route();
  const next = Object.fromEntries(params.entries());
  Object.assign(next, changes);
  location.hash = link(parts, next);
}

async function render() {
  const gen = ++renderGen;
  const { parts } = route();
  const onEvents = parts[0] === "events";
  $(onEvents ? "tab-events" : "tab-services").setAttribute("aria-current", "page");
  $(onEvents ? "tab-services" : "tab-events").removeAttribute("aria-current");
  try {
    if (parts[0] === "service" && parts[1] && parts[2] === "instance" && parts[3]) await renderInstance(gen, parts[1], parts[3]);
    else if (parts[0] === "service" && parts[1]) await renderService(gen, parts[1]);
    else if (parts[0] === "events") renderEvents();
    else await renderServices(gen);
  } catch (e) {
    say(String(e.message || e));
  }
}

// ---- header: registry status and banners ----
function renderHeader() {
  if (!overview) return;
  const reg = overview.registry || {};
  $("registry").textContent = "registry: " + (reg.backend || "") + (reg.status && reg.status !== reg.backend ? " (" + reg.status + ")" : "") +
    " · " + (reg.instances ?? 0) + " instances · " + (overview.version || "");
  const box = $("banners");
  box.replaceChildren(...(overview.banners || []).map((b) =>
    el("div", { class: "banner" + (b.kind === "self_preservation" ? "" : " bad"), "data-kind": b.kind },
      el("strong", {}, b.message),
      b.errors && b.errors.length ? el("pre", {}, b.errors.join("\n")) : null)));
}

async function loadOverview() {
  overview = await api("GET", "/v1/dashboard");
  renderHeader();
  return overview;
}

// ---- a sortable table ----
// columns: [{key, label, num?, cell(row) → Node|string}]; sort: {key, order}; onSort(key).
function table(caption, columns, rows, sort, onSort, rowId) {
  const head = el("tr", {}, columns.map((c) => {
    const sorted = sort && sort.key === c.key;
    return el("th", { scope: "col", class: c.num ? "num" : "", "aria-sort": sorted ? (sort.order === "desc" ? "descending" : "ascending") : (c.sortable === false ? null : "none") },
      c.sortable === false ? c.label : el("button", { type: "button", onclick: () => onSort(c.key), "aria-label": "sort by " + c.label }, c.label));
  }));
  const body = rows.map((r) => el("tr", { "data-id": rowId ? rowId(r) : null },
    columns.map((c) => el("td", { class: c.num ? "num" : c.key === "why" ? "why" : "" }, c.cell(r)))));
  return el("table", {}, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, body));
}
function stateCell(state) { return el("span", { class: "state " + state }, state); }

// ---- services ----
async function renderServices(gen) {
  const { params } = route();
  const ov = await loadOverview();
  if (stale(gen)) return;
  const q = params.get("q") || "", state = params.get("state") || "";
  const sort = { key: params.get("sort") || "name", order: params.get("order") || "asc" };
  let rows = ov.services.filter((s) => (!q || s.name.includes(q)) && (!state || (s.states[state] || 0) > 0));
  const t = (s) => s.traffic || {};
  const keyOf = {
    name: (s) => s.name, instances: (s) => s.instances, healthy: (s) => s.states.healthy || 0,
    unhealthy: (s) => s.states.unhealthy || 0, other: (s) => s.instances - (s.states.healthy || 0) - (s.states.unhealthy || 0),
    req_s: (s) => t(s).req_s ?? -1, err5xx_s: (s) => t(s).err5xx_s ?? -1, p50_ms: (s) => t(s).p50_ms ?? -1,
    p99_ms: (s) => t(s).p99_ms ?? -1, lb: (s) => s.lb, rate_limit: (s) => s.rate_limit, source: (s) => s.source,
  };
  const kf = keyOf[sort.key] || keyOf.name;
  rows.sort((a, b) => (kf(a) < kf(b) ? -1 : kf(a) > kf(b) ? 1 : 0));
  if (sort.order === "desc") rows.reverse();
  const onSort = (key) => setParams({ sort: key, order: sort.key === key && sort.order === "asc" ? "desc" : "asc" });
  const columns = [
    { key: "name", label: "Service", cell: (s) => el("a", { href: link(["service", s.name]) }, s.name) },
    { key: "instances", label: "Instances", num: true, cell: (s) => s.instances },
    { key: "healthy", label: "Healthy", num: true, cell: (s) => s.states.healthy || 0 },
    { key: "unhealthy", label: "Unhealthy", num: true, cell: (s) => s.states.unhealthy || 0 },
    { key: "other", label: "Other", num: true, cell: (s) => Object.entries(s.states).filter(([k]) => k !== "healthy" && k !== "unhealthy").map(([k, v]) => k + " " + v).join(", ") || "0" },
    { key: "req_s", label: "req/s", num: true, cell: (s) => num(t(s).req_s) },
    { key: "err5xx_s", label: "5xx/s", num: true, cell: (s) => num(t(s).err5xx_s, 2) },
    { key: "p50_ms", label: "p50 ms", num: true, cell: (s) => ms(t(s).p50_ms) },
    { key: "p99_ms", label: "p99 ms", num: true, cell: (s) => ms(t(s).p99_ms) },
    { key: "lb", label: "Policy", cell: (s) => s.lb },
    { key: "rate_limit", label: "Rate limit", cell: (s) => s.rate_limit || "–" },
    { key: "routes", label: "Routes", sortable: false, cell: (s) => s.routes.map((r) => (r.host || "*") + (r.path_prefix || "/")).join(" ") || "Host: " + s.name },
    { key: "source", label: "Source", cell: (s) => s.source },
  ];
  const filters = el("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    el("label", {}, "Name", el("input", { type: "search", id: "filter-name", value: q, oninput: debounce((e) => setParams({ q: e.target.value }), 300) })),
    el("label", {}, "Has instances in state", el("select", { id: "filter-state", onchange: (e) => setParams({ state: e.target.value }) },
      el("option", { value: "" }, "any"), STATES.map((s) => el("option", { value: s, selected: s === state }, s)))));
  // The rate-limit policies in force (GET /v1/rate-limits), when there are any.
  const limits = await api("GET", "/v1/rate-limits?keys=0");
  if (stale(gen)) return;
  const limitColumns = [
    { key: "name", label: "Policy", cell: (l) => l.name }, { key: "rate", label: "Rate", cell: (l) => l.rate },
    { key: "burst", label: "Burst", num: true, cell: (l) => l.burst }, { key: "key", label: "Key", cell: (l) => l.key },
    { key: "mode", label: "Mode", cell: (l) => l.mode }, { key: "scope", label: "Scope", cell: (l) => l.scope + (l.scope === "global" ? " (1/" + l.proxies + ")" : "") },
    { key: "keys", label: "Keys", num: true, cell: (l) => l.keys + " / " + l.max_keys }, { key: "evictions", label: "Evictions", num: true, cell: (l) => l.evictions },
    { key: "passed", label: "Passed", num: true, cell: (l) => l.passed }, { key: "refused", label: "Refused", num: true, cell: (l) => l.refused },
  ].map((c) => Object.assign(c, { sortable: false }));
  const view = $("view");
  const focused = document.activeElement && document.activeElement.id;
  view.replaceChildren(el("h2", {}, "Services"), filters,
    table(rows.length + " of " + ov.services.length + " services · req/s, 5xx/s and latency over the last minute", columns, rows, sort, onSort, (s) => s.name),
    limits.length ? el("h2", { class: "spaced" }, "Rate limits") : null,
    limits.length ? table("Rate-limit policies: keys in use, requests passed and refused since the policy was made", limitColumns, limits, null, null, (l) => "rate-limit:" + l.name) : null);
  if (focused && $(focused)) $(focused).focus();
}

// ---- one service's instances, a page at a time (filtered and sorted by the proxy) ----
async function renderService(gen, name) {
  const { params } = route();
  const page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);
  const sort = { key: params.get("sort") || "id", order: params.get("order") || "asc" };
  const query = new URLSearchParams({ offset: page * PAGE, limit: PAGE, sort: sort.key, order: sort.order });
  for (const k of ["state", "tag", "q"]) if (params.get(k)) query.set(k, params.get(k));
  const [data] = await Promise.all([api("GET", "/v1/dashboard/services/" + encodeURIComponent(name) + "?" + query), overview ? null : loadOverview()]);
  if (stale(gen)) return;
  const svc = overview && overview.services.find((s) => s.name === name);
  const onSort = (key) => setParams({ sort: key, order: sort.key === key && sort.order === "asc" ? "desc" : "asc", page: 0 });
  const t = (i) => i.traffic || {};
  const columns = [
    { key: "id", label: "Instance", cell: (i) => el("a", { href: link(["service", name, "instance", i.id]) }, i.id) },
    { key: "state", label: "State", cell: (i) => stateCell(i.state) },
    { key: "why", label: "Why", sortable: false, cell: (i) => i.why },
    { key: "address", label: "Address", cell: (i) => (i.scheme === "https" ? "https://" : "") + i.address },
    { key: "probe_ms", label: "Last probe", cell: (i) => probeText(i) },
    { key: "ejections", label: "Breaker / ejection", cell: (i) => outText(i) },
    { key: "weight", label: "Weight", num: true, cell: (i) => i.weight },
    { key: "zone", label: "Zone", cell: (i) => i.zone || "–" },
    { key: "tags", label: "Tags", sortable: false, cell: (i) => (i.tags || []).map((x) => el("span", { class: "tag" }, x)) },
    { key: "source", label: "Source", cell: (i) => i.source },
    { key: "active", label: "Active", num: true, cell: (i) => i.active },
    { key: "req_s", label: "req/s", num: true, cell: (i) => num(t(i).req_s) },
    { key: "err5xx_s", label: "5xx/s", num: true, cell: (i) => num(t(i).err5xx_s, 2) },
    { key: "actions", label: "Actions", sortable: false, cell: (i) => actions(name, i) },
  ];
  const filters = el("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    el("label", {}, "State", el("select", { id: "filter-state", onchange: (e) => setParams({ state: e.target.value, page: 0 }) },
      el("option", { value: "" }, "any"), STATES.map((s) => el("option", { value: s, selected: s === params.get("state") }, s)))),
    el("label", {}, "Tag", el("select", { id: "filter-tag", onchange: (e) => setParams({ tag: e.target.value, page: 0 }) },
      el("option", { value: "" }, "any"), data.tags.map((x) => el("option", { value: x, selected: x === params.get("tag") }, x)))),
    el("label", {}, "Id or address contains", el("input", { type: "search", id: "filter-q", value: params.get("q") || "",
      oninput: debounce((e) => setParams({ q: e.target.value, page: 0 }), 300) })));
  const first = data.total === 0 ? 0 : data.offset + 1, last = data.offset + data.instances.length;
  const pager = el("div", { class: "pager" },
    el("button", { type: "button", id: "prev-page", disabled: page === 0, onclick: () => setParams({ page: page - 1 }) }, "Previous"),
    el("span", {}, first + "–" + last + " of " + data.total + (data.total !== data.instances_in_service ? " (of " + data.instances_in_service + " in the service)" : "")),
    el("button", { type: "button", id: "next-page", disabled: last >= data.total, onclick: () => setParams({ page: page + 1 }) }, "Next"));
  const summary = svc ? el("p", { class: "muted" }, "policy " + svc.lb + " · health check " + svc.health_check + (svc.rate_limit ? " · rate limit " + svc.rate_limit : "") +
    " · routes " + (svc.routes.map((r) => (r.host || "*") + (r.path_prefix || "/")).join(" ") || "Host: " + name)) : null;
  const focused = document.activeElement && document.activeElement.id;
  $("view").replaceChildren(el("h2", {}, el("a", { href: "#/services" }, "Services"), " / ", name), summary, filters,
    table("Instances of " + name, columns, data.instances, sort, onSort, (i) => i.id), pager);
  if (focused && $(focused)) $(focused).focus();
}

function probeText(i) {
  const p = i.last_probe;
  if (!p) return i.health_check_from === "none" ? "no health check" : "not probed yet";
  return (p.ok ? "pass" : "fail") + ", " + p.latency_ms + " ms, " + ago(p.age_ms) + (p.detail ? " — " + p.detail : "");
}
function outText(i) {
  const parts = [];
  if (i.circuit_breaker === "open") parts.push("breaker open" + (i.breaker_left_ms !== undefined ? ", " + Math.ceil(i.breaker_left_ms / 1000) + " s left" : ""));
  if (i.ejected_left_ms !== undefined) parts.push("ejected, " + Math.ceil(i.ejected_left_ms / 1000) + " s left");
  if (i.ejections) parts.push(i.ejections + " ejections");
  return parts.join("; ") || "–";
}

function actions(service, i) {
  const base = "/v1/services/" + encodeURIComponent(service) + "/instances/" + encodeURIComponent(i.id);
  const draining = i.state === "draining";
  const out = [el("button", { type: "button", class: "drain", "aria-label": (draining ? "undrain " : "drain ") + i.id,
    onclick: () => act(draining ? "undrained " : "drained ", i.id, () => api("PUT", base + "/drain", { enabled: !draining })) }, draining ? "Undrain" : "Drain")];
  if (i.source === "dynamic")
    out.push(el("button", { type: "button", class: "danger deregister", "aria-label": "deregister " + i.id,
      onclick: () => { if (confirm("Deregister " + service + "/" + i.id + "?")) act("deregistered ", i.id, () => api("DELETE", base)); } }, "Deregister"));
  return out;
}

async function act(what, id, call) {
  try {
    await call();
    say(what + id);
    await render();
  } catch (e) {
    say("failed: " + (e.message || e));
  }
}

// ---- one instance ----
async function renderInstance(gen, service, id) {
  const data = await api("GET", "/v1/dashboard/services/" + encodeURIComponent(service) + "?id=" + encodeURIComponent(id));
  if (stale(gen)) return;
  const i = data.instances.find((x) => x.id === id);
  const view = $("view");
  const title = el("h2", {}, el("a", { href: "#/services" }, "Services"), " / ", el("a", { href: link(["service", service]) }, service), " / ", id);
  if (!i) {
    view.replaceChildren(title, el("p", {}, "No instance " + id + " in service " + service + " (deregistered?)."));
    return;
  }
  const row = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
  const t = i.traffic || {};
  view.replaceChildren(title, el("dl", { class: "detail" },
    row("State", stateCell(i.state)), row("Why", i.why), row("Address", (i.scheme === "https" ? "https://" : "") + i.address),
    row("Last probe", probeText(i)), row("Breaker / ejection", outText(i)), row("Weight", i.weight), row("Zone", i.zone || "–"),
    row("Tags", (i.tags || []).map((x) => el("span", { class: "tag" }, x))),
    row("Meta", Object.entries(i.meta || {}).map(([k, v]) => k + "=" + v).join(", ") || "–"),
    row("Source", i.source), row("Active requests", i.active), row("req/s", num(t.req_s)), row("5xx/s", num(t.err5xx_s, 2)),
    row("Health check", i.health_check_from), row("Actions", actions(service, i))));
}

// ---- events ----
function renderEvents() {
  const list = el("ol", { class: "events", reversed: true, "aria-label": "recent events, newest first" },
    events.slice().reverse().map(eventItem));
  $("view").replaceChildren(el("h2", {}, "Events"), el("p", { class: "muted" }, "Registry changes, health flips with their reason, breakers, ejections, reloads (newest first)."), list);
}
function eventItem(e) {
  const when = new Date(e.time_ms);
  return el("li", { "data-id": e.id }, el("time", { datetime: when.toISOString() }, when.toLocaleTimeString()), el("span", { class: "type" }, e.type),
    e.service ? el("a", { href: e.instance ? link(["service", e.service, "instance", e.instance]) : link(["service", e.service]) }, e.message) : e.message);
}

// ---- live: the event stream, read with fetch so the bearer token can go with it ----
async function stream() {
  for (;;) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (lastEventId !== null) h["Last-Event-ID"] = String(lastEventId);
      const r = await fetch("/v1/events", { headers: h, cache: "no-store" });
      if (r.status === 401) { live(false, "needs the admin token"); askToken("Reads need the admin token."); await sleep(2000); continue; }
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      live(true);
      if (lastEventId !== null) scheduleRefresh();  // back after a gap (a restart): read everything again
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          onFrame(buf.slice(0, at));
          buf = buf.slice(at + 2);
        }
      }
    } catch (e) {
      // fall through: reconnect
    }
    live(false, "reconnecting…");
    await sleep(2000);
  }
}
function onFrame(frame) {
  let id = null, type = "message", data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;  // heartbeat
    const c = line.indexOf(":");
    const field = c < 0 ? line : line.slice(0, c), value = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "event") type = value;
    else if (field === "data") data += value;
  }
  if (id !== null) lastEventId = id;
  if (!data) return;
  const e = JSON.parse(data);
  if (type === "resync") { scheduleRefresh(); return; }
  events.push(e);
  if (events.length > 500) events.shift();
  scheduleRefresh();
}
function scheduleRefresh() {
  // Many events in a burst (a registration storm) make one refresh, within 250 ms.
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; overview = null; render(); }, 250);
}
function live(on, text) {
  const b = $("live");
  b.textContent = on ? "live" : text || "offline";
  b.className = "badge " + (on ? "live" : "down");
}

// ---- token ----
function askToken(why) {
  const d = $("token-dialog");
  if (d.open) return;
  $("token-title").textContent = "Admin token" + (why ? " — " + why : "");
  $("token-input").value = "";
  d.showModal();
}
function setupToken() {
  $("token-button").addEventListener("click", () => askToken(""));
  $("token-dialog").addEventListener("close", () => {
    const v = $("token-dialog").returnValue;
    if (v === "save" && $("token-input").value) sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    if (v === "forget") sessionStorage.removeItem(TOKEN_KEY);
    if (v === "save" || v === "forget") render();
  });
  $("reload").addEventListener("click", () => act("config reloaded", "", () => api("POST", "/v1/reload")));
}

function debounce(f, wait) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), wait); };
}
const sleep = (n) => new Promise((r) => setTimeout(r, n));

async function start() {
  setupToken();
  window.addEventListener("hashchange", render);
  // The history first, so the Events view has what happened before the page opened.
  try {
    const h = await api("GET", "/v1/events?format=json");
    events = h.events.slice(-500);
    lastEventId = h.last_id;
  } catch (e) {
    say(String(e.message || e));
  }
  await render();
  stream();
  // Rates over the last minute move without events: read them again every 5 s.
  setInterval(() => { if (!document.hidden && !$("token-dialog").open) render(); }, 5000);
}
document.addEventListener("DOMContentLoaded", start);
