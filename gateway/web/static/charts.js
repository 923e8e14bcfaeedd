/* ds4h-gateway status page: small canvas charts (an ECG strip and trend lines). No dependencies. */
"use strict";

const Charts = (() => {
  function prepare(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(50, canvas.clientWidth), h = Math.max(40, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  function median(values) {
    const s = Array.from(values).sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)] : 0;
  }

  /* An ECG-style strip: the newest sample at the right edge, `windowS` seconds across, paper grid of
     0.2 s and 0.5 mV (µV samples). Other waveforms (pleth) are autoscaled without the mV grid. */
  function strip(canvas, values, periodMs, windowS, opts) {
    const { ctx, w, h } = prepare(canvas);
    const ecg = opts.ecg !== false;
    const pxPerS = w / windowS;
    ctx.lineWidth = 1;
    for (let s = 0, i = 0; s <= windowS + 1e-9; s += 0.2, i++) {
      const x = w - s * pxPerS;
      ctx.strokeStyle = i % 5 === 0 ? "#ee9ba6" : "#f8dde1";
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
    }
    if (!values.length) {
      ctx.fillStyle = "#66727f"; ctx.font = "12px sans-serif"; ctx.fillText("no signal", 8, h / 2);
      return;
    }
    const n = Math.min(values.length, Math.ceil((windowS * 1000) / periodMs));
    const shown = values.slice(values.length - n);
    const mid = median(shown);
    let span = 0;
    for (const v of shown) span = Math.max(span, Math.abs(v - mid));
    span = Math.max(span * 1.15, ecg ? 800 : 1);
    const yOf = (v) => h / 2 - ((v - mid) / span) * (h / 2 - 4);
    if (ecg) {
      for (let mv = -Math.ceil(span / 500) * 500; mv <= span; mv += 500) {
        const y = yOf(mid + mv);
        ctx.strokeStyle = "#f3c2c9";
        ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
      }
    }
    ctx.strokeStyle = opts.color || "#0b6e4f";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    const dx = (periodMs / 1000) * pxPerS;
    for (let i = 0; i < n; i++) {
      const x = w - (n - 1 - i) * dx, y = yOf(shown[i]);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    }
    ctx.stroke();
    ctx.fillStyle = "#66727f"; ctx.font = "11px sans-serif";
    ctx.fillText(`${windowS} s`, 4, h - 4);
  }

  function niceRange(lo, hi) {
    if (!(hi > lo)) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.1;
    return [lo - pad, hi + pad];
  }

  /* Trend lines over time: lines = [{t: [ms], v: [..], color, dots}], opts = {min, max, band: [lo, hi]}. */
  function trend(canvas, lines, opts) {
    const { ctx, w, h } = prepare(canvas);
    let t0 = Infinity, t1 = -Infinity, lo = Infinity, hi = -Infinity;
    for (const l of lines) {
      for (let i = 0; i < l.t.length; i++) {
        t0 = Math.min(t0, l.t[i]); t1 = Math.max(t1, l.t[i]);
        lo = Math.min(lo, l.v[i]); hi = Math.max(hi, l.v[i]);
      }
    }
    if (!isFinite(t0)) {
      ctx.fillStyle = "#66727f"; ctx.font = "12px sans-serif"; ctx.fillText("no data yet", 8, h / 2);
      return;
    }
    if (opts.band) { lo = Math.min(lo, opts.band[0]); hi = Math.max(hi, opts.band[1]); }
    let [y0, y1] = niceRange(lo, hi);
    if (opts.min !== undefined) y0 = Math.min(y0, opts.min);
    if (opts.max !== undefined) y1 = Math.max(Math.min(y1, opts.max), y0 + 1);
    const left = 34, right = 4, top = 4, bottom = 14;
    const span = Math.max(1, t1 - t0);
    const xOf = (t) => left + ((t - t0) / span) * (w - left - right);
    const yOf = (v) => top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom);
    if (opts.band) {
      ctx.fillStyle = "rgba(27,127,59,0.12)";
      const a = yOf(opts.band[1]), b = yOf(opts.band[0]);
      ctx.fillRect(left, a, w - left - right, b - a);
      ctx.fillStyle = "#1b7f3b"; ctx.font = "10px sans-serif";
      ctx.fillText("target", w - right - 34, a + 11);
    }
    ctx.strokeStyle = "#dde3e9"; ctx.lineWidth = 1;
    ctx.fillStyle = "#66727f"; ctx.font = "10px sans-serif";
    for (let k = 0; k <= 2; k++) {
      const v = y0 + ((y1 - y0) * k) / 2, y = yOf(v);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
      ctx.fillText(v.toFixed(y1 - y0 < 10 ? 1 : 0), 2, y + 3);
    }
    const minutes = span / 60000;
    ctx.fillText(minutes >= 1 ? `last ${minutes.toFixed(minutes < 10 ? 1 : 0)} min` : `last ${(span / 1000).toFixed(0)} s`,
      left, h - 2);
    for (const l of lines) {
      ctx.strokeStyle = l.color; ctx.fillStyle = l.color; ctx.lineWidth = 1.6;
      if (l.dots || l.t.length === 1) {
        for (let i = 0; i < l.t.length; i++) {
          ctx.beginPath(); ctx.arc(xOf(l.t[i]), yOf(l.v[i]), 2.5, 0, 2 * Math.PI); ctx.fill();
        }
        continue;
      }
      ctx.beginPath();
      for (let i = 0; i < l.t.length; i++) {
        const x = xOf(l.t[i]), y = yOf(l.v[i]);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      }
      ctx.stroke();
    }
  }

  return { strip, trend };
})();
