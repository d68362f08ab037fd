// The Hades dashboard: jobs list and job page, live over Server-Sent Events. No framework, no build step.
// Everything that comes from a job (names, images, reasons, log lines) is put in the page with textContent or
// text nodes, never as markup, so a "<script>" in a log line is shown, not run.
"use strict";

(function () {
  const PAGE_SIZE = 25;
  const STATS_EVERY_MS = 5000;
  const QUEUED_REFRESH_MS = 3000;
  const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled"]);

  const $ = (id) => document.getElementById(id);
  const state = {
    config: { cancel: false },
    view: null, // "jobs" | "job"
    filters: { status: "", name: "", tenant: "" },
    cursors: [null], // the cursor of each page seen; the last is the current page
    next: null,
    rows: new Map(), // job id -> row element (jobs view)
    job: null, // the open job's record
    jobStream: null,
    jobRefresh: null,
    queuedTimer: null,
    attempt: null,
    opening: null, // the id of the job the page is loading or showing
  };

  // ---------- small helpers ----------

  // Bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) reorder the text after them: a name, a
  // reason or a log line could read differently from what it is ("Trojan Source"). Shown as <U+202E>, never applied.
  const BIDI = /[\u202a-\u202e\u2066-\u2069]/g;
  function neutral(text) {
    return String(text).replace(BIDI, (ch) => `<U+${ch.charCodeAt(0).toString(16).toUpperCase()}>`);
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined) continue;
        if (key === "text") node.textContent = neutral(value);
        else if (key === "class") node.className = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else node.setAttribute(key, String(value));
      }
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      const detail = body && typeof body === "object" ? body.detail || body.title : String(body);
      const error = new Error(`${response.status}: ${detail}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function formatTime(iso) {
    if (!iso) return "—";
    const t = new Date(iso);
    if (Number.isNaN(t.getTime())) return String(iso);
    return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
      `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 10) return `${seconds.toFixed(2)} s`;
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60);
    if (m < 120) return `${m} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function secondsBetween(from, to) {
    if (!from) return null;
    const start = new Date(from).getTime();
    const end = to ? new Date(to).getTime() : Date.now();
    return Math.max(0, (end - start) / 1000);
  }

  function statusLabel(status) {
    return String(status || "unknown").replace("_", " ");
  }

  function badge(status) {
    return el("span", { class: `badge status-${status}`, text: statusLabel(status) });
  }

  // ---------- ANSI colours, as text ----------

  const SGR = /\x1b\[([0-9;]*)m/g;
  const BASIC = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

  function colour256(n) {
    if (n < 16) return null; // a class instead
    if (n >= 232) {
      const v = 8 + (n - 232) * 10;
      return `rgb(${v},${v},${v})`;
    }
    const i = n - 16;
    const level = (x) => (x === 0 ? 0 : 55 + x * 40);
    return `rgb(${level(Math.floor(i / 36))},${level(Math.floor(i / 6) % 6)},${level(i % 6)})`;
  }

  function applySgr(style, codes) {
    const list = codes === "" ? [0] : codes.split(";").map((c) => Number.parseInt(c || "0", 10));
    for (let i = 0; i < list.length; i++) {
      const c = list[i];
      if (c === 0) Object.assign(style, { fg: null, bg: null, fgRgb: null, bgRgb: null, bold: false, dim: false, italic: false, underline: false });
      else if (c === 1) style.bold = true;
      else if (c === 2) style.dim = true;
      else if (c === 3) style.italic = true;
      else if (c === 4) style.underline = true;
      else if (c === 22) style.bold = style.dim = false;
      else if (c === 23) style.italic = false;
      else if (c === 24) style.underline = false;
      else if (c >= 30 && c <= 37) Object.assign(style, { fg: c - 30, fgRgb: null });
      else if (c >= 90 && c <= 97) Object.assign(style, { fg: c - 90 + 8, fgRgb: null });
      else if (c === 39) Object.assign(style, { fg: null, fgRgb: null });
      else if (c >= 40 && c <= 47) Object.assign(style, { bg: c - 40, bgRgb: null });
      else if (c >= 100 && c <= 107) Object.assign(style, { bg: c - 100 + 8, bgRgb: null });
      else if (c === 49) Object.assign(style, { bg: null, bgRgb: null });
      else if ((c === 38 || c === 48) && list[i + 1] === 5 && i + 2 < list.length) {
        const n = list[i + 2] & 255;
        const key = c === 38 ? "fg" : "bg";
        if (n < 16) Object.assign(style, { [key]: n, [key + "Rgb"]: null });
        else Object.assign(style, { [key]: null, [key + "Rgb"]: colour256(n) });
        i += 2;
      } else if ((c === 38 || c === 48) && list[i + 1] === 2 && i + 4 < list.length) {
        const [r, g, b] = list.slice(i + 2, i + 5).map((v) => v & 255);
        const key = c === 38 ? "fg" : "bg";
        Object.assign(style, { [key]: null, [key + "Rgb"]: `rgb(${r},${g},${b})` });
        i += 4;
      }
    }
  }

  // Escape sequences other than colours (cursor moves, titles, links) and other control characters are shown
  // visibly in caret notation, as `cat -v` does (ESC is ^[, BEL ^G): never interpreted.
  function visible(text) {
    return neutral(text.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (ch) =>
      ch === "\x7f" ? "^?" : `^${String.fromCharCode(ch.charCodeAt(0) + 64)}`));
  }

  function appendSpan(parent, text, style) {
    if (!text) return;
    const shown = visible(text);
    const plain = !style.fg && style.fg !== 0 && !style.bg && style.bg !== 0 && !style.fgRgb && !style.bgRgb &&
      !style.bold && !style.dim && !style.italic && !style.underline;
    if (plain) {
      parent.append(document.createTextNode(shown));
      return;
    }
    const span = document.createElement("span");
    const classes = [];
    if (style.fg !== null && style.fg !== undefined) classes.push(`ansi-fg-${style.fg}`);
    if (style.bg !== null && style.bg !== undefined) classes.push(`ansi-bg-${style.bg}`);
    if (style.bold) classes.push("ansi-bold");
    if (style.dim) classes.push("ansi-dim");
    if (style.italic) classes.push("ansi-italic");
    if (style.underline) classes.push("ansi-underline");
    span.className = classes.join(" ");
    if (style.fgRgb) span.style.color = style.fgRgb; // CSSOM, allowed by the CSP (no inline style markup)
    if (style.bgRgb) span.style.backgroundColor = style.bgRgb;
    span.textContent = shown;
    parent.append(span);
  }

  function renderAnsi(parent, text) {
    const style = {};
    let last = 0;
    SGR.lastIndex = 0;
    for (let match = SGR.exec(text); match !== null; match = SGR.exec(text)) {
      appendSpan(parent, text.slice(last, match.index), style);
      applySgr(style, match[1]);
      last = SGR.lastIndex;
    }
    appendSpan(parent, text.slice(last), style);
  }

  // ---------- live connection: every job's status changes ----------

  let events = null;
  function connectEvents() {
    events = new EventSource("/ui/api/events");
    events.addEventListener("ready", () => { $("live").textContent = "live"; $("live").dataset.state = "live"; });
    events.addEventListener("error", () => { $("live").textContent = "reconnecting…"; $("live").dataset.state = "down"; });
    events.addEventListener("job", (message) => {
      const event = JSON.parse(message.data);
      if (state.view === "jobs") onJobChanged(event.job_id, event.status);
    });
  }

  // ---------- jobs view ----------

  function matches(record) {
    const { status, name, tenant } = state.filters;
    if (status && record.status !== status) return false;
    if (tenant && (record.tenant || "default") !== tenant) return false;
    if (name && !String(record.name || "").toLowerCase().includes(name.toLowerCase())) return false;
    return true;
  }

  function jobRow(record) {
    const duration = record.started_at ? secondsBetween(record.started_at, record.finished_at) : null;
    const link = el("a", { href: `#/job/${encodeURIComponent(record.id)}`, class: "mono", title: record.id,
      text: String(record.id).slice(0, 8) });
    return el("tr", { dataset: { jobId: record.id, status: record.status, submitted: record.submitted_at || "" } },
      el("td", null, link),
      el("td", { class: "name", text: record.name || "—" }),
      el("td", null, badge(record.status)),
      el("td", { class: "wide", text: record.lane || "—" }),
      el("td", { class: "wide tenant", text: record.tenant || "—" }),
      el("td", { class: "wide", text: formatTime(record.submitted_at) }),
      el("td", { class: "wide", text: formatDuration(duration) }));
  }

  function renderJobs(records) {
    const body = $("jobs");
    body.replaceChildren();
    state.rows.clear();
    for (const record of records.filter(matches)) {
      const row = jobRow(record);
      state.rows.set(record.id, row);
      body.append(row);
    }
    $("jobs-empty").hidden = state.rows.size > 0;
  }

  function upsertRow(record) {
    const body = $("jobs");
    const old = state.rows.get(record.id);
    if (!matches(record)) {
      if (old) { old.remove(); state.rows.delete(record.id); }
      $("jobs-empty").hidden = state.rows.size > 0;
      return;
    }
    const row = jobRow(record);
    if (old) {
      old.replaceWith(row);
    } else {
      // newest first: before the first row submitted earlier
      const key = record.submitted_at || "";
      const before = Array.from(body.children).find((r) => (r.dataset.submitted || "") < key);
      body.insertBefore(row, before || null);
      while (body.children.length > PAGE_SIZE) {
        const extra = body.lastElementChild;
        state.rows.delete(extra.dataset.jobId);
        extra.remove();
      }
    }
    state.rows.set(record.id, row);
    $("jobs-empty").hidden = state.rows.size > 0;
  }

  // The record store is written by the collector a moment after a status event is published, so a record read
  // right after an event can still show the status before it: read again, briefly, until it has caught up.
  const RANK = { queued: 0, running: 1 };
  const rank = (status) => (status in RANK ? RANK[status] : 2);

  async function recordAtLeast(jobId, status) {
    for (let attempt = 0; ; attempt++) {
      const record = await api(`/jobs/${encodeURIComponent(jobId)}`);
      if (!status || rank(record.status) >= rank(status) || attempt >= 20) return record;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  // One fetch per job at a time (a later answer must not be overwritten by an earlier, slower one); a change
  // that comes meanwhile fetches again once it is back.
  const fetching = new Map(); // job id -> the newest status announced during the fetch, or null

  async function onJobChanged(jobId, status) {
    const onFirstPage = state.cursors.length === 1;
    if (!onFirstPage && !state.rows.has(jobId)) return;
    if (fetching.has(jobId)) {
      fetching.set(jobId, status);
      return;
    }
    fetching.set(jobId, null);
    try {
      const record = await recordAtLeast(jobId, status);
      if (state.view === "jobs") upsertRow(record);
    } catch (error) {
      if (error.status !== 404) showError(`Could not load job ${jobId}: ${error.message}`);
    } finally {
      const again = fetching.get(jobId);
      fetching.delete(jobId);
      if (again) onJobChanged(jobId, again);
    }
    scheduleStats();
  }

  let listing = 0; // the newest listing asked for: an older answer that comes later is dropped

  async function loadJobs() {
    const mine = ++listing;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.filters.status) params.set("status", state.filters.status);
    // The API may not filter by name yet; sent anyway, and the page filters what it got either way.
    if (state.filters.name) params.set("name", state.filters.name);
    if (state.filters.tenant) params.set("tenant", state.filters.tenant);
    const cursor = state.cursors[state.cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    try {
      const page = await api(`/jobs?${params}`);
      if (mine !== listing) return;
      state.next = page.next;
      renderJobs(page.jobs);
      $("older").disabled = !page.next;
      $("newer").disabled = state.cursors.length <= 1;
      showError("");
    } catch (error) {
      showError(`Could not list jobs: ${error.message}`);
    }
  }

  let statsTimer = null;
  let statsSoon = null;
  function scheduleStats() {
    if (statsSoon === null) statsSoon = setTimeout(() => { statsSoon = null; loadStats(); }, 1000);
  }

  async function loadStats() {
    if (state.view !== "jobs") return;
    try {
      const stats = await api("/ui/api/stats");
      renderLanes(stats.lanes);
      renderLaneTenants(stats.tenants || []);
      renderThroughput(stats.throughput);
    } catch (error) {
      showError(`Could not load lane stats: ${error.message}`);
    }
  }

  function renderLaneTenants(rows) {
    $("lane-tenants").replaceChildren(...rows.map((row) => el("tr", { dataset: { lane: row.lane, tenant: row.tenant } },
      el("th", { scope: "row", text: row.lane }),
      el("td", { class: "tenant", text: row.tenant }),
      el("td", { class: "queued", text: row.queued }),
      el("td", { class: "running", text: row.running }))));
  }

  function renderLanes(lanes) {
    const body = $("lanes");
    body.replaceChildren(...lanes.map((lane) => el("tr", { dataset: { lane: lane.lane } },
      el("th", { scope: "row", text: lane.lane }),
      el("td", { class: "queued", text: lane.queued }),
      el("td", { class: "running", text: lane.running }),
      el("td", { text: lane.oldest_queued_at ? `${formatDuration(secondsBetween(lane.oldest_queued_at))} ago` : "—" }))));
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function renderThroughput(throughput) {
    const buckets = throughput.buckets;
    const width = 300, height = 80, gap = 2;
    const barWidth = width / buckets.length - gap;
    const peak = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed));
    const total = buckets.reduce((sum, b) => sum + b.succeeded + b.failed, 0);
    const failed = buckets.reduce((sum, b) => sum + b.failed, 0);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 14}`, role: "img", class: "bars" });
    const title = svg("title");
    title.textContent = `${total} jobs finished in the last 10 minutes, ${failed} of them not successfully`;
    chart.append(title);
    buckets.forEach((b, i) => {
      const x = i * (width / buckets.length);
      const okHeight = (b.succeeded / peak) * height;
      const badHeight = (b.failed / peak) * height;
      const label = svg("title");
      const ago = (buckets.length - i) * throughput.bucket_s;
      label.textContent = `${b.succeeded} succeeded, ${b.failed} other, ${ago}–${ago - throughput.bucket_s} s ago`;
      const group = svg("g");
      group.append(label,
        svg("rect", { x, y: height - okHeight, width: barWidth, height: okHeight, class: "ok" }),
        svg("rect", { x, y: height - okHeight - badHeight, width: barWidth, height: badHeight, class: "bad" }));
      chart.append(group);
    });
    chart.append(svg("line", { x1: 0, y1: height + 0.5, x2: width, y2: height + 0.5, class: "axis" }));
    const left = svg("text", { x: 0, y: height + 12, class: "tick" });
    left.textContent = "−10 min";
    const right = svg("text", { x: width, y: height + 12, class: "tick", "text-anchor": "end" });
    right.textContent = `now · ${total} finished`;
    chart.append(left, right);
    $("throughput").replaceChildren(chart);
  }

  // ---------- job view ----------

  function closeJob() {
    if (state.jobStream) state.jobStream.close();
    state.jobStream = null;
    clearTimeout(state.jobRefresh);
    clearInterval(state.queuedTimer);
    state.queuedTimer = null;
    state.job = null;
    state.attempt = null;
  }

  function setText(id, value) {
    $(id).textContent = value === null || value === undefined || value === "" ? "—" : neutral(value);
  }

  // Under fair share: how many of the jobs ahead in its lane are its own tenant's (when others' are too).
  function ownAhead(record) {
    const own = record.queue ? record.queue.tenant_position : undefined;
    return Number.isInteger(own) && own !== record.queue_position && record.tenant
      ? ` (${own} of them ${record.tenant}'s)` : "";
  }

  function renderJob(record) {
    state.job = record;
    setText("job-name", record.name);
    setText("job-id", record.id);
    const status = $("job-status");
    status.className = `badge status-${record.status}`;
    status.textContent = statusLabel(record.status);
    $("job-view").dataset.status = record.status;
    $("job-reason").textContent = neutral(record.reason || "");
    setText("job-lane", record.lane ? `${record.lane} (priority ${record.priority})` : null);
    setText("job-tenant", record.tenant || null);
    const queued = record.status === "queued";
    $("job-position-label").hidden = $("job-position").hidden = !queued;
    setText("job-position", queued && record.queue_position !== undefined
      ? (record.queue_position === 0 ? "next" : `${record.queue_position} ahead${ownAhead(record)}`) : null);
    setText("job-submitted", formatTime(record.submitted_at));
    setText("job-started", record.started_at
      ? `${formatTime(record.started_at)} (waited ${formatDuration(record.queue_wait_s)})` : null);
    setText("job-finished", record.finished_at
      ? `${formatTime(record.finished_at)} (ran ${formatDuration(secondsBetween(record.started_at, record.finished_at))})`
      : null);
    $("job-cancel").hidden = !state.config.cancel || TERMINAL.has(record.status);
    renderSteps(record);
    renderResults(record);
    if (queued && state.queuedTimer === null) {
      state.queuedTimer = setInterval(() => refreshJob(0), QUEUED_REFRESH_MS);
    } else if (!queued && state.queuedTimer !== null) {
      clearInterval(state.queuedTimer);
      state.queuedTimer = null;
    }
  }

  function renderSteps(record) {
    const steps = record.steps || [];
    const starts = steps.map((s) => s.started_at).filter(Boolean).map((t) => new Date(t).getTime());
    const origin = record.started_at ? new Date(record.started_at).getTime() : Math.min(...starts);
    const end = record.finished_at ? new Date(record.finished_at).getTime() : Date.now();
    const span = Math.max(1, end - origin);
    $("steps").replaceChildren(...steps.map((step) => {
      const bar = el("div", { class: `bar status-${step.status}` });
      if (step.started_at && Number.isFinite(origin)) {
        const from = new Date(step.started_at).getTime();
        const to = step.finished_at ? new Date(step.finished_at).getTime() : end;
        bar.style.marginLeft = `${Math.max(0, Math.min(100, ((from - origin) / span) * 100))}%`;
        bar.style.width = `${Math.max(1, Math.min(100, ((to - from) / span) * 100))}%`;
      } else {
        bar.style.width = "0";
      }
      const duration = step.duration_s ?? (step.started_at ? secondsBetween(step.started_at, step.finished_at) : null);
      return el("tr", { dataset: { step: step.id, status: step.status } },
        el("th", { scope: "row", text: `${step.id}${step.name ? ` · ${step.name}` : ""}` }),
        el("td", { class: "mono", text: step.image || "—" }),
        el("td", null, badge(step.status)),
        el("td", { class: "exit", text: step.exit_code ?? "—" }),
        el("td", { text: formatDuration(duration) }),
        el("td", { class: "wide timeline", "aria-hidden": "true" }, el("div", { class: "track" }, bar)),
        el("td", { class: "reason", text: step.reason || "" }));
    }));
  }

  // What the job kept (its artifacts and JUnit reports): failed tests first, then the counts of the rest.
  function renderResults(record) {
    const results = record.results;
    $("job-results").hidden = !results;
    if (!results) return;
    const tests = results.tests;
    setText("tests-summary", tests
      ? `${tests.tests} tests: ${tests.passed} passed, ${tests.failures} failed, ${tests.errors} errors, ` +
        `${tests.skipped} skipped (${tests.time_s} s)`
      : "No test reports.");
    const rows = (results.failed_tests || []).map((test) => el("tr", { dataset: { kind: test.kind } },
      el("td", null, el("span", { class: "badge status-failed", text: test.kind })),
      el("td", { class: "mono", text: [test.classname, test.name].filter(Boolean).join(".") }),
      el("td", { text: test.suite || "" }),
      el("td", null, el("details", null, el("summary", { text: test.message || "—" }),
        el("pre", { class: "output", text: test.output || "" })))));
    if (results.failed_tests_dropped) {
      rows.push(el("tr", null, el("td", { colspan: "4", class: "muted",
        text: `… and ${results.failed_tests_dropped} more failed` })));
    }
    if (tests) {
      const rest = [["passed", tests.passed], ["skipped", tests.skipped]].filter(([, n]) => n > 0);
      rows.push(...rest.map(([what, n]) => el("tr", { dataset: { kind: what } },
        el("td", null, el("span", { class: `badge status-${what === "passed" ? "succeeded" : "cancelled"}`, text: what })),
        el("td", { colspan: "3", class: "muted", text: `${n} test${n === 1 ? "" : "s"}` }))));
    }
    $("tests").replaceChildren(...rows);
    const base = `/jobs/${encodeURIComponent(record.id)}/artifacts/`;
    $("artifacts").replaceChildren(...(results.artifacts || []).map((file) => el("li", null,
      el("a", { href: base + file.name.split("/").map(encodeURIComponent).join("/"), download: "", text: file.name }),
      el("span", { class: "muted", text: ` ${file.size} bytes · ${file.content_type}` }))));
    const notes = [
      ...(results.reports || []).filter((r) => !r.parsed).map((r) => `report ${r.path}: ${r.reason}`),
      ...(results.skipped || []).map((s) => `not kept: ${s.path}: ${s.reason}`),
      ...(results.warnings || []),
    ];
    $("results-notes").replaceChildren(...notes.map((text) => el("li", { text })));
  }

  function stepLog(stepId) {
    const logs = $("logs");
    let section = logs.querySelector(`section[data-step="${CSS.escape(String(stepId))}"]`);
    if (section) return section.querySelector(".lines");
    const step = (state.job && state.job.steps || []).find((s) => s.id === stepId);
    const title = stepId === 0 ? "hades" : `step ${stepId}${step && step.name ? ` · ${step.name}` : ""}`;
    section = el("section", { class: "step-log", dataset: { step: stepId } },
      el("h3", { text: title }), el("div", { class: "lines", role: "log", "aria-label": `log of ${title}` }));
    const later = Array.from(logs.children).find((s) => Number(s.dataset.step) > stepId);
    logs.insertBefore(section, later || null);
    return section.querySelector(".lines");
  }

  function addLine(line) {
    if (state.attempt !== null && line.attempt !== state.attempt) $("logs").replaceChildren(); // a retry starts over
    state.attempt = line.attempt;
    const lines = stepLog(line.step ?? 0);
    const row = el("div", { class: `line ${line.output_stream === "stderr" ? "stderr" : ""}`, dataset: { seq: line.seq } });
    renderAnsi(row, line.message);
    const follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    lines.append(row);
    if (follow && state.job && !TERMINAL.has(state.job.status)) row.scrollIntoView({ block: "nearest" });
  }

  async function refreshJob(delayMs, status) {
    clearTimeout(state.jobRefresh);
    const id = state.job && state.job.id;
    state.jobRefresh = setTimeout(async () => {
      if (!id || !state.job || state.job.id !== id) return;
      try {
        const record = await recordAtLeast(id, status);
        if (state.job && state.job.id === id) renderJob(record);
      } catch (error) {
        showError(`Could not load job: ${error.message}`);
      }
    }, delayMs);
  }

  // The job page without a job: nothing of the job shown before may stay under another id's error.
  function clearJob(jobId) {
    for (const id of ["job-name", "job-lane", "job-position", "job-submitted", "job-started", "job-finished"]) {
      setText(id, null);
    }
    setText("job-id", jobId);
    $("job-status").className = "badge";
    $("job-status").textContent = "";
    $("job-reason").textContent = "";
    $("job-cancel").hidden = true;
    $("job-download").removeAttribute("href");
    delete $("job-view").dataset.status;
    $("logs").replaceChildren();
    $("steps").replaceChildren();
  }

  async function openJob(jobId) {
    closeJob();
    clearJob(jobId);
    state.opening = jobId;
    let record;
    try {
      record = await api(`/jobs/${encodeURIComponent(jobId)}`);
    } catch (error) {
      if (state.opening !== jobId) return; // another job was opened meanwhile
      showError(error.status === 404 ? `No job with id ${neutral(jobId)}.` : `Could not load job: ${error.message}`);
      return;
    }
    if (state.opening !== jobId) return;
    showError("");
    renderJob(record);
    $("job-download").href = `/jobs/${encodeURIComponent(jobId)}/logs?format=text`;
    $("job-download").setAttribute("download", `${jobId}.log`);
    const stream = new EventSource(`/jobs/${encodeURIComponent(jobId)}/logs/stream`);
    state.jobStream = stream;
    stream.addEventListener("message", (message) => addLine(JSON.parse(message.data)));
    stream.addEventListener("status", (message) => {
      const event = JSON.parse(message.data);
      refreshJob(100, event.kind === "job" ? event.status : null);
    });
    stream.addEventListener("end", (message) => {
      stream.close();
      $("logs").dataset.ended = "true";
      refreshJob(0, JSON.parse(message.data).status);
    });
  }

  async function cancelJob() {
    const job = state.job;
    if (!job || !window.confirm(`Cancel job ${job.name || job.id}?`)) return;
    const button = $("job-cancel");
    button.disabled = true;
    try {
      await api(`/ui/api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
      button.textContent = "Cancelling…";
      refreshJob(500);
    } catch (error) {
      showError(`Could not cancel: ${error.message}`);
      button.disabled = false;
    }
  }

  // ---------- routing ----------

  function route() {
    const match = /^#\/job\/([^/?#]+)/.exec(location.hash);
    showError("");
    if (match) {
      state.view = "job";
      $("jobs-view").hidden = true;
      $("job-view").hidden = false;
      $("job-cancel").textContent = "Cancel job";
      $("job-cancel").disabled = false;
      delete $("logs").dataset.ended;
      let jobId;
      try {
        jobId = decodeURIComponent(match[1]);
      } catch (error) { // a malformed escape such as %E0%A4%A: no such job, and nothing else to show
        closeJob();
        clearJob(match[1]);
        showError(`No job with id ${neutral(match[1])}: the address is not a valid job link.`);
        return;
      }
      openJob(jobId);
      document.title = "Hades · job";
    } else {
      closeJob();
      state.view = "jobs";
      $("job-view").hidden = true;
      $("jobs-view").hidden = false;
      document.title = "Hades · jobs";
      loadJobs();
      loadStats();
    }
  }

  function applyFilters(event) {
    event.preventDefault();
    const id = $("find-id").value.trim();
    if (id) {
      $("find-id").value = "";
      location.hash = `#/job/${encodeURIComponent(id)}`;
      return;
    }
    state.filters = {
      status: $("filter-status").value,
      name: $("filter-name").value.trim(),
      tenant: $("filter-tenant").value.trim(),
    };
    state.cursors = [null];
    loadJobs();
  }

  async function start() {
    try {
      state.config = await api("/ui/api/config");
    } catch (error) {
      showError(`Could not load the dashboard's settings: ${error.message}`);
    }
    $("filters").addEventListener("submit", applyFilters);
    $("filter-status").addEventListener("change", applyFilters);
    $("older").addEventListener("click", () => { if (state.next) { state.cursors.push(state.next); loadJobs(); } });
    $("newer").addEventListener("click", () => { if (state.cursors.length > 1) { state.cursors.pop(); loadJobs(); } });
    $("job-cancel").addEventListener("click", cancelJob);
    window.addEventListener("hashchange", route);
    statsTimer = setInterval(loadStats, STATS_EVERY_MS);
    connectEvents();
    route();
    document.body.dataset.ready = "true";
  }

  start();
})();
