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
