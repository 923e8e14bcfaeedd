"""A device's own clock: an offset from the host clock, a drift in ppm, and jumps."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta


class DeviceClock:
    """Device local time (naive, like the Date Time fields on the wire).

    ``now() = host_now + offset + (host_now − anchor) × drift_ppm / 1e6``. ``set`` (a collector
    writing Current Time) and ``jump`` move the offset; the drift keeps running.
    """

    def __init__(
        self,
        *,
        offset_s: float = 0.0,
        drift_ppm: float = 0.0,
        time_zone_quarters: int = 0,
        dst: int = 0,
        host_time: Callable[[], float] = time.time,
    ) -> None:
        self._host_time = host_time
        self._anchor = host_time()
        self.offset_s = offset_s
        self.drift_ppm = drift_ppm
        self.time_zone_quarters = time_zone_quarters
        self.dst = dst

    def timestamp(self) -> float:
        """Device time as seconds since the Unix epoch (of the device's local clock)."""
        host = self._host_time()
        return host + self.offset_s + (host - self._anchor) * self.drift_ppm * 1e-6

    def now(self) -> datetime:
        return datetime(1970, 1, 1) + timedelta(seconds=self.timestamp())

    def set(self, device_time: datetime) -> None:
        """Set the clock so that ``now()`` reads ``device_time`` (drift restarts from here)."""
        host = self._host_time()
        self._anchor = host
        self.offset_s = (device_time - datetime(1970, 1, 1)).total_seconds() - host

    def jump(self, seconds: float) -> None:
        """Step the clock forwards (or backwards with a negative value)."""
        self.offset_s += seconds
