"""What the status page's curves show: recent points per device and metric, kept small in memory.

Fed with every committed batch (``ActivityBoard`` listener, on the event loop), so it must stay cheap:

- scalar readings → a *trend* per (device, metric): at most one point per ``TREND_MIN_SPACING_NS`` of
  device time, the last ``TREND_KEEP`` points;
- waveforms (ECG, pleth) → a *strip* per (device, metric): the last ``strip_s`` seconds of samples in a
  numpy ring, decimated to at most ``STRIP_MAX_HZ``;
- device alerts and readings over a threshold rule → *notices* (informational: the gateway is not a
  medical alarm system).

Every series counts what it has taken in (``total``); a viewer keeps a cursor per series and gets only
what is new since (or the whole series when it is new or fell too far behind): never one message per
sample. Nothing here is stored: the status page shows what arrived since the gateway started.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.config import PriorityRule
from gateway.model import Batch, Reading, Waveform

TREND_KEEP = 360
"""Points kept per scalar series."""
TREND_MIN_SPACING_NS = 250_000_000
"""A scalar series keeps at most one point per this much device time (others are skipped, not merged)."""
TREND_RESTART_NS = 600 * 10**9
"""A reading this much older than a series' newest point restarts the series (the device clock went back)."""
STRIP_MAX_HZ = 260.0
"""Waveform strips are decimated (every n-th sample) to at most this rate."""
NOTICES_KEEP = 100
WAVE_METRICS = frozenset({"ecg", "ecg_lead_i", "ecg_lead_ii", "pleth"})
NOT_TRENDED = frozenset({"battery_level"})
"""Scalar metrics shown as a device's state rather than as a curve."""


