// swarmrun dashboard: a small single-page app over the JSON API; charts by Plotly (served locally).
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const conn = document.getElementById("conn");
let cleanup = [];

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmtNum(v, digits = 4) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(digits);
  return esc(typeof v === "object" ? JSON.stringify(v) : v);
}
function rate(r) { return r === null || r === undefined ? "—" : `${r.toFixed(1)}/s`; }
function badge(s) { return `<span class="badge ${esc(s)}">${esc(s)}</span>`; }
async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  return r.json();
}
async function postJSON(url, body) {
  const r = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Swarmrun-CSRF": CSRF },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  return r.json();
}
function every(ms, fn) { const t = setInterval(fn, ms); cleanup.push(() => clearInterval(t)); }
const LAYOUT = { margin: { l: 50, r: 16, t: 10, b: 40 }, font: { size: 12 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" };
const CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
const PLOT_CONFIG = { displaylogo: false, responsive: true };

// ----------------------------------------------------------------------------------- sweeps list
async function listView() {
  crumbs.innerHTML = "";
  view.innerHTML = `<div class="card"><h2>Sweeps</h2><table id="sweeps"><thead><tr>
    <th>Name</th><th>ID</th><th>State</th><th class="num">Done</th><th class="num">Failed</th>
    <th class="num">Total</th><th class="num">Rate</th><th class="num">ETA</th><th>Submitted</th></tr></thead>
    <tbody></tbody></table><div id="sweeps-empty" class="empty" hidden>No sweeps yet.</div></div>`;
  async function refresh() {
    const d = await getJSON("/api/sweeps");
    const body = view.querySelector("#sweeps tbody");
    body.innerHTML = d.sweeps.map((s) => `<tr class="link" data-id="${esc(s.id)}">
      <td>${esc(s.name)}</td><td><code>${esc(s.id.slice(0, 12))}</code></td><td>${badge(s.state)}</td>
      <td class="num">${s.done}</td><td class="num">${s.failed}</td><td class="num">${s.size}</td>
      <td class="num">${rate(s.rate)}</td><td class="num">${esc(s.eta_text)}</td><td>${esc(s.submitted_text)}</td></tr>`).join("");
    view.querySelector("#sweeps-empty").hidden = d.sweeps.length > 0;
    body.querySelectorAll("tr").forEach((tr) => tr.addEventListener("click", () => { location.hash = `#/sweep/${tr.dataset.id}`; }));
  }
  await refresh();
  every(2000, refresh);
}

// ------------------------------------------------------------------------------------ one sweep
async function sweepView(sid) {
  const s = await getJSON(`/api/sweeps/${sid}`);
  crumbs.innerHTML = `/ <a href="#/sweep/${esc(s.id)}">${esc(s.name)}</a> <code>${esc(s.id.slice(0, 12))}</code>`;
  const axes = s.columns.axes, values = s.columns.values;
  const varying = s.columns.varying.length ? s.columns.varying : axes;
  const defX = varying[varying.length - 1], defHue = varying.length > 1 ? varying[0] : "";
  const opt = (xs, sel) => xs.map((x) => `<option ${x === sel ? "selected" : ""}>${esc(x)}</option>`).join("");
  view.innerHTML = `
  <div class="card">
    <div class="controls"><h2 style="margin:0">${esc(s.name)}</h2><span id="state"></span>
      <span style="margin-left:auto"></span>
      <a href="/api/sweeps/${esc(s.id)}/download?format=csv"><button id="dl-csv">Download CSV</button></a>
      <a href="/api/sweeps/${esc(s.id)}/download?format=parquet"><button id="dl-parquet">Download Parquet</button></a></div>
    <div class="bar" id="bar"><div class="ok"></div><div class="bad"></div></div>
    <div class="stats">
      <div class="stat"><div class="v" id="done-count"></div><div class="k">done / total</div></div>
      <div class="stat"><div class="v" id="failed-count"></div><div class="k">failed</div></div>
      <div class="stat"><div class="v" id="rate"></div><div class="k">points per second</div></div>
      <div class="stat"><div class="v" id="eta"></div><div class="k">ETA</div></div>
      <div class="stat"><div class="v" id="workers"></div><div class="k">workers</div></div>
      <div class="stat"><div class="v" id="chunks"></div><div class="k">chunks running / queued</div></div>
    </div>
  </div>
  <div class="grid">
    <div class="card"><h3>Rate over time</h3><div id="rate-chart" class="chart"></div></div>
    <div class="card"><h3>Workers per node</h3><div id="nodes-chart" class="chart"></div></div>
  </div>
  <div class="card" style="margin-top:16px"><h3>Failures</h3><div id="failures"></div></div>
  <div class="card"><h3>Results plot</h3>
    <div class="controls">
      <label>kind</label><select id="kind"><option value="lines">value vs axis</option><option value="heatmap">heatmap</option></select>
      <label>x</label><select id="px">${opt(axes, defX)}</select>
      <label id="py-label">y</label><select id="py">${opt(values, values[0])}</select>
      <label id="phue-label">lines by</label><select id="phue"><option value="">(none)</option>${opt(axes, defHue)}</select>
      <button id="replot">Plot</button><span id="plot-note" class="muted"></span>
    </div>
    <div id="plot" class="chart tall"></div></div>
  <div class="card"><h3>Open a point</h3><div class="controls">
    <input id="point-index" type="number" min="0" max="${s.size - 1}" value="0" style="width:120px;padding:5px">
    <button id="open-point">Open</button></div></div>`;

  const rateX = (s.history || []).map((h) => new Date(Date.now() - (s.history.at(-1)[0] - h[0]) * 1000));
  Plotly.newPlot("rate-chart", [{ x: rateX, y: (s.history || []).map((h) => h[1]), mode: "lines", line: { color: "#2f6fdf" }, name: "points/s" }],
    { ...LAYOUT, yaxis: { title: { text: "points/s" }, rangemode: "tozero" } }, CONFIG);
  Plotly.newPlot("nodes-chart", [{ type: "bar", x: [], y: [], marker: { color: "#1f9d55" } }],
    { ...LAYOUT, yaxis: { title: { text: "workers" }, rangemode: "tozero", dtick: 1 } }, CONFIG);

  let lastFailed = -1;
  function show(d) {
    const okW = d.size ? (100 * (d.done - d.failed)) / d.size : 100, badW = d.size ? (100 * d.failed) / d.size : 0;
    view.querySelector("#bar .ok").style.width = `${okW}%`;
    view.querySelector("#bar .bad").style.width = `${badW}%`;
    view.querySelector("#state").innerHTML = badge(d.state);
    view.querySelector("#done-count").textContent = `${d.done}/${d.size}`;
    view.querySelector("#failed-count").textContent = d.failed;
    view.querySelector("#rate").textContent = d.rate === null ? "—" : d.rate.toFixed(1);
    view.querySelector("#eta").textContent = d.eta_text;
    view.querySelector("#workers").textContent = d.workers.running;
    view.querySelector("#chunks").textContent = `${d.chunks.running} / ${d.chunks.queued}`;
    if (d.rate !== null) Plotly.extendTraces("rate-chart", { x: [[new Date()]], y: [[d.rate]] }, [0], 600);
    Plotly.react("nodes-chart", [{ type: "bar", x: d.nodes.map((n) => n.node), y: d.nodes.map((n) => n.running), marker: { color: "#1f9d55" } }],
      { ...LAYOUT, yaxis: { title: { text: "workers" }, rangemode: "tozero", dtick: 1 } }, CONFIG);
    if (d.failed !== lastFailed) { lastFailed = d.failed; loadFailures(sid); }
  }
  show(s);
  const es = new EventSource(`/api/sweeps/${sid}/events`);
  es.onmessage = (e) => { conn.textContent = `live · ${new Date().toLocaleTimeString()}`; show(JSON.parse(e.data)); };
  es.onerror = () => { conn.textContent = "reconnecting…"; };
  cleanup.push(() => es.close());

  const kind = view.querySelector("#kind");
  const sync = () => { view.querySelector("#phue-label").textContent = kind.value === "heatmap" ? "y axis" : "lines by"; view.querySelector("#py-label").textContent = kind.value === "heatmap" ? "colour" : "y"; };
  kind.addEventListener("change", () => { sync(); drawPlot(sid); });
  ["px", "py", "phue"].forEach((id) => view.querySelector(`#${id}`).addEventListener("change", () => drawPlot(sid)));
  view.querySelector("#replot").addEventListener("click", () => drawPlot(sid));
  view.querySelector("#open-point").addEventListener("click", () => { location.hash = `#/sweep/${sid}/point/${view.querySelector("#point-index").value}`; });
  sync();
  if (values.length) drawPlot(sid);
}

async function loadFailures(sid) {
  const box = view.querySelector("#failures");
  if (!box) return;
  const d = await getJSON(`/api/sweeps/${sid}/failures`);
  if (!d.groups.length) { box.innerHTML = `<div class="empty" id="no-failures">No failed points.</div>`; return; }
  box.innerHTML = `<table id="failure-groups"><thead><tr><th>Error</th><th>Status</th><th class="num">Points</th><th></th></tr></thead><tbody>${
    d.groups.map((g, k) => `<tr class="group link" data-k="${k}"><td class="group-error">${esc(g.error)}</td><td>${badge(g.status)}</td>
      <td class="num count">${g.count}</td><td><button class="retry danger" data-k="${k}">Retry these</button></td></tr>
      <tr class="group-points" data-k="${k}" hidden><td colspan="4"></td></tr>`).join("")}</tbody></table>${
    d.more ? `<div class="muted">${d.more} more groups</div>` : ""}`;
  box.querySelectorAll("tr.group").forEach((tr) => tr.addEventListener("click", async (e) => {
    if (e.target.closest("button")) return;
    const row = box.querySelector(`tr.group-points[data-k="${tr.dataset.k}"]`);
    row.hidden = !row.hidden;
    if (!row.hidden) {
      const g = d.groups[Number(tr.dataset.k)];
      const pts = await getJSON(`/api/sweeps/${sid}/group?error=${encodeURIComponent(g.error)}&limit=100`);
      row.firstElementChild.innerHTML = `<table><thead><tr><th>Index</th><th>Params</th></tr></thead><tbody>${
        pts.points.map((p) => `<tr class="point link" data-i="${p.index}"><td><a href="#/sweep/${sid}/point/${p.index}">${p.index}</a></td>
        <td><code>${esc(JSON.stringify(p.params))}</code></td></tr>`).join("")}</tbody></table>${
        pts.total > pts.points.length ? `<div class="muted">showing ${pts.points.length} of ${pts.total}</div>` : ""}`;
    }
  }));
  box.querySelectorAll("button.retry").forEach((b) => b.addEventListener("click", async () => {
    const g = d.groups[Number(b.dataset.k)];
    b.disabled = true; b.textContent = "Queued…";
    const r = await postJSON(`/api/sweeps/${sid}/retry`, { error: g.error });
    b.textContent = r.workers ? `${r.cleared} queued again` : `${r.cleared} queued (no worker running: start \`swarmrun worker\`)`;
    setTimeout(() => loadFailures(sid), 1000);
  }));
}

async function drawPlot(sid) {
  const kind = view.querySelector("#kind").value, x = view.querySelector("#px").value;
  const y = view.querySelector("#py").value, hue = view.querySelector("#phue").value;
  const note = view.querySelector("#plot-note");
  if (!y) { note.textContent = "no numeric values yet"; return; }
  if (kind === "heatmap" && (!hue || hue === x)) { note.textContent = "a heatmap needs two different axes"; return; }
  const q = new URLSearchParams({ x, y, ...(hue ? { hue } : {}) });
  const d = await getJSON(`/api/sweeps/${sid}/plot?${q}`);
  note.textContent = [d.stride > 1 ? `sampled: every ${d.stride}th point` : "", d.truncated ? "more cells than shown" : ""].filter(Boolean).join("; ");
  const el = document.getElementById("plot");
  if (kind === "heatmap") {
    const xs = [...new Set(d.series.flatMap((s) => s.x))].sort((a, b) => (a > b ? 1 : -1));
    const hs = d.series.map((s) => s.hue);
    const z = d.series.map((s) => xs.map((xv) => { const k = s.x.indexOf(xv); return k < 0 ? null : s.y[k]; }));
    Plotly.react(el, [{ type: "heatmap", x: xs, y: hs, z, colorscale: "Viridis", colorbar: { title: { text: y } } }],
      { ...LAYOUT, xaxis: { title: { text: x } }, yaxis: { title: { text: hue }, type: "category" } }, PLOT_CONFIG);
  } else {
    const traces = d.series.map((s) => ({ type: "scatter", mode: "lines+markers", x: s.x, y: s.y, name: hue ? `${hue}=${s.hue}` : y, marker: { size: 6 } }));
    Plotly.react(el, traces, { ...LAYOUT, xaxis: { title: { text: x } }, yaxis: { title: { text: y } }, showlegend: !!hue, legend: { orientation: "h", y: -0.2 } }, PLOT_CONFIG);
  }
  el.dataset.marks = String(d.series.reduce((n, s) => n + s.x.length, 0));
}

// ------------------------------------------------------------------------------------ one point
async function pointView(sid, index) {
  const p = await getJSON(`/api/sweeps/${sid}/points/${index}`);
  crumbs.innerHTML = `/ <a href="#/sweep/${esc(sid)}">sweep <code>${esc(sid.slice(0, 12))}</code></a> / point ${p.index}`;
  const rows = [["status", badge(p.status)], ["value", `<code>${fmtNum(p.value)}</code>`], ["duration", p.duration === null ? "—" : `${p.duration.toFixed(4)} s`],
    ["worker", esc(p.worker ?? "—")], ["attempt", esc(p.attempt ?? "—")], ["executions", esc(p.executions.length)], ["cached", p.cached ? "yes" : "no"],
    ...(p.exit_code !== null ? [["exit code", esc(p.exit_code)]] : [])];
  view.innerHTML = `<div class="grid">
    <div class="card"><h3>Point ${p.index}</h3><table class="kv">${rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("")}</table></div>
    <div class="card"><h3>Params</h3><table class="kv">${Object.entries(p.params).map(([k, v]) => `<tr><td>${esc(k)}</td><td><code>${fmtNum(v, 8)}</code></td></tr>`).join("")}</table></div></div>
    ${p.error ? `<div class="card" style="margin-top:16px"><h3>Error</h3><pre id="error">${esc(p.error)}</pre>${p.traceback ? `<h3 style="margin-top:12px">Traceback</h3><pre>${esc(p.traceback)}</pre>` : ""}</div>` : ""}
    ${p.executions.length ? `<div class="card" style="margin-top:16px"><h3>Executions</h3><table class="kv" id="executions"><tr><td>worker</td><td>node</td><td>started</td><td>duration</td><td>exit</td><td>status</td></tr>${p.executions.map((e) => `<tr><td>${esc(e.worker)}${e.won ? " <span class=\"muted\">(recorded)</span>" : ""}</td><td>${esc(e.node)}</td><td>${e.start ? esc(new Date(e.start * 1000).toLocaleTimeString()) : "—"}</td><td>${e.duration.toFixed(3)} s</td><td>${esc(e.exit_code ?? "—")}</td><td>${badge(e.status)}</td></tr>`).join("")}</table></div>` : ""}
    <div class="card" style="margin-top:16px"><h3>Log tail</h3>${p.log ? `<pre>${esc(p.log)}</pre>` : `<div class="empty">No log recorded.</div>`}</div>
    <div class="card"><h3>Output files</h3>${p.files.length ? `<ul>${p.files.map((f) => `<li><a href="/api/sweeps/${esc(sid)}/points/${p.index}/files/${encodeURIComponent(f.name)}">${esc(f.name)}</a> ${f.size === null ? "" : `<span class="muted">${f.size} bytes · sha256 ${esc(f.sha256.slice(0, 12))}</span>`}</li>`).join("")}</ul>` : `<div class="empty">No output files.</div>`}</div>`;
}

// ---------------------------------------------------------------------------------------- router
async function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  conn.textContent = "";
  const m = location.hash.match(/^#\/sweep\/([0-9a-f]+)(?:\/point\/(\d+))?/);
  try {
    if (!m) await listView();
    else if (m[2] !== undefined) await pointView(m[1], Number(m[2]));
    else await sweepView(m[1]);
  } catch (e) {
    view.innerHTML = `<div class="card"><h2>Error</h2><pre>${esc(e.message)}</pre></div>`;
  }
}
window.addEventListener("hashchange", route);
route();
