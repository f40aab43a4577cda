// The Sluice console: polls GET /overview once a second and renders it; its buttons call the
// admin API's plugin endpoints. No library, no build step: this file is served as written.
"use strict";

const POLL_MS = 1000;
// Polls that fail in a row before the page says the runtime is not answering.
const DOWN_AFTER = 2;
const CHART_MS = 5 * 60 * 1000;
const TOKEN_KEY = "sluice-admin-token";

const $ = (selector, root = document) => root.querySelector(selector);
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let failedPolls = 0;
/** The next poll's timer, and whether one is under way (so that polling now never doubles). */
let nextPoll = null;
let polling = false;
let lastAnswer = null;
// The slot an upload goes to while the file chooser is open: {pipeline, index, shadow}.
let uploadTo = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function esc(s) {
  const entities = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  return String(s ?? "").replace(/[&<>"']/g, (c) => entities[c]);
}
const count = (x) => Number(x ?? 0).toLocaleString("en-US");
/** A JSON value as one line of text, cut at `max` characters. */
function jsonText(v, max = 600) {
  const text = typeof v === "string" ? v : JSON.stringify(v);
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
const short = (sha) => (sha || "").slice(0, 12);
const clock = (ms) => new Date(ms).toLocaleTimeString("en-GB");
const ms = (x) => (x == null ? "–" : x < 10 ? `${x.toFixed(2)} ms` : `${Math.round(x)} ms`);

function ago(at, now) {
  const s = Math.max(0, Math.round((now - at) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** One admin API call: JSON back, or an ApiError with the runtime's own message. */
async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body) headers["Content-Type"] = "application/wasm";
  const answer = await fetch(path, {
    method,
    headers,
    body,
    cache: "no-store",
    // A swap compiles the plugin: give it time; a poll that hangs counts as no answer.
    signal: AbortSignal.timeout(method === "GET" ? 3000 : 120000),
  });
  let data = null;
  try {
    data = await answer.json();
  } catch {
    // not JSON: the status says it
  }
  if (answer.status === 401) {
    askForToken();
    throw new ApiError(401, data?.error || "the admin API asks for its token");
  }
  if (!answer.ok) throw new ApiError(answer.status, data?.error || answer.statusText);
  return data;
}

function askForToken() {
  const form = $("#token-form");
  if (!form.hidden) return;
  form.hidden = false;
  $("#forget-token").hidden = true;
  if (token) say("The admin token given was refused: enter the one the runtime was started with.", true);
  $("#token").focus();
}

function say(text, isError = false) {
  const m = $("#message");
  m.textContent = text;
  m.className = isError ? "error" : "";
  m.hidden = false;
}

async function poll() {
  clearTimeout(nextPoll);
  if (polling) return;
  polling = true;
  try {
    const overview = await api("GET", "/overview");
    failedPolls = 0;
    lastAnswer = Date.now();
    $("#banner").hidden = true;
    $("#token-form").hidden = true;
    $("#forget-token").hidden = !token;
    render(overview);
  } catch (e) {
    if (!(e instanceof ApiError) && ++failedPolls >= DOWN_AFTER) notAnswering(e);
  } finally {
    polling = false;
    nextPoll = setTimeout(poll, POLL_MS);
  }
}

function notAnswering(e) {
  const banner = $("#banner");
  const since = lastAnswer ? `; the figures below are from ${clock(lastAnswer)}` : "";
  banner.textContent = `The runtime is not answering (${e.name === "TimeoutError" ? "no answer in 3 s" : "connection failed"})${since}. Retrying every second.`;
  banner.hidden = false;
  const health = $("#health");
  health.textContent = "not answering";
  health.className = "badge down";
  for (const section of document.querySelectorAll(".pipeline")) section.classList.add("stale");
}

/** Sets an element's HTML only when it changed, so buttons and selections stay put. */
function setHTML(el, html) {
  if (el.dataset.html !== html) {
    el.innerHTML = html;
    el.dataset.html = html;
  }
}

function render(o) {
  const health = $("#health");
  health.textContent = o.healthy ? "healthy" : "unhealthy";
  health.className = `badge ${o.healthy ? "ok" : "unhealthy"}`;
  $("#updated").textContent = `updated ${clock(o.now_ms)}`;
  const main = $("#pipelines");
  const seen = new Set();
  for (const p of o.pipelines) {
    seen.add(p.name);
    let section = [...main.children].find((s) => s.dataset.pipeline === p.name);
    if (!section) {
      section = pipelineSection(p.name);
      main.append(section);
    }
    section.classList.remove("stale");
    renderPipeline(section, p, o.now_ms);
  }
  for (const s of [...main.children]) if (!seen.has(s.dataset.pipeline)) s.remove();
  if (!o.pipelines.length) setHTML(main, '<p class="none">No pipelines run here.</p>');
}

function pipelineSection(name) {
  const section = document.createElement("section");
  section.className = "pipeline";
  section.dataset.pipeline = name;
  const figure = (field, label) => `<div class="figure"><b data-field="${field}">–</b><span>${label}</span></div>`;
  section.innerHTML = `
    <div class="title"><h2>${esc(name)}</h2><span class="badge" data-field="state"></span>
      <span class="muted" data-field="reason"></span></div>
    <div class="figures">
      ${figure("in", "records in")}${figure("out", "records out")}${figure("failed", "failed")}
      ${figure("rate", "records/s in (last 5 s)")}${figure("p50", "batch p50 (1 min)")}${figure("p99", "batch p99 (1 min)")}
    </div>
    <div class="chart">
      <svg viewBox="0 0 300 100" preserveAspectRatio="none" role="img" aria-label="records per second, last 5 minutes">
        <polyline class="in"></polyline><polyline class="out"></polyline><polyline class="failed"></polyline>
      </svg>
      <div class="legend muted"><span class="in">in/s</span> <span class="out">out/s</span>
        <span class="failed">failed/s</span> · <span data-field="scale"></span></div>
    </div>
    <h3>Endpoints</h3><div data-part="endpoints"></div>
    <h3>Plugins</h3><div data-part="plugins"></div>
    <h3>Last failures</h3><div data-part="failures"></div>`;
  return section;
}

function renderPipeline(section, p, now) {
  const field = (name) => $(`[data-field="${name}"]`, section);
  const state = field("state");
  state.textContent = p.state;
  state.className = `badge ${p.state}`;
  const since = `since ${clock(p.since_ms)}`;
  field("reason").textContent = p.reason ? `${p.endpoint ? p.endpoint + ": " : ""}${p.reason} (${since})` : since;
  field("in").textContent = count(p.records?.in);
  field("out").textContent = count(p.records?.out);
  field("failed").textContent = count(p.records?.failed);
  const rates = p.recent?.rates || { in: [], out: [], failed: [] };
  const last = rates.in.slice(-5);
  field("rate").textContent = last.length ? count(Math.round(last.reduce((s, r) => s + r, 0) / last.length)) : "–";
  field("p50").textContent = ms(p.recent?.batch_p50_ms);
  field("p99").textContent = ms(p.recent?.batch_p99_ms);
  drawChart(section, rates, now);
  setHTML($('[data-part="endpoints"]', section), endpointsHTML(p, now));
  renderPlugins($('[data-part="plugins"]', section), p, now);
  setHTML($('[data-part="failures"]', section), failuresHTML(p.failures || []));
}

/** Records/s: one series per counter, the last point at `rates.last_ms`, `step_ms` apart. */
function drawChart(section, rates, now) {
  const series = ["in", "out", "failed"];
  const max = Math.max(1, ...series.flatMap((name) => rates[name]));
  const x = (t) => (((t - (now - CHART_MS)) / CHART_MS) * 300).toFixed(1);
  const y = (v) => (98 - (v / max) * 94).toFixed(1);
  for (const name of series) {
    const values = rates[name];
    const at = (i) => rates.last_ms - (values.length - 1 - i) * rates.step_ms;
    const points = values.map((v, i) => `${x(at(i))},${y(v)}`).join(" ");
    $(`polyline.${name}`, section).setAttribute("points", points);
  }
  $('[data-field="scale"]', section).textContent = `top ${count(Math.round(max))}/s · last 5 min`;
}

function endpointsHTML(p, now) {
  const rows = [];
  const lags = new Map();
  for (const l of p.kafka_lag || []) {
    if (!lags.has(l.uri)) lags.set(l.uri, []);
    lags.get(l.uri).push(l);
  }
  for (const [uri, parts] of lags) {
    const total = parts.reduce((s, l) => s + l.lag, 0);
    const each = parts.map((l) => `p${l.partition}: ${count(l.lag)}`).join(" · ");
    rows.push(`<tr><td class="mono">${esc(uri)}</td><td>Kafka lag ${count(total)}</td><td class="muted">${esc(each)}</td></tr>`);
  }
  for (const t of p.tables || []) {
    const last = t.last_at_ms ? `last commit ${ago(t.last_at_ms, now)} (${clock(t.last_at_ms)})` : "";
    rows.push(`<tr><td class="mono">${esc(t.uri)}</td><td>${count(t.commits)} commits, ${count(t.files)} files, ${count(t.records)} records</td>
      <td class="muted">${last}${t.conflicts ? `, ${count(t.conflicts)} conflicts retried` : ""}</td></tr>`);
  }
  for (const w of p.objects || []) {
    const last = w.last_at_ms ? `last written ${ago(w.last_at_ms, now)} (${clock(w.last_at_ms)})` : "";
    rows.push(`<tr><td class="mono">${esc(w.uri)}</td><td>${count(w.objects)} objects, ${count(w.records)} records, ${bytes(w.bytes)}</td>
      <td class="muted">${last}</td></tr>`);
  }
  return rows.length
    ? `<table>${rows.join("")}</table>`
    : '<p class="none">No Kafka lag, table commit or object written reported by its endpoints yet.</p>';
}

function renderPlugins(container, p, now) {
  const slots = p.plugins || [];
  if (!slots.length) {
    setHTML(container, '<p class="none">No plugins.</p>');
    return;
  }
  if (container.dataset.html) {
    container.innerHTML = "";
    delete container.dataset.html;
  }
  const seen = new Set();
  for (const s of slots) {
    seen.add(String(s.index));
    let card = [...container.children].find((c) => c.dataset.slot === String(s.index));
    if (!card) {
      card = document.createElement("div");
      card.className = "slot";
      card.dataset.slot = String(s.index);
      card.innerHTML = '<div data-part="version"></div><div class="actions" data-part="actions"></div><div data-part="shadow"></div>';
      container.append(card);
    }
    setHTML($('[data-part="version"]', card), versionHTML(s, now));
    setHTML($('[data-part="actions"]', card), actionsHTML(s));
    setHTML($('[data-part="shadow"]', card), s.shadow ? shadowHTML(s.shadow) : "");
  }
  for (const c of [...container.children]) if (!seen.has(c.dataset.slot)) c.remove();
}

function versionHTML(s, now) {
  const rate = s.records ? ((100 * s.failures) / s.records).toFixed(2) : "0";
  let probation = "";
  if (s.probation) {
    const pr = s.probation;
    const failing = pr.records ? ((100 * pr.failures) / pr.records).toFixed(1) : "0";
    probation = `<div>On probation: ${count(pr.failures)} of ${count(pr.records)} records failed (${failing} %; rolled back above
      ${(pr.max_failure_rate * 100).toFixed(0)} %), ends after ${count(pr.window_records)} records or in ${Math.ceil(pr.remaining_ms / 1000)} s</div>`;
  }
  const history = s.history.length
    ? s.history.map((h) => `<code title="${esc(h)}">${short(h)}</code>`).join(", ")
    : '<span class="none">none</span>';
  const error = s.last_error ? `<div class="muted">Last failed load: ${esc(s.last_error)}</div>` : "";
  return `<table><tr>
      <td><b>#${s.index} ${esc(s.name)}</b> <span class="badge ${esc(s.status)}" data-field="status">${esc(s.status)}</span>
        ${s.shadow ? '<span class="badge shadow">shadow run</span>' : ""}</td>
      <td>live <code data-field="sha256" title="${esc(s.sha256)}">${short(s.sha256)}</code>,
        loaded ${clock(s.loaded_at_ms)} (${ago(s.loaded_at_ms, now)}, ${esc(s.origin)})</td>
      <td class="num">${count(s.records)} records, ${count(s.failures)} failed (${rate} %)</td></tr>
    <tr><td colspan="3" class="muted">Kept for rollback: <span data-field="history">${history}</span> ·
      ${count(s.swaps)} swaps, ${count(s.rollbacks)} rollbacks, ${count(s.failed_loads)} failed loads
      ${probation}${error}</td></tr></table>`;
}

function actionsHTML(s) {
  const rollback = s.history.length
    ? `<button type="button" data-action="rollback">Roll back to ${short(s.history[0])}</button>`
    : '<button type="button" data-action="rollback" disabled title="no earlier version kept">Roll back</button>';
  const shadow = s.shadow
    ? `<button type="button" data-action="promote">Promote shadow</button>
       <button type="button" data-action="stop-shadow" class="danger">Stop shadow</button>`
    : '<button type="button" data-action="start-shadow">Start shadow run…</button>';
  return `<button type="button" data-action="upload">Upload new version…</button>${rollback}${shadow}`;
}

function shadowHTML(r) {
  const sample = (r.sample || []).slice(0, 3).map((d) =>
    `<pre><b>${esc(d.position)}</b>: ${esc((d.diff || []).join("; "))}
live:   ${esc(jsonText(d.live))}
shadow: ${esc(jsonText(d.shadow))}</pre>`).join("");
  return `<div class="shadow-report">Shadow <code title="${esc(r.sha256)}">${short(r.sha256)}</code>:
    <span data-field="compared">${count(r.compared)}</span> compared, ${count(r.equal)} equal,
    <span data-field="different">${count(r.different)}</span> different, ${count(r.shadow_failed)} failed in the shadow only,
    ${count(r.live_failed)} in live only, ${count(r.both_failed)} in both; ${count(r.skipped_batches)} of
    ${count(r.batches + r.skipped_batches)} batches skipped; batch ${r.live_batch_us} µs live, ${r.shadow_batch_us} µs shadow
    ${sample ? `<div>First differences:</div>${sample}` : ""}</div>`;
}

function failuresHTML(failures) {
  if (!failures.length) return '<p class="none">None.</p>';
  const rows = failures.slice().reverse().map((f) => `<tr><td>${clock(f.at_ms)}</td><td class="mono">${esc(f.position)}</td>
    <td>${esc(f.plugin ?? "–")}</td><td>${esc(f.reason)}</td><td class="mono value">${esc(f.value ?? "")}</td></tr>`);
  return `<table><tr><th>at</th><th>position</th><th>plugin</th><th>reason</th><th>value (first bytes)</th></tr>${rows.join("")}</table>`;
}

function slotPath(pipeline, index) {
  return `/pipelines/${encodeURIComponent(pipeline)}/plugins/${index}`;
}

/** Runs one button's call and says how it went. */
async function act(label, call) {
  say(`${label}…`);
  try {
    const answer = await call();
    const version = answer?.compared !== undefined ? "shadow" : "live version";
    say(`${label}: done${answer?.sha256 ? `, ${version} ${short(answer.sha256)}` : ""}.`);
  } catch (e) {
    say(`${label}: ${e.message}`, true);
  }
  const again = await api("GET", "/overview").catch(() => null);
  if (again) render(again);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const pipeline = button.closest(".pipeline").dataset.pipeline;
  const index = button.closest(".slot").dataset.slot;
  const path = slotPath(pipeline, index);
  const name = `${pipeline} #${index}`;
  switch (button.dataset.action) {
    case "upload":
    case "start-shadow":
      uploadTo = { pipeline, index, shadow: button.dataset.action === "start-shadow" };
      $("#wasm-file").value = "";
      $("#wasm-file").click();
      break;
    case "rollback":
      if (confirm(`Roll ${name} back to the previous version?`)) {
        act(`Rolling ${name} back`, () => api("POST", `${path}/rollback`));
      }
      break;
    case "promote":
      if (confirm(`Make the shadow of ${name} the live version?`)) {
        act(`Promoting the shadow of ${name}`, () => api("POST", `${path}/shadow/promote`));
      }
      break;
    case "stop-shadow":
      act(`Stopping the shadow of ${name}`, () => api("DELETE", `${path}/shadow`));
      break;
  }
});

$("#wasm-file").addEventListener("change", () => {
  const file = $("#wasm-file").files[0];
  const target = uploadTo;
  uploadTo = null;
  if (!file || !target) return;
  const what = target.shadow ? "as a shadow of" : "to";
  const label = `Loading ${file.name} (${bytes(file.size)}) ${what} ${target.pipeline} #${target.index}`;
  const query = target.shadow ? "?shadow=true" : "";
  act(label, () => api("PUT", slotPath(target.pipeline, target.index) + query, file));
});

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token").value = "";
  $("#token-form").hidden = true;
  $("#message").hidden = true;
  poll();
});

$("#forget-token").addEventListener("click", () => {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  askForToken();
});

poll();