@dataclass(slots=True)
class Trend:
    device: str
    metric: str
    unit: str
    t_ms: deque[int] = field(default_factory=lambda: deque(maxlen=TREND_KEEP))
    v: deque[float] = field(default_factory=lambda: deque(maxlen=TREND_KEEP))
    total: int = 0
    last_ns: int = -(2**62)
    epoch: int = 0
    """Increases when the series restarts: viewers then take it whole."""

    def add(self, r: Reading) -> None:
        t = r.device_time_ns
        if r.value is None or not math.isfinite(r.value):
            return
        if r.unit != self.unit or t < self.last_ns - TREND_RESTART_NS:
            # the device switched units, or its clock went back (set, or corrected): start over, don't mix
            self.t_ms.clear()
            self.v.clear()
            self.unit = r.unit
            self.epoch += 1
        elif t < self.last_ns + TREND_MIN_SPACING_NS:
            return  # too close to the previous point, or older than it (a curve runs forward)
        self.last_ns = t
        self.t_ms.append(t // 1_000_000)
        self.v.append(r.value)
        self.total += 1

    def since(self, cursor: int, epoch: int) -> dict[str, Any] | None:
        new = self.total - cursor
        if new <= 0 and epoch == self.epoch:
            return None
        full = cursor == 0 or epoch != self.epoch or new >= len(self.v)
        k = len(self.v) if full else new
        t = list(self.t_ms)[-k:]
        v = list(self.v)[-k:]
        return {"kind": "trend", "device": self.device, "metric": self.metric, "unit": self.unit,
                "full": full, "t": t, "v": v}  # fmt: skip


@dataclass(slots=True)
class Strip:
    device: str
    metric: str
    unit: str
    period_ns: int
    """Period of the kept (decimated) samples."""
    stride: int
    buf: npt.NDArray[np.int32]
    n: int = 0
    """Samples held (≤ buf.size); the newest is at ``(pos - 1) % size``."""
    pos: int = 0
    total: int = 0
    end_ns: int = 0
    """Time just after the newest kept sample."""
    phase: int = 0
    """Input samples to skip before the next kept one (decimation across batches)."""
    epoch: int = 0
    """Increases when the strip restarts (gap, overlap or a new rate): viewers then take it whole."""

    @classmethod
    def new(cls, device: str, w: Waveform, strip_s: float) -> Strip:
        rate = 1e9 / w.period_ns
        stride = max(1, math.ceil(rate / STRIP_MAX_HZ))
        size = max(16, math.ceil(strip_s * rate / stride))
        return cls(device, w.metric, w.unit, w.period_ns * stride, stride, np.zeros(size, np.int32))

    def add(self, w: Waveform) -> None:
        if w.period_ns * self.stride != self.period_ns:
            self._restart(w.start_ns, period_ns=w.period_ns * self.stride)
        elif self.n and not (-self.period_ns <= w.start_ns + self.phase * w.period_ns - self.end_ns <= 10**9):
            self._restart(w.start_ns)  # out of order, overlapping, or after a gap of over a second
        kept = w.samples[self.phase :: self.stride]
        if kept.size == 0:
            self.phase -= w.samples.size
            return
        first_ns = w.start_ns + self.phase * w.period_ns
        self.phase += kept.size * self.stride - w.samples.size  # input samples to skip in the next batch
        self.end_ns = first_ns + kept.size * self.period_ns
        self.total += kept.size
        if kept.size > self.buf.size:
            kept = kept[-self.buf.size :]
        k = kept.size
        end = self.pos + k
        if end <= self.buf.size:
            self.buf[self.pos : end] = kept
        else:
            cut = self.buf.size - self.pos
            self.buf[self.pos :] = kept[:cut]
            self.buf[: k - cut] = kept[cut:]
        self.pos = end % self.buf.size
        self.n = min(self.buf.size, self.n + k)

    def _restart(self, start_ns: int, period_ns: int | None = None) -> None:
        if period_ns is not None:
            self.period_ns = period_ns
        self.n = self.pos = self.phase = 0
        self.end_ns = start_ns
        self.epoch += 1

    def latest(self, k: int) -> npt.NDArray[np.int32]:
        k = min(k, self.n)
        start = (self.pos - k) % self.buf.size
        if start + k <= self.buf.size:
            return self.buf[start : start + k]
        return np.concatenate((self.buf[start:], self.buf[: self.pos]))

    def since(self, cursor: int, epoch: int) -> dict[str, Any] | None:
        new = self.total - cursor
        if new <= 0 and epoch == self.epoch:
            return None
        full = cursor == 0 or epoch != self.epoch or new >= self.n
        k = self.n if full else new
        return {
            "kind": "strip",
            "device": self.device,
            "metric": self.metric,
            "unit": self.unit,
            "full": full,
            "period_ms": self.period_ns / 1e6,
            "capacity": int(self.buf.size),
            "end_ms": self.end_ns // 1_000_000,
            "v": self.latest(k).tolist(),
        }


@dataclass(slots=True)
class Notice:
    seq: int
    time_ms: int
    device: str
    metric: str
    value: float | None
    unit: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time_ms": self.time_ms, "device": self.device, "metric": self.metric,
                "value": self.value, "unit": self.unit, "why": self.why}  # fmt: skip


def _rule_text(rule: PriorityRule) -> str:
    unit = f" {rule.unit}" if rule.unit else ""
    parts = [f"below {rule.below:g}{unit}" if rule.below is not None else "",
             f"above {rule.above:g}{unit}" if rule.above is not None else ""]  # fmt: skip
    return "threshold: " + " / ".join(p for p in parts if p)


@dataclass
class Cursor:
    """One viewer's position in every series and in the notices."""

    series: dict[str, tuple[int, int]] = field(default_factory=dict)
    notices: int = 0


