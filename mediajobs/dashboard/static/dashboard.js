// mediapipe dashboard: polls the JSON API and redraws what changed. No framework, no build.
//
// Every value from the server is placed with textContent or setAttribute, never parsed as
// HTML: job names, error messages and inputs contain user file names.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "mediapipe-dashboard-token";
const SVG = "http://www.w3.org/2000/svg";

let token = takeToken();
let selectedDag = null; // the DAG whose graph is shown; null follows the newest
let pinned = false; // true once the user picked a DAG
let nowMs = Date.now(); // Redis's clock, from the last overview
const drawn = new Map(); // section -> JSON of what it shows, to skip identical redraws

// The token arrives in the URL fragment (#token=...), which the browser never sends to
// the server. Keep it for this tab only and drop it from the address bar and history.
function takeToken() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
}

function showTokenState() {
  document.getElementById("token-state").textContent = token
    ? "token set: actions enabled"
    : "no token: read-only";
  document.getElementById("token-input").hidden = Boolean(token);
  document.getElementById("token-set").hidden = Boolean(token);
  document.getElementById("token-forget").hidden = !token;
}

// -- DOM helpers ---------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}

// Redraw a section only when its data changed, so buttons stay put between polls.
function draw(id, data, render) {
  const key = JSON.stringify(data);
  if (drawn.get(id) === key) return;
  drawn.set(id, key);
  render(document.getElementById(id), data);
}

function ago(ms) {
  if (!ms) return "—";
  const s = Math.max(0, Math.round((nowMs - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "—";
}

function bar(percent, label, small) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  const fill = el("span", { class: "fill" });
  fill.style.width = `${p}%`; // through the CSSOM: the CSP forbids inline style attributes
  const text = label === undefined ? `${p.toFixed(0)}%` : label;
  return el("span", { class: small ? "bar small" : "bar", title: `${p.toFixed(1)}%` }, fill, el("span", { class: "label" }, text));
}

function stateTag(state) {
  return el("span", { class: `state s-${String(state).replace(/[^a-z_]/g, "")}` }, state);
}

function empty(tbody, columns, text) {
  tbody.replaceChildren(el("tr", {}, el("td", { colspan: columns, class: "muted" }, text)));
}

function message(text, kind) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = false;
  clearTimeout(message.timer);
  message.timer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}

// -- talking to the API --------------------------------------------------------------
function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers(), cache: "no-store" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `${resp.status} ${resp.statusText}`);
  return body;
}

