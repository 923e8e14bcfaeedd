/* ds4h-gateway status page: follows the gateway's live feed (server-sent events) and draws it. */
"use strict";

const TREND_KEEP = 360;
const PANELS = [
  { id: "hr", title: "Heart rate", metrics: ["heart_rate", "pulse_rate_oximeter", "pulse_rate_bp"],
    colors: ["#c0392b", "#8e44ad", "#d35400"], min: 30, max: 220 },
  { id: "spo2", title: "SpO\u2082", metrics: ["spo2"], colors: ["#1f5fa8"], min: 80, max: 100 },
  { id: "glucose", title: "Glucose", metrics: ["glucose_isf", "glucose_capillary_whole_blood", "glucose_capillary_plasma"],
    colors: ["#0b6e4f", "#b9770e", "#b9770e"], dots: [false, true, true], target: true },
  { id: "bp", title: "Blood pressure", metrics: ["bp_systolic", "bp_diastolic", "bp_mean"],
    colors: ["#c0392b", "#1f5fa8", "#7f8c8d"], dots: [true, true, true] },
];
const TARGETS = { "mg/dL": [70, 180], "mmol/L": [3.9, 10.0] };

const state = { series: new Map(), status: null, notices: [], stripS: 8, layout: "", lastUpdate: 0 };

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function fmtInt(n) { return n == null ? "—" : Number(n).toLocaleString("en"); }
function fmtAge(s) {
  if (s == null) return "—";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtBytes(b) {
  if (b == null) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function fmtValue(v) { return v == null ? "—" : Math.abs(v) >= 100 ? v.toFixed(0) : String(Math.round(v * 10) / 10); }
function fmtTime(ms) { return new Date(ms).toLocaleTimeString("en-GB", { hour12: false }); }
function setPill(el, text, cls) { el.textContent = text; el.className = `pill ${cls}`; }

/* --- the feed --------------------------------------------------------------------------------- */
function merge(update) {
  for (const [key, s] of Object.entries(update.series)) {
    const have = state.series.get(key);
    if (s.kind === "trend") {
      if (s.full || !have) {
        state.series.set(key, { ...s });
      } else {
        have.t.push(...s.t); have.v.push(...s.v); have.unit = s.unit;
        if (have.t.length > TREND_KEEP) { have.t.splice(0, have.t.length - TREND_KEEP); have.v.splice(0, have.v.length - TREND_KEEP); }
      }
    } else {
      if (s.full || !have) {
        state.series.set(key, { ...s });
      } else {
        have.v.push(...s.v);
        if (have.v.length > s.capacity) have.v.splice(0, have.v.length - s.capacity);
        have.end_ms = s.end_ms; have.period_ms = s.period_ms; have.capacity = s.capacity;
      }
    }
  }
  state.notices = [...update.notices.reverse(), ...state.notices].slice(0, 100);
  state.status = update.status;
  state.stripS = update.strip_s || state.stripS;
  state.lastUpdate = Date.now();
}

function connect() {
  const feedState = document.getElementById("feed-state");
  const es = new EventSource("/status/feed");
  es.addEventListener("update", (ev) => {
    merge(JSON.parse(ev.data));
    setPill(feedState, "live", "ok");
    render();
  });
  es.onerror = () => {
    setPill(feedState, "reconnecting…", "warn");
    if (es.readyState === EventSource.CLOSED) setTimeout(() => location.reload(), 3000); // e.g. logged out
  };
  setInterval(() => {
    if (state.lastUpdate && Date.now() - state.lastUpdate > 5000) setPill(feedState, "no updates", "bad");
  }, 1000);
}

/* --- rendering -------------------------------------------------------------------------------- */
function renderHeader(st) {
  document.getElementById("gw-name").textContent = st.gateway || "ds4h-gateway";
  document.getElementById("gw-did").textContent = st.did ? `${st.did.slice(0, 28)}…` : "";
  document.title = `${st.gateway || "ds4h-gateway"} · status`;
  const ready = st.ready || {};
  const r = document.getElementById("ready");
  if (ready.status === "ready") setPill(r, "ready", "ok");
  else { setPill(r, `not ready: ${(ready.reasons || []).join("; ")}`, "bad"); }
  setPill(document.getElementById("clock"), st.clock_synchronised ? "clock synchronised" : "clock NOT synchronised",
    st.clock_synchronised ? "ok" : "warn");
  document.getElementById("uptime").textContent = `up ${fmtAge(st.uptime_s)}`;
  document.getElementById("last-update").textContent = `last update ${fmtTime(Date.now())}`;
}

function tile(label, value, cls, extra) {
  return `<div class="tile ${cls || ""}"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div>${extra || ""}</div>`;
}

function renderTiles(st) {
  const c = st.counters;
  const quarantined = Object.values(st.quarantine || {}).reduce((a, b) => a + b, 0);
  const dead = Object.values(st.sinks).reduce((a, s) => a + (s.dead_letters || 0), 0);
  const pending = Object.values(st.sinks).reduce((a, s) => a + (s.pending_batches || 0), 0);
  const disk = st.disk || {};
  const ratio = disk.budget_bytes ? disk.used_bytes / disk.budget_bytes : 0;
  const lost = c.readings_lost + c.quarantine_overflow;
  document.getElementById("tiles").innerHTML = [
    tile("readings lost (must be 0)", fmtInt(c.readings_lost), c.readings_lost ? "bad" : "ok"),
    tile("quarantine overflow (must be 0)", fmtInt(c.quarantine_overflow), c.quarantine_overflow ? "bad" : "ok"),
    tile("points committed", fmtInt(c.readings_committed)),
    tile("points / s", fmtInt(Math.round(st.rate))),
    tile("duplicates (not stored twice)", fmtInt(c.batches_duplicate)),
    tile("quarantined inputs", fmtInt(quarantined), quarantined ? "warn" : ""),
    tile("pending in outbox", fmtInt(pending), pending > 1000 ? "warn" : ""),
    tile("dead letters", fmtInt(dead), dead ? "bad" : "ok"),
    tile("refused (back-pressure)", fmtInt(c.backpressure_refusals), st.backpressure ? "bad" : c.backpressure_refusals ? "warn" : ""),
    tile("disk used / budget", `${fmtBytes(disk.used_bytes)}`, ratio > 0.9 ? "bad" : "",
      `<div class="dim">of ${fmtBytes(disk.budget_bytes)}</div><div class="bar ${ratio > 0.9 ? "bad" : ""}"><div data-width="${Math.min(100, ratio * 100).toFixed(1)}"></div></div>`),
  ].join("");
  for (const el of document.querySelectorAll("#tiles .bar > div")) el.style.width = `${el.dataset.width}%`; // no inline styles (CSP)
  document.getElementById("tiles").dataset.lost = String(lost);
}

function linkCell(d) {
  const ok = ["connected", "online", "active"].includes(d.link);
  const cls = ok ? "state-ok" : d.link === "idle" || d.link === "connecting" ? "state-warn" : "state-bad";
  let text = `${d.transport === "5g" ? "5G" : d.transport === "ble" ? "BLE" : "local API"} ${d.link}`;
  if (d.reconnects) text += ` ↻${d.reconnects}`;
  return `<span class="${cls}" title="${esc(d.detail || "")}">${esc(text)}</span>`;
}

function renderDevices(st) {
  const rows = st.devices.map((d) => {
    const slot = d.transport === "ble" ? `${d.slot || "—"} · ${d.rssi == null ? "—" : `${d.rssi} dBm`}` : "";
    const skew = d.clock_skew_s == null ? "—" : `${d.clock_skew_s > 0 ? "+" : ""}${d.clock_skew_s.toFixed(3)} s`;
    const batt = d.battery_pct == null ? "—" : `${Math.round(d.battery_pct)} %`;
    return `<tr data-device="${esc(d.id)}" data-link="${esc(d.link)}"><td class="mono">${esc(d.id)}</td><td>${esc(d.patient || "")}</td>` +
      `<td>${esc(d.enabled ? d.kind : `${d.kind} (disabled)`)}</td><td>${linkCell(d)}</td><td>${esc(slot)}</td>` +
      `<td>${esc(batt)}</td><td>${esc(skew)}</td><td>${esc(d.latest || "")}</td>` +
      `<td class="num">${fmtInt(d.points)}</td><td class="num">${d.last_commit_age_s == null ? "—" : `${fmtAge(d.last_commit_age_s)} ago`}</td></tr>`;
  });
  document.querySelector("#devices tbody").innerHTML = rows.join("");
}

function renderSinks(st) {
  const rows = Object.entries(st.sinks).map(([name, s]) => {
    const state = s.last_error ? `<span class="state-warn">retrying: ${esc(s.last_error)}</span>` : `<span class="state-ok">delivering</span>`;
    return `<tr><td>${esc(name)}</td><td class="num">${fmtInt(s.forwarded)}</td><td class="num">${fmtInt(s.pending_batches)}</td>` +
      `<td class="num">${s.oldest_age_s == null ? "—" : s.oldest_age_s.toFixed(1)}</td>` +
      `<td class="num ${s.dead_letters ? "state-bad" : ""}">${fmtInt(s.dead_letters)}</td><td>${state}</td></tr>`;
  });
  document.querySelector("#sinks tbody").innerHTML = rows.join("");
  const q = Object.entries(st.quarantine || {}).sort((a, b) => b[1] - a[1]);
  document.querySelector("#quarantine tbody").innerHTML = q.length
    ? q.map(([r, n]) => `<tr><td>${esc(r)}</td><td class="num">${fmtInt(n)}</td></tr>`).join("")
    : `<tr><td class="dim" colspan="2">nothing quarantined</td></tr>`;
}

function renderNotices(st) {
  const patients = Object.fromEntries(st.devices.map((d) => [d.id, d.patient || ""]));
  document.querySelector("#notices tbody").innerHTML = state.notices.length
    ? state.notices.slice(0, 30).map((n) => `<tr><td>${fmtTime(n.time_ms)}</td><td class="mono">${esc(n.device)}</td>` +
      `<td>${esc(patients[n.device] || "")}</td><td>${esc(n.metric)} ${esc(fmtValue(n.value))} ${esc(n.unit)}</td><td>${esc(n.why)}</td></tr>`).join("")
    : `<tr><td class="dim" colspan="5">no device alerts or threshold notices since the gateway started</td></tr>`;
}

/* Patients → their charts: one ECG/pleth strip per waveform series, one panel per kind of trend. */
function patientCharts(st) {
  const patientOf = new Map(st.devices.map((d) => [d.id, d.patient || d.id]));
  const groups = new Map();
  for (const [key, s] of state.series) {
    const p = patientOf.get(s.device) || s.device;
    if (!groups.has(p)) groups.set(p, { strips: [], panels: new Map() });
    const g = groups.get(p);
    if (s.kind === "strip") { g.strips.push(key); continue; }
    const panel = PANELS.find((x) => x.metrics.includes(s.metric));
    if (!panel) continue;
    if (!g.panels.has(panel.id)) g.panels.set(panel.id, []);
    g.panels.get(panel.id).push(key);
  }
  return new Map([...groups].sort((a, b) => String(a[0]).localeCompare(String(b[0]))));
}

function layoutOf(groups) {
  return JSON.stringify([...groups].map(([p, g]) => [p, [...g.strips].sort(), [...g.panels.keys()].sort()]));
}

function buildPatients(groups) {
  const html = [];
  for (const [p, g] of groups) {
    const charts = [];
    for (const key of [...g.strips].sort()) {
      const s = state.series.get(key);
      const label = s.metric === "pleth" ? "Pleth" : `ECG ${s.metric.replace("ecg_lead_", "lead ").replace(/^ecg$/, "")}`;
      charts.push(`<div class="chart wide"><div class="head"><span>${esc(label)} · <span class="mono">${esc(s.device)}</span></span>` +
        `<span class="rate" data-rate="${esc(key)}"></span></div><canvas class="strip" data-key="${esc(key)}"></canvas></div>`);
    }
    for (const panel of PANELS) {
      if (!g.panels.has(panel.id)) continue;
      charts.push(`<div class="chart"><div class="head"><span>${esc(panel.title)} <span class="unit" data-unit="${esc(p)}|${panel.id}"></span></span>` +
        `<span class="latest" data-latest="${esc(p)}|${panel.id}">—</span></div>` +
        `<canvas class="trend" data-patient="${esc(p)}" data-panel="${panel.id}"></canvas>` +
        `<div class="legend" data-legend="${esc(p)}|${panel.id}"></div></div>`);
    }
    html.push(`<div class="patient" data-patient="${esc(p)}"><h3>${esc(p)}</h3><div class="charts">${charts.join("")}</div></div>`);
  }
  document.getElementById("patients").innerHTML = html.length ? html.join("") : `<p class="dim">Waiting for data…</p>`;
}

function drawPatients(groups) {
  for (const canvas of document.querySelectorAll("canvas.strip")) {
    const s = state.series.get(canvas.dataset.key);
    if (!s) continue;
    Charts.strip(canvas, s.v, s.period_ms, state.stripS, { ecg: s.metric !== "pleth", color: s.metric === "pleth" ? "#1f5fa8" : "#0b6e4f" });
    canvas.dataset.endMs = String(s.end_ms);
    canvas.dataset.samples = String(s.v.length);
    const r = document.querySelector(`[data-rate="${CSS.escape(canvas.dataset.key)}"]`);
    if (r) r.textContent = `${Math.round(1000 / s.period_ms)} Hz · ${fmtTime(s.end_ms)}`;
  }
  for (const canvas of document.querySelectorAll("canvas.trend")) {
    const g = groups.get(canvas.dataset.patient);
    const panel = PANELS.find((x) => x.id === canvas.dataset.panel);
    if (!g || !panel) continue;
    const keys = g.panels.get(panel.id) || [];
    const lines = keys.map((k) => {
      const s = state.series.get(k), i = panel.metrics.indexOf(s.metric);
      return { t: s.t, v: s.v, color: panel.colors[i], dots: panel.dots ? panel.dots[i] : false, metric: s.metric, unit: s.unit };
    });
    const unit = lines.length ? lines[0].unit : "";
    const opts = { min: panel.min, max: panel.max };
    if (panel.target && TARGETS[unit]) opts.band = TARGETS[unit];
    Charts.trend(canvas, lines, opts);
    const key = `${canvas.dataset.patient}|${panel.id}`;
    const latestEl = document.querySelector(`[data-latest="${CSS.escape(key)}"]`);
    const unitEl = document.querySelector(`[data-unit="${CSS.escape(key)}"]`);
    if (unitEl) unitEl.textContent = unit ? `(${unit})` : "";
    const legendEl = document.querySelector(`[data-legend="${CSS.escape(key)}"]`);
    if (legendEl && legendEl.dataset.keys !== keys.join(",")) {
      legendEl.dataset.keys = keys.join(",");
      legendEl.replaceChildren(...lines.map((l, i) => {
        const span = document.createElement("span");
        span.textContent = `${l.dots ? "●" : "—"} ${keys[i].replace("/", " · ")}`;
        span.style.color = l.color; // CSSOM, not an inline style attribute (CSP)
        return span;
      }));
    }
    if (!latestEl) continue;
    const last = (m) => { const l = lines.find((x) => x.metric === m && x.v.length); return l ? l.v[l.v.length - 1] : null; };
    if (panel.id === "bp") {
      const sys = last("bp_systolic"), dia = last("bp_diastolic");
      latestEl.textContent = sys == null ? "—" : `${fmtValue(sys)}/${fmtValue(dia)}`;
    } else {
      const first = lines.find((x) => x.v.length);
      latestEl.textContent = first ? fmtValue(first.v[first.v.length - 1]) : "—";
    }
  }
}

let pending = false;
function render() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    const st = state.status;
    if (!st) return;
    renderHeader(st);
    renderTiles(st);
    renderDevices(st);
    renderSinks(st);
    renderNotices(st);
    const groups = patientCharts(st);
    const layout = layoutOf(groups);
    if (layout !== state.layout) { buildPatients(groups); state.layout = layout; }
    drawPatients(groups);
  });
}

window.ds4hStatus = state; // for tests and for the curious: what the page holds
window.addEventListener("resize", render);
connect();