class LiveBoard:
    def __init__(self, rules: Sequence[PriorityRule], strip_s: float = 8.0) -> None:
        self._strip_s = strip_s
        self._rules: dict[str, list[PriorityRule]] = {}
        for r in rules:
            self._rules.setdefault(r.metric, []).append(r)
        self._bounds: dict[str, tuple[float, float]] = {
            m: (
                max((r.below for r in rs if r.below is not None), default=-math.inf),
                min((r.above for r in rs if r.above is not None), default=math.inf),
            )
            for m, rs in self._rules.items()
        }
        """Per metric: values strictly between these match no threshold rule (the fast path of ``record``)."""
        self.trends: dict[str, Trend] = {}
        self.strips: dict[str, Strip] = {}
        self.notices: deque[Notice] = deque(maxlen=NOTICES_KEEP)
        self._notice_seq = 0
        self.battery: dict[str, tuple[float, int]] = {}
        """Device → (battery %, when, ns) from ``battery_level`` readings."""
        self.patient_of: Callable[[str], str | None] = lambda _device: None
        """Which patient a device belongs to, for grouping curves (the demo knows its ward)."""

    # --- intake (event loop, every committed batch) ------------------------------------------------
    def record(self, batch: Batch, _now_ns: int) -> None:
        device = batch.key.device_id
        metric: str | None = None
        trend: Trend | None = None
        lo, hi = -math.inf, math.inf
        for r in batch.readings:  # the hot path: a few comparisons per reading (batches hold one metric mostly)
            if r.metric != metric:
                metric = r.metric
                lo, hi = self._bounds.get(metric, (-math.inf, math.inf))
                trend = self._trend(device, r) if metric not in NOT_TRENDED else None
                if metric == "battery_level" and r.value is not None:
                    self.battery[device] = (r.value, r.device_time_ns)
            v = r.value
            if r.alert or (v is not None and not lo < v < hi):
                self._notice(device, r)
            if trend is not None:
                t = r.device_time_ns
                if t >= trend.last_ns + TREND_MIN_SPACING_NS or t < trend.last_ns - TREND_RESTART_NS:
                    trend.add(r)
        for w in batch.waveforms:
            if w.metric not in WAVE_METRICS or w.samples.size == 0:
                continue
            key = f"{device}/{w.metric}"
            s = self.strips.get(key)
            if s is None:
                s = self.strips[key] = Strip.new(device, w, self._strip_s)
            s.add(w)

    def _trend(self, device: str, r: Reading) -> Trend:
        key = f"{device}/{r.metric}"
        t = self.trends.get(key)
        if t is None:
            t = self.trends[key] = Trend(device, r.metric, r.unit)
        return t

    def _notice(self, device: str, r: Reading) -> None:
        why = ""
        if r.alert:
            why = "device alert"
        elif r.value is not None:
            for rule in self._rules.get(r.metric, ()):
                if rule.unit is not None and rule.unit != r.unit:
                    continue
                if (rule.below is not None and r.value < rule.below) or (
                    rule.above is not None and r.value > rule.above
                ):
                    why = _rule_text(rule)
                    break
        if not why:
            return
        last = self.notices[-1] if self.notices else None
        t_ms = r.device_time_ns // 1_000_000
        if (
            last is not None
            and (last.device, last.metric, last.why) == (device, r.metric, why)
            and t_ms - last.time_ms < 60_000
        ):  # the same condition going on: update it
            last.value, last.time_ms = r.value, t_ms
            return
        self._notice_seq += 1
        self.notices.append(
            Notice(self._notice_seq, r.device_time_ns // 1_000_000, device, r.metric, r.value, r.unit, why)
        )

    # --- output (per viewer) ---------------------------------------------------------------------
    def delta(self, cursor: Cursor) -> dict[str, Any]:
        """What is new for this viewer since its last call (everything on the first), advancing its cursor."""
        series: dict[str, Any] = {}
        for key, t in list(self.trends.items()):
            got, epoch = cursor.series.get(key, (0, -1))
            out = t.since(got, epoch)
            if out is not None:
                series[key] = out
                cursor.series[key] = (t.total, t.epoch)
        for key, s in list(self.strips.items()):
            got, epoch = cursor.series.get(key, (0, -1))
            out = s.since(got, epoch)
            if out is not None:
                series[key] = out
                cursor.series[key] = (s.total, s.epoch)
        notices = [n.as_dict() for n in self.notices if n.seq > cursor.notices]
        if self.notices:
            cursor.notices = self.notices[-1].seq
        return {"series": series, "notices": notices}