async function act(path, body, done) {
  if (!token) {
    message("Enter the dashboard token first (printed by `mediapipe dashboard`).", "error");
    document.getElementById("token-input").focus();
    return;
  }
  try {
    const resp = await fetch(path, {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const reply = await resp.json().catch(() => ({}));
    if (resp.status === 401 || resp.status === 403) {
      setToken("");
      message(`Refused: ${reply.error || resp.status}. Enter the token again.`, "error");
      return;
    }
    if (!resp.ok) {
      message(`Failed: ${reply.error || resp.status}`, "error");
      return;
    }
    message(done, "ok");
    drawn.clear();
    poll();
  } catch (err) {
    message(`Failed: ${err.message}`, "error");
  }
}

// -- sections -----------------------------------------------------------------------
function renderQueues(tbody, queues) {
  if (!queues.length) return empty(tbody, 8, "no queues yet");
  tbody.replaceChildren(
    ...queues.map((q) =>
      el(
        "tr",
        { "data-queue": q.name, class: q.paused ? "paused" : "" },
        el("td", { class: "mono" }, q.name),
        el("td", { class: "num" }, q.waiting),
        el("td", { class: "num" }, q.active),
        el("td", { class: "num" }, q.delayed),
        el("td", { class: "num" }, q.failed),
        el("td", { class: "num" }, q.dead),
        el("td", {}, q.paused ? stateTag("paused") : "no"),
        el(
          "td",
          {},
          q.paused
            ? el("button", { class: "resume", onclick: () => act("/api/queues/resume", { queue: q.name }, `Resumed ${q.name}`) }, "Resume")
            : el("button", { class: "pause", onclick: () => act("/api/queues/pause", { queue: q.name }, `Paused ${q.name}`) }, "Pause"),
        ),
      ),
    ),
  );
}

function renderWorkers(tbody, workers) {
  if (!workers.length) return empty(tbody, 10, "no live workers");
  tbody.replaceChildren(
    ...workers.map((w) =>
      el(
        "tr",
        { "data-worker-id": w.id },
        el("td", {}, w.host),
        el("td", { class: "mono", title: `pid ${w.pid}` }, w.id),
        el("td", {}, w.tags.join(", ") || "—"),
        el("td", { class: "mono" }, w.queues.join(", ")),
        el("td", { class: "num" }, w.capacity),
        el("td", {}, bar(w.load * 100, `${w.in_use}/${w.capacity} slots`, true)),
        el("td", { class: "num" }, w.cpu_percent === "" ? "—" : `${Number(w.cpu_percent).toFixed(0)}%`),
        el("td", { class: "num" }, `${w.jobs_done}/${w.jobs_failed}`),
        el("td", {}, stateTag(w.state)),
        el("td", {}, ago(w.last_seen_ms)),
      ),
    ),
  );
}

function renderDags(tbody, dags) {
  if (!dags.length) return empty(tbody, 8, "no DAGs yet");
  tbody.replaceChildren(
    ...dags.map((d) =>
      el(
        "tr",
        {
          "data-dag-id": d.id,
          "data-state": d.state,
          class: `clickable${d.id === selectedDag ? " selected" : ""}`,
          onclick: () => selectDag(d.id),
        },
        el("td", { class: "mono" }, d.id),
        el("td", { class: "input" }, d.meta.input || d.meta.name || "—"),
        el("td", { class: "dag-state" }, stateTag(d.state)),
        el("td", {}, bar(d.percent)),
        el("td", { class: "num" }, `${d.completed}/${d.total}`),
        el("td", { class: "num" }, d.dead),
        el("td", {}, clock(d.created)),
        el(
          "td",
          {},
          d.state === "running"
            ? el("button", {
                class: "cancel danger",
                onclick: (e) => {
                  e.stopPropagation();
                  if (confirm(`Cancel DAG ${d.id}?`)) act("/api/dags/cancel", { dag: d.id }, `Cancelled ${d.id}`);
                },
              }, "Cancel")
            : null,
        ),
      ),
    ),
  );
}

function renderDlq(tbody, dead) {
  if (!dead.length) return empty(tbody, 8, "the dead-letter queue is empty");
  tbody.replaceChildren(
    ...dead.map((j) => {
      const err = j.error || {};
      return el(
        "tr",
        { "data-job-id": j.id },
        el("td", { class: "mono", title: `DAG ${j.dag}` }, j.id),
        el("td", { class: "mono" }, j.stage),
        el("td", { class: "mono" }, j.queue),
        el(
          "td",
          { class: "error" },
          el("strong", {}, err.type || "Error"),
          ": ",
          el("span", { class: "error-message" }, err.message || ""),
          err.traceback ? el("details", {}, el("summary", {}, "traceback"), el("pre", {}, err.traceback)) : null,
        ),
        el("td", { class: "params" }, fields(j.params)),
        el("td", { class: "num" }, `${j.attempts}/${j.max_attempts}`),
        el("td", {}, clock(j.dead_since_ms)),
        el("td", {}, el("button", { class: "retry", onclick: () => act("/api/dlq/retry", { job: j.id }, `Retried ${j.id}`) }, "Retry")),
      );
    }),
  );
}

// A JSON object as a key/value list; strings unquoted so file names read as they are.
function fields(value) {
  const obj = value && typeof value === "object" && !Array.isArray(value) ? value : { value };
  return el("dl", {}, ...Object.entries(obj).flatMap(([k, v]) => [
    el("dt", {}, k),
    el("dd", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v)),
  ]));
}

function renderSchedules(tbody, schedules) {
  if (!schedules.length) return empty(tbody, 2, "no schedules");
  tbody.replaceChildren(
    ...schedules.map((s) =>
      el("tr", { "data-schedule": s.name }, el("td", { class: "mono" }, s.name), el("td", {}, fields(s.spec))),
    ),
  );
}

function renderBreakers(tbody, breakers) {
  const names = Object.keys(breakers);
  document.getElementById("breakers-title").hidden = !names.length;
  tbody.replaceChildren(
    ...names.map((n) =>
      el("tr", {}, el("td", { class: "mono" }, n), el("td", {}, stateTag(breakers[n].state || "closed")),
        el("td", { class: "num" }, `failures in a row ${breakers[n].failures || 0}`)),
    ),
  );
}

function renderEvents(tbody, events) {
  if (!events.length) return empty(tbody, 5, "no events yet");
  tbody.replaceChildren(
    ...events.map((e) =>
      el(
        "tr",
        {},
        el("td", {}, clock(Number(e.id.split("-")[0]))),
        el("td", {}, stateTag(e.ev)),
        el("td", { class: "mono" }, e.dag || ""),
        el("td", { class: "mono" }, e.job || ""),
        el("td", { class: "mono" }, Object.entries(e.fields).map(([k, v]) => `${k}=${v}`).join(" ")),
      ),
    ),
  );
}

// -- the DAG graph --------------------------------------------------------------------
// Columns by depth (jobs without dependencies on the left, the DAG's roots on the right),
// edges from each dependency to the job that waits for it, coloured by the edge's state.
function renderGraph(box, dag) {
  if (!dag) {
    box.replaceChildren(el("p", { class: "muted" }, "no DAG selected"));
    return;
  }
  const byId = new Map(dag.jobs.map((j) => [j.id, j]));
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0; // cannot happen in a valid DAG; guards the recursion
    seen.add(id);
    const deps = Object.keys(byId.get(id).deps).filter((c) => byId.has(c));
    const d = deps.length ? 1 + Math.max(...deps.map((c) => depthOf(c, seen))) : 0;
    depth.set(id, d);
    return d;
  };
  const columns = [];
  for (const j of [...dag.jobs].sort((a, b) => a.name.localeCompare(b.name))) {
    const d = depthOf(j.id);
    (columns[d] = columns[d] || []).push(j);
  }
  const W = 190, H = 54, GX = 60, GY = 16, PAD = 10;
  const pos = new Map();
  columns.forEach((col, c) => col.forEach((j, r) => pos.set(j.id, { x: PAD + c * (W + GX), y: PAD + r * (H + GY) })));
  const rows = Math.max(...columns.map((c) => c.length));
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GX;
  const height = PAD * 2 + rows * H + (rows - 1) * GY;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `stages of DAG ${dag.id}` });
  for (const j of dag.jobs) {
    for (const [child, state] of Object.entries(j.deps)) {
      if (!pos.has(child)) continue;
      const a = pos.get(child), b = pos.get(j.id);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      root.append(svg("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: `edge e-${state.replace(/[^a-z_]/g, "")}` }));
    }
  }
  for (const j of dag.jobs) {
    const p = pos.get(j.id);
    const pct = j.state === "completed" ? 100 : Math.max(0, Math.min(100, j.percent));
    const tip = [`${j.name} (${j.stage}) ${j.state}`, `attempt ${j.attempts}/${j.max_attempts}`];
    if (j.message) tip.push(j.message);
    if (j.waiting_for) tip.push(`waiting for ${j.waiting_for}`);
    if (j.error && j.error.message) tip.push(`${j.error.type || "Error"}: ${j.error.message}`);
    root.append(
      svg(
        "g",
        { class: `node s-${j.state.replace(/[^a-z_]/g, "")}`, transform: `translate(${p.x},${p.y})`, "data-job": j.name },
        svg("title", {}, tip.join("\n")),
        svg("rect", { width: W, height: H, rx: 6, class: "box" }),
        svg("rect", { x: 1, y: H - 6, width: ((W - 2) * pct) / 100, height: 5, class: "progress" }),
        svg("text", { x: 10, y: 20, class: "name" }, j.name.length > 24 ? `${j.name.slice(0, 23)}…` : j.name),
        svg("text", { x: 10, y: 38, class: "detail" }, `${j.stage} · ${j.state}${j.state === "active" ? ` ${pct.toFixed(0)}%` : ""}`),
      ),
    );
  }
  const parts = [root];
  if (dag.jobs_truncated) parts.push(el("p", { class: "warn" }, `showing the first ${dag.jobs.length} jobs`));
  box.replaceChildren(...parts);
}

function selectDag(id) {
  selectedDag = id;
  pinned = true;
  drawn.delete("dags");
  drawn.delete("graph");
  poll();
}

// -- the loop -----------------------------------------------------------------------
let timer = null;
let busy = false;

async function poll() {
  if (busy) return;
  busy = true;
  clearTimeout(timer);
  const live = document.getElementById("live");
  try {
    const o = await getJson("/api/overview");
    nowMs = o.now_ms;
    document.getElementById("namespace").textContent = `namespace ${o.namespace}`;
    document.getElementById("dead-total").textContent = `(${o.dead_total} dead in all)`;
    const gaps = Object.entries(o.capability_gaps);
    const gapBox = document.getElementById("gaps");
    gapBox.hidden = !gaps.length;
    gapBox.textContent = gaps.map(([q, n]) => `${n} jobs in ${q} wait for a capability no live worker has`).join("; ");
    if (!pinned) {
      // Until the user picks one, follow the newest running DAG (else the newest).
      const running = o.dags.find((d) => d.state === "running");
      selectedDag = (running || o.dags[0] || {}).id || null;
    }
    draw("queues", o.queues, renderQueues);
    draw("workers", { w: o.workers, now: Math.floor(nowMs / 1000) }, (t, d) => renderWorkers(t, d.w));
    draw("dags", { d: o.dags, s: selectedDag }, (t, d) => renderDags(t, d.d));
    draw("dlq", o.dead, renderDlq);
    draw("schedules", o.schedules, renderSchedules);
    draw("breakers", o.breakers, renderBreakers);
    draw("events", o.events, renderEvents);
    document.getElementById("graph-title").textContent = selectedDag || "—";
    const dag = selectedDag ? await getJson(`/api/dags/${encodeURIComponent(selectedDag)}`).catch(() => null) : null;
    draw("graph", dag, renderGraph);
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
    live.className = "pill ok";
  } catch (err) {
    live.textContent = `disconnected: ${err.message}`;
    live.className = "pill error";
  } finally {
    busy = false;
    timer = setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showTokenState();
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token-input");
    setToken(input.value.trim());
    input.value = "";
    drawn.clear();
    poll();
  });
  document.getElementById("token-forget").addEventListener("click", () => setToken(""));
  document.getElementById("retry-all").addEventListener("click", () => act("/api/dlq/retry-all", {}, "Retried every dead job"));
  document.getElementById("purge").addEventListener("click", () => {
    if (confirm("Forget every job in the dead-letter queue?")) act("/api/dlq/purge", {}, "Purged the dead-letter queue");
  });
  poll();
});
