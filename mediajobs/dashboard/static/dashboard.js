// mediapipe dashboard: follows the server's event stream (/api/live) and redraws what
// changed, polling once a second only while that stream is unavailable. No framework,
// no build.
//
// Every value from the server is placed with textContent or setAttribute, never parsed as
// HTML: job names, error messages and inputs contain user file names.
"use strict";

const POLL_MS = 1000; // while the event stream is unavailable
const SAFETY_MS = 10000; // a redraw at least this often even when no event comes
const JOB_MS = 2000; // the open job view is read again at most this often
const CHART_MS = 30000;
const TOKEN_KEY = "mediapipe-dashboard-token";
const SVG = "http://www.w3.org/2000/svg";

let token = takeToken();
let selectedDag = null; // the DAG whose graph is shown; null follows the newest
let pinned = false; // true once the user picked a DAG
let nowMs = Date.now(); // Redis's clock, from the last overview
// What the lists show: the DAG list's state filter, search and page; the job list's
// state, queue and page; the job open in the job view.
const view = { dagState: "", dagQuery: "", dagPage: 1, jobState: "active", jobQueue: "", jobPage: 1, job: null };
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

// A date and time for stamps that may be days old.
function stamp(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  return Math.abs(nowMs - ms) < 86400000 ? d.toLocaleTimeString() : d.toLocaleString();
}

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function bytes(n) {
  if (!n) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ffmpeg's eta is seconds; other stages may report text.
function eta(value) {
  if (value === "" || value === undefined || value === null) return "—";
  const n = Number(value);
  return Number.isFinite(n) ? duration(Math.round(n * 1000)) : String(value);
}

function num(value, digits, suffix) {
  const n = Number(value);
  return value === "" || value === undefined || !Number.isFinite(n) ? "—" : `${n.toFixed(digits)}${suffix || ""}`;
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
    refreshSoon();
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
  if (!workers.length) return empty(tbody, 11, "no live workers");
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
        el("td", { class: "controls" }, ...workerControls(w)),
      ),
    ),
  );
}

// Drain: take no new job, finish the running ones (within the worker's grace period) and
// exit. Stop: hand the running jobs back to their queue now and exit. A worker reads
// either with its next heartbeat (every 2 s).
function workerControls(w) {
  if (w.lane) return [el("span", { class: "muted", title: "a batch lane stops with its worker node" }, "lane")];
  const out = [];
  if (w.asked) out.push(el("span", { class: "asked muted" }, `${w.asked} asked`));
  if (w.state !== "stopping" && !w.asked) {
    out.push(el("button", {
      class: "drain",
      title: "take no new job, finish the running ones, exit",
      onclick: () => {
        if (confirm(`Drain worker ${w.id}? It finishes its ${w.in_use} running job(s), takes no new one, and exits.`)) {
          act("/api/workers/drain", { worker: w.id }, `Asked ${w.id} to drain`);
        }
      },
    }, "Drain"));
  }
  if (w.asked !== "stop") {
    out.push(el("button", {
      class: "stop danger",
      title: "hand the running jobs back to the queue now, exit",
      onclick: () => {
        if (confirm(`Stop worker ${w.id} now? Its ${w.in_use} running job(s) go back to the queue.`)) {
          act("/api/workers/stop", { worker: w.id }, `Asked ${w.id} to stop`);
        }
      },
    }, "Stop"));
  }
  return out;
}

