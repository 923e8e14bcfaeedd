"""Per-device activity since start: what the status views show (points, last commit, latest reading)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.model import Batch, Reading, Waveform


@dataclass(slots=True)
class DeviceActivity:
    batches: int = 0
    points: int = 0
    last_commit_ns: int = 0
    latest: Reading | None = None
    latest_wave: Waveform | None = None


class ActivityBoard:
    def __init__(self) -> None:
        self._devices: dict[str, DeviceActivity] = {}
        self.listeners: list[Callable[[Batch, int], None]] = []
        """Called with every committed batch (on the event loop: keep them cheap), e.g. the status page's board."""

    def record(self, batch: Batch, now_ns: int) -> None:
        a = self._devices.get(batch.device_id)
        if a is None:
            a = self._devices[batch.device_id] = DeviceActivity()
        a.batches += 1
        a.points += batch.n_points
        a.last_commit_ns = now_ns
        if batch.readings:
            a.latest = batch.readings[-1]
        if batch.waveforms:
            a.latest_wave = batch.waveforms[-1]
        for listen in self.listeners:
            listen(batch, now_ns)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.time_ns()
        out: dict[str, dict[str, Any]] = {}
        for device_id, a in self._devices.items():
            latest = None
            if a.latest is not None:
                r = a.latest
                shown = str(r.absent) if r.value is None else f"{r.value:g}"
                latest = f"{r.metric} {shown} {r.unit}"
            elif a.latest_wave is not None:
                w = a.latest_wave
                latest = f"{w.metric} {w.samples.size} samples at {1e9 / w.period_ns:g} Hz"
            out[device_id] = {
                "batches": a.batches,
                "points": a.points,
                "last_commit_age_s": round((now - a.last_commit_ns) / 1e9, 1),
                "latest": latest,
            }
        return out
