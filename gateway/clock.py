"""Is the gateway's own clock trustworthy?

A Raspberry Pi has no RTC: until NTP (or a GPS/5G time source) synchronises it, it starts wherever the
last shutdown left it. The kernel knows: ``adjtimex(2)`` returns ``TIME_ERROR`` while the clock is not
synchronised (the same answer ``timedatectl`` shows as "System clock synchronized: no"). Readings
time-stamped while it is unsynchronised are flagged ``TimeQuality.GATEWAY_UNSYNCED`` instead of trusted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Literal

log = logging.getLogger(__name__)

TIME_ERROR = 5
_STA_UNSYNC = 0x0040
# No build of this gateway predates this instant; a clock showing an earlier time is certainly wrong.
_EARLIEST_PLAUSIBLE_NS = 1_764_547_200 * 10**9  # 2025-12-01T00:00:00Z


def kernel_clock_synced() -> bool | None:
    """True/False from ``adjtimex`` on Linux; None where the kernel cannot tell us."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    # struct timex is ~208 bytes on 64-bit Linux; ``modes`` (first field) = 0 makes it a pure read.
    buf = ctypes.create_string_buffer(512)
    state = libc.adjtimex(buf)
    if state < 0:
        return None
    status = int.from_bytes(buf.raw[_status_offset() : _status_offset() + 4], sys.byteorder, signed=True)
    return state != TIME_ERROR and not status & _STA_UNSYNC


def _status_offset() -> int:
    # struct timex: unsigned int modes; long offset, freq, maxerror, esterror; int status; ...
    long_size = ctypes.sizeof(ctypes.c_long)
    return long_size * 5  # modes is padded to a long on LP64 and occupies 4 bytes on ILP32


class ClockMonitor:
    """Answers "is the clock synchronised?" cheaply (re-asks the kernel at most every ``interval_s``)."""

    def __init__(self, mode: Literal["auto", "synced", "unsynced"] = "auto", interval_s: float = 10.0) -> None:
        self._mode = mode
        self._interval_s = interval_s
        self._checked = -1e9
        self._synced = mode != "unsynced"

    def synced(self) -> bool:
        if self._mode != "auto":
            return self._mode == "synced"
        now = time.monotonic()
        if now - self._checked >= self._interval_s:
            self._checked = now
            answer = kernel_clock_synced()
            plausible = time.time_ns() >= _EARLIEST_PLAUSIBLE_NS
            synced = plausible and answer is not False
            if synced != self._synced:
                log.warning("gateway clock is %s", "synchronised" if synced else "NOT synchronised")
            self._synced = synced
        return self._synced


class SkewTracker:
    """Per-device clock offset (gateway − device) with hysteresis, after protocols.md §7.4.

    Each request gives one sample ``received − device clock``, which includes the network latency. Using
    every sample as is would let latency jitter shift a device's readings against each other (two readings
    1 ms apart could swap or collide). So the offset is fixed at the first sample and re-estimated only
    when a sample departs from it by more than ``tolerance_ns`` (the device clock was set, or drifted):
    within a device's stream the relative timing stays exactly as the device measured it. Estimates are
    persisted so a gateway restart does not shift a stream either.
    """

    def __init__(self, tolerance_ns: int, initial: Mapping[str, int], save: Callable[[str, int], None]) -> None:
        self._tolerance_ns = tolerance_ns
        self._skew = dict(initial)
        self._save = save

    def offset(self, device_id: str, received_ns: int, device_clock_ns: int) -> int:
        sample = received_ns - device_clock_ns
        current = self._skew.get(device_id)
        if current is not None and abs(sample - current) <= self._tolerance_ns:
            return current
        if current is not None:
            log.info(
                "device %s: clock offset re-estimated from %.3f s to %.3f s", device_id, current / 1e9, sample / 1e9
            )
        self._skew[device_id] = sample
        self._save(device_id, sample)
        return sample