function renderDags(tbody, page) {
  const dags = page.dags;
  if (!dags.length) {
    const what = page.query ? `no DAG matches “${page.query}”` : page.state ? `no ${page.state} DAGs` : "no DAGs yet";
    return empty(tbody, 10, page.page > 1 ? "no DAGs on this page" : what);
  }
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
        el("td", { class: "input", title: d.input }, d.input || "—"),
        el("td", { class: "dag-state" }, stateTag(d.state)),
        el("td", {}, bar(d.percent)),
        el("td", { class: "num" }, `${d.completed}/${d.total}`),
        el("td", { class: "num" }, d.dead),
        el("td", { title: new Date(d.created).toLocaleString() }, stamp(d.created)),
        el("td", { class: "finished" }, d.finished ? stamp(d.finished) : "—"),
        el("td", { class: "num duration" }, duration(d.duration_ms)),
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

// The DAG list's filter tabs, pager and the line saying what was read.
function renderDagNav(page) {
  for (const b of document.querySelectorAll("#dag-states .tab")) b.classList.toggle("active", b.dataset.state === page.state);
  const input = document.getElementById("dag-page");
  if (document.activeElement !== input) input.value = page.page;
  document.getElementById("dag-prev").disabled = page.page <= 1;
  document.getElementById("dag-next").disabled = !page.has_next;
  const first = page.offset + 1, last = page.offset + page.dags.length;
  const parts = [page.dags.length ? `${first}–${last}` : "none"];
  if (page.query) parts.push(`${page.matches} matching among the newest ${page.searched} DAGs`);
  const c = page.finished_counts;
  parts.push(`${c.completed} completed, ${c.failed_or_cancelled} failed or cancelled in all`);
  if (!page.complete) parts.push("an idle DAG older than the event window may be missing");
  document.getElementById("dag-note").textContent = parts.join(" · ");
}

function renderJobs(tbody, page) {
  if (!page.jobs.length) return empty(tbody, 12, `no ${page.state} jobs${page.queue ? ` in ${page.queue}` : ""}`);
  tbody.replaceChildren(
    ...page.jobs.map((j) => {
      const time = j.state === "active" ? `running ${duration(j.running_ms)}`
        : j.state === "delayed" ? `due ${stamp(j.run_at)}`
        : j.state === "dead" ? `died ${stamp(j.finished)}`
        : `queued ${ago(j.created)}`;
      return el(
        "tr",
        { "data-job-id": j.id, "data-state": j.state, class: `clickable${j.id === view.job ? " selected" : ""}`, onclick: () => selectJob(j.id) },
        el("td", { class: "mono" }, j.id),
        el("td", { class: "mono" }, j.stage),
        el("td", { class: "mono" }, j.queue),
        el("td", {}, stateTag(j.state)),
        el("td", { class: "num" }, `${j.attempts}/${j.max_attempts}`),
        el("td", { class: "mono" }, j.worker || "—"),
        el("td", {}, j.state === "active" ? bar(j.percent, undefined, true) : "—"),
        el("td", { class: "num fps" }, num(j.fps, 0)),
        el("td", { class: "num speed" }, num(j.speed, 2, "x")),
        el("td", { class: "num eta" }, j.state === "active" ? eta(j.eta) : "—"),
        el("td", {}, time),
        el("td", { class: "error" }, j.error),
      );
    }),
  );
}

function renderJobNav(page) {
  for (const b of document.querySelectorAll("#job-states .tab")) b.classList.toggle("active", b.dataset.state === page.state);
  const select = document.getElementById("job-queue");
  const options = ["", ...page.queues];
  if (select.options.length !== options.length || [...select.options].some((o, i) => o.value !== options[i])) {
    select.replaceChildren(...options.map((q) => el("option", { value: q }, q || "all queues")));
  }
  select.value = page.queue;
  document.getElementById("job-prev").disabled = page.page <= 1;
  document.getElementById("job-next").disabled = !page.has_next;
  const last = page.offset + page.jobs.length;
  document.getElementById("job-page-label").textContent =
    `page ${page.page} · ${page.jobs.length ? `${page.offset + 1}–${last}` : "none"} of ${page.total}${page.total_truncated ? "+" : ""}`;
}

function renderDlq(tbody, dead) {
  if (!dead.length) return empty(tbody, 8, "the dead-letter queue is empty");
  tbody.replaceChildren(
    ...dead.map((j) => {
      const err = j.error || {};
      return el(
        "tr",
        { "data-job-id": j.id },
        el("td", { class: "mono" }, el("a", { href: "#", class: "job-link", title: `DAG ${j.dag}`, onclick: (e) => { e.preventDefault(); selectJob(j.id); } }, j.id)),
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
    const open = () => selectJob(j.id);
    const tip = [`${j.name} (${j.stage}) ${j.state}`, `attempt ${j.attempts}/${j.max_attempts}`];
    if (j.message) tip.push(j.message);
    if (j.waiting_for) tip.push(`waiting for ${j.waiting_for}`);
    if (j.error && j.error.message) tip.push(`${j.error.type || "Error"}: ${j.error.message}`);
    const node = svg(
        "g",
        { class: `node clickable s-${j.state.replace(/[^a-z_]/g, "")}${j.id === view.job ? " picked" : ""}`, transform: `translate(${p.x},${p.y})`, "data-job": j.name },
        svg("title", {}, tip.join("\n")),
        svg("rect", { width: W, height: H, rx: 6, class: "box" }),
        svg("rect", { x: 1, y: H - 6, width: ((W - 2) * pct) / 100, height: 5, class: "progress" }),
        svg("text", { x: 10, y: 20, class: "name" }, j.name.length > 24 ? `${j.name.slice(0, 23)}…` : j.name),
        svg("text", { x: 10, y: 38, class: "detail" }, `${j.stage} · ${j.state}${j.state === "active" ? ` ${pct.toFixed(0)}%` : ""}`),
      );
    node.addEventListener("click", open);
    root.append(node);
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
  refreshSoon();
}

function selectJob(id) {
  view.job = id;
  jobReadAt = 0;
  drawn.delete("job");
  drawn.delete("jobs");
  drawn.delete("graph");
  const panel = document.getElementById("job-panel");
  panel.hidden = false;
  document.getElementById("job-title").textContent = id;
  // Not the previous job's facts under this one's title while it is read.
  const box = document.getElementById("job");
  delete box.dataset.jobId;
  box.replaceChildren(el("p", { class: "muted" }, "reading…"));
  refreshSoon();
  panel.scrollIntoView({ block: "nearest" });
}

function closeJob() {
  view.job = null;
  document.getElementById("job-panel").hidden = true;
  drawn.delete("job");
  drawn.delete("jobs");
  drawn.delete("graph");
  refreshSoon();
}

function jobPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

// -- the job view ---------------------------------------------------------------------
function section(title, ...children) {
  return el("div", { class: "job-section" }, el("h3", {}, title), ...children);
}

function errorBlock(err, key) {
  if (!err) return null;
  return el(
    "div",
    { class: "error" },
    el("strong", {}, err.type || "Error"),
    ": ",
    el("span", { class: "error-message" }, err.message || ""),
    err.worker ? el("span", { class: "muted" }, ` (on ${err.worker})`) : null,
    err.traceback ? el("details", { "data-key": key }, el("summary", {}, "traceback"), el("pre", { class: "traceback" }, err.traceback)) : null,
  );
}

// Percent over time, from the progress events the DAG's stream still holds.
function sparkline(points) {
  if (points.length < 2) return null;
  const W = 360, H = 60, t0 = points[0].at, t1 = points[points.length - 1].at || t0 + 1;
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * (W - 2) + 1;
  const y = (p) => H - 1 - (Math.max(0, Math.min(100, p || 0)) / 100) * (H - 2);
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.percent).toFixed(1)}`).join(" ");
  return svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "sparkline", role: "img", "aria-label": "progress over time" },
    svg("rect", { x: 0, y: 0, width: W, height: H, class: "frame" }),
    svg("path", { d, class: "line" }));
}

function renderJob(box, j) {
  const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  if (!j) {
    box.replaceChildren(el("p", { class: "muted" }, "this job no longer exists (pruned by retention?)"));
    return;
  }
  document.getElementById("job-title").textContent = j.id;
  box.dataset.jobId = j.id;
  const summary = el("dl", { class: "facts" },
    el("dt", {}, "state"), el("dd", { class: "job-state", "data-state": j.state }, stateTag(j.state), j.waiting_for ? ` waiting for ${j.waiting_for}` : ""),
    el("dt", {}, "DAG"), el("dd", { class: "mono" }, el("a", { href: "#", onclick: (e) => { e.preventDefault(); selectDag(j.dag); } }, j.dag), " ", stateTag(j.dag_state)),
    el("dt", {}, "input"), el("dd", { class: "mono" }, j.input || "—"),
    el("dt", {}, "stage"), el("dd", { class: "mono" }, j.stage),
    el("dt", {}, "queue"), el("dd", { class: "mono" }, j.queue),
    el("dt", {}, "worker"), el("dd", { class: "mono job-worker" }, j.worker || "—"),
    el("dt", {}, "attempts"), el("dd", { class: "job-attempts" }, `${j.attempts} of ${j.max_attempts}${j.stalls ? ` · ${j.stalls} stalled` : ""}`),
    j.tags.length ? el("dt", {}, "needs") : null, j.tags.length ? el("dd", {}, j.tags.join(", ")) : null,
    j.timeout_ms ? el("dt", {}, "timeout") : null, j.timeout_ms ? el("dd", {}, duration(j.timeout_ms)) : null,
  );
  const timings = el("dl", { class: "facts timings" },
    el("dt", {}, "created"), el("dd", { class: "created" }, stamp(j.created)),
    el("dt", {}, "started"), el("dd", { class: "started" }, stamp(j.started)),
    el("dt", {}, "finished"), el("dd", { class: "finished" }, stamp(j.finished)),
    el("dt", {}, j.state === "active" ? "running for" : "duration"), el("dd", { class: "duration" }, duration(j.duration_ms)),
    j.started && j.created ? el("dt", {}, "created to last start") : null,
    j.started && j.created ? el("dd", {}, duration(j.started - j.created)) : null,
    j.run_at && j.state === "delayed" ? el("dt", {}, "due") : null,
    j.run_at && j.state === "delayed" ? el("dd", {}, stamp(j.run_at)) : null,
  );
  const p = j.progress || {};
  const progress = section("Progress",
    el("div", { class: "progress-line" },
      bar(j.percent),
      el("span", { class: "fps" }, `fps ${num(p.fps, 0)}`),
      el("span", { class: "speed" }, `speed ${num(p.speed, 2, "x")}`),
      el("span", { class: "eta" }, `eta ${j.state === "active" ? eta(p.eta) : "—"}`),
      p.message ? el("span", { class: "muted" }, p.message) : null),
    sparkline(j.progress_history));
  const attempts = j.attempt_log.length
    ? el("table", { class: "attempts" },
        el("thead", {}, el("tr", {}, ...["#", "worker", "started", "ended", "took", "outcome", "error"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...j.attempt_log.map((a, i) => a.kind === "attempt"
          ? el("tr", { class: "attempt", "data-outcome": a.outcome },
              el("td", { class: "num" }, a.attempt || ""),
              el("td", { class: "mono" }, a.worker || "—"),
              el("td", {}, stamp(a.started)),
              el("td", {}, a.ended ? stamp(a.ended) : "—"),
              el("td", { class: "num" }, duration(a.ended ? a.ended - a.started : a.outcome === "running" ? nowMs - a.started : null)),
              el("td", {}, a.outcome),
              el("td", {}, errorBlock(a.error, `attempt-${i}`)))
          : el("tr", { class: "note muted" },
              el("td", {}), el("td", {}), el("td", {}, stamp(a.at)), el("td", {}), el("td", {}),
              el("td", {}, a.outcome), el("td", {}, errorBlock(a.error, `note-${i}`))))))
    : el("p", { class: "muted" }, "not started yet");
  const outputs = j.outputs.length
    ? el("ul", { class: "outputs" }, ...j.outputs.map((o) => el("li", {},
        o.url && o.kind === "image" ? el("a", { href: o.url, target: "_blank", rel: "noopener" }, el("img", { src: o.url, class: "thumb", alt: o.path })) : null,
        o.url ? el("a", { href: o.url, target: "_blank", rel: "noopener", class: "mono output-link" }, o.path) : el("span", { class: "mono", title: "not a file inside the DAG's output folder" }, o.path),
        el("span", { class: "muted" }, ` ${[o.width && o.height ? `${o.width}×${o.height}` : "", bytes(o.bytes)].filter(Boolean).join(" · ")}`))))
    : el("p", { class: "muted" }, j.state === "completed" ? "no output files" : "none yet");
  const deps = Object.entries(j.deps);
  // replaceChildren would show a null as the text "null": leave the absent ones out.
  const parts = [
    el("div", { class: "job-grid" }, section("Job", summary), section("Timings", timings), progress),
    j.error && j.state !== "completed" ? section("Error", errorBlock(j.error, "error")) : null,
    section(`Attempts${j.history_truncated ? " (older history not read)" : ""}`, attempts),
    el("div", { class: "job-grid" },
      section("Params", el("div", { class: "params" }, fields(j.params))),
      section("Outputs", outputs),
      deps.length ? section("Waits for", el("dl", {}, ...deps.flatMap(([c, st]) => [el("dt", { class: "mono" }, c.split("/").pop()), el("dd", {}, stateTag(st))]))) : null),
    j.result ? el("details", { "data-key": "result" }, el("summary", {}, `result${j.result_truncated ? " (cut)" : ""}`), el("pre", {}, j.result)) : null,
  ];
  box.replaceChildren(...parts.filter(Boolean));
  for (const d of box.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
}

// -- charts -----------------------------------------------------------------------
function chart(title, series, cls) {
  const W = 200, H = 48, n = series[0].values.length, bw = W / n;
  const totals = series[0].values.map((_, i) => series.reduce((t, s) => t + s.values[i], 0));
  const max = Math.max(1, ...totals);
  const root = svg("svg", { width: W, height: H + 14, viewBox: `0 0 ${W} ${H + 14}`, class: `chart ${cls}`, role: "img", "aria-label": title });
  root.append(svg("line", { x1: 0, y1: H, x2: W, y2: H, class: "axis" }));
  for (let i = 0; i < n; i += 1) {
    let y = H;
    for (const s of series) {
      const h = (s.values[i] / max) * (H - 4);
      if (!h) continue;
      y -= h;
      root.append(svg("rect", { x: i * bw + 0.5, y, width: Math.max(1, bw - 1), height: h, class: s.cls },
        svg("title", {}, `${s.values[i]} ${s.label}, ${n - i - 1} min ago`)));
    }
  }
  root.append(svg("text", { x: 0, y: H + 12, class: "tick" }, `${n} min ago`));
  root.append(svg("text", { x: W, y: H + 12, class: "tick end" }, "now"));
  const sum = series.map((s) => `${s.values.reduce((a, b) => a + b, 0)} ${s.label}`).join(", ");
  return el("figure", {}, el("figcaption", {}, title, el("br"), el("span", { class: "muted" }, `${sum}, at most ${max} a minute`)), root);
}

function renderCharts(box, c) {
  box.replaceChildren(
    chart("DAGs finished", [
      { values: c.dags_completed, label: "completed", cls: "ok" },
      { values: c.dags_failed, label: "failed or cancelled", cls: "bad" },
    ], "dags-chart"),
    chart("Jobs run", [
      { values: c.jobs_done, label: "done", cls: "ok" },
      { values: c.jobs_failed, label: "failed", cls: "bad" },
    ], "jobs-chart"),
    chart("Jobs dead", [{ values: c.jobs_dead, label: "dead", cls: "bad" }], "dead-chart"),
    el("p", { class: "muted small" }, `Jobs run are counted from the workers' heartbeats since ${stamp(c.jobs_counted_since_ms)}, while a page is open.`),
  );
}

// -- the loop -----------------------------------------------------------------------
// A redraw reads everything shown; events from /api/live ask for one, and so does a
// timer while the stream is down (once a second) or quiet (every SAFETY_MS).
let busy = false;
let again = false;
let lastRefresh = 0;
let jobReadAt = 0;
let chartsAt = 0;
let liveMode = "connecting";

function refreshSoon() {
  if (busy) {
    again = true;
    return;
  }
  refresh();
}

function dagQuery() {
  const q = new URLSearchParams({ page: view.dagPage });
  if (view.dagState) q.set("state", view.dagState);
  if (view.dagQuery) q.set("q", view.dagQuery);
  return `/api/dags?${q}`;
}

function jobQuery() {
  const q = new URLSearchParams({ state: view.jobState, page: view.jobPage });
  if (view.jobQueue) q.set("queue", view.jobQueue);
  return `/api/jobs?${q}`;
}

async function refresh() {
  busy = true;
  again = false;
  const live = document.getElementById("live");
  try {
    const [o, dags, jobs] = await Promise.all([getJson("/api/overview"), getJson(dagQuery()), getJson(jobQuery())]);
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
    draw("dags", { d: dags, s: selectedDag, now: Math.floor(nowMs / 1000) }, (t, d) => renderDags(t, d.d));
    renderDagNav(dags);
    draw("jobs", { j: jobs, s: view.job }, (t, d) => renderJobs(t, d.j));
    renderJobNav(jobs);
    draw("dlq", o.dead, renderDlq);
    draw("schedules", o.schedules, renderSchedules);
    draw("breakers", o.breakers, renderBreakers);
    draw("events", o.events, renderEvents);
    document.getElementById("graph-title").textContent = selectedDag || "—";
    const dag = selectedDag ? await getJson(`/api/dags/${encodeURIComponent(selectedDag)}`).catch(() => null) : null;
    draw("graph", { dag, job: view.job }, (b, d) => renderGraph(b, d.dag));
    if (view.job && Date.now() - jobReadAt >= JOB_MS) {
      jobReadAt = Date.now();
      const j = await getJson(`/api/jobs/${jobPath(view.job)}`).catch(() => null);
      if (view.job) draw("job", j ? { ...j, now_ms: 0 } : null, renderJob);
    }
    if (Date.now() - chartsAt >= CHART_MS) {
      chartsAt = Date.now();
      draw("charts", await getJson("/api/charts"), renderCharts);
    }
    live.textContent = `live · ${liveMode === "events" ? "events" : "polling"} · ${new Date().toLocaleTimeString()}`;
    live.className = "pill ok";
  } catch (err) {
    live.textContent = `disconnected: ${err.message}`;
    live.className = "pill error";
  } finally {
    busy = false;
    lastRefresh = Date.now();
    if (again) setTimeout(refreshSoon, 100);
  }
}

// Server-sent events through fetch (an EventSource cannot send the Authorization header
// that reads need when the dashboard is not on loopback).
async function followLive() {
  let delay = 5000;
  try {
    const resp = await fetch("/api/live", { headers: headers(), cache: "no-store" });
    if (!resp.ok || !resp.body) throw new Error(`${resp.status}`);
    liveMode = "events";
    delay = 200;
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const name = (block.match(/^event: (.*)$/m) || [])[1];
        if (name === "change") {
          chartsAt = 0;
          jobReadAt = 0;
        }
        if (name === "change" || name === "tick" || name === "hello") refreshSoon();
      }
    }
  } catch (err) {
    // fall back to polling until the stream is back
  }
  liveMode = "polling";
  setTimeout(followLive, delay);
}

function onTabs(id, apply) {
  document.getElementById(id).addEventListener("click", (e) => {
    const b = e.target.closest("button.tab");
    if (!b) return;
    apply(b.dataset.state);
    refreshSoon();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  showTokenState();
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token-input");
    setToken(input.value.trim());
    input.value = "";
    drawn.clear();
    refreshSoon();
  });
  document.getElementById("token-forget").addEventListener("click", () => setToken(""));
  document.getElementById("retry-all").addEventListener("click", () => act("/api/dlq/retry-all", {}, "Retried every dead job"));
  document.getElementById("purge").addEventListener("click", () => {
    if (confirm("Forget every job in the dead-letter queue?")) act("/api/dlq/purge", {}, "Purged the dead-letter queue");
  });
  onTabs("dag-states", (state) => { view.dagState = state; view.dagPage = 1; });
  onTabs("job-states", (state) => { view.jobState = state; view.jobPage = 1; });
  let typing = null;
  document.getElementById("dag-search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.dagQuery = e.target.value.trim(); view.dagPage = 1; refreshSoon(); }, 250);
  });
  document.getElementById("dag-prev").addEventListener("click", () => { view.dagPage = Math.max(1, view.dagPage - 1); refreshSoon(); });
  document.getElementById("dag-next").addEventListener("click", () => { view.dagPage += 1; refreshSoon(); });
  const goToPage = (e) => {
    const page = Math.max(1, Number.parseInt(e.target.value, 10) || 1);
    if (page === view.dagPage) return;
    view.dagPage = page;
    refreshSoon();
  };
  document.getElementById("dag-page").addEventListener("change", goToPage);
  document.getElementById("dag-page").addEventListener("keydown", (e) => { if (e.key === "Enter") goToPage(e); });
  document.getElementById("job-queue").addEventListener("change", (e) => { view.jobQueue = e.target.value; view.jobPage = 1; refreshSoon(); });
  document.getElementById("job-prev").addEventListener("click", () => { view.jobPage = Math.max(1, view.jobPage - 1); refreshSoon(); });
  document.getElementById("job-next").addEventListener("click", () => { view.jobPage += 1; refreshSoon(); });
  document.getElementById("job-close").addEventListener("click", closeJob);
  setInterval(() => {
    if (!busy && Date.now() - lastRefresh >= (liveMode === "events" ? SAFETY_MS : POLL_MS)) refreshSoon();
  }, 250);
  refreshSoon();
  followLive();
});
