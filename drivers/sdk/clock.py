"""Device clocks: from a BLE device's local time stamps to corrected UTC (protocols.md §7.4).

A Bluetooth SIG device time-stamps measurements with its own local wall clock (Date Time, no zone).
Right after connecting the gateway reads the device's Current Time (0x2A2B) and computes
``skew = gateway local now − device local now``; a stored time stamp then becomes
``device_timestamp + skew`` in local time, and UTC by subtracting the zone offset (the device's Local
Time Information when it has one, else the gateway's zone). Without a clock reading the device's
stamp is used as is and flagged ``DEVICE_UNCORRECTED``; live data with no stamp at all gets the
receive time and ``RECEIVE_TIME``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.model import TimeQuality

_EPOCH = dt.datetime(1970, 1, 1)


def naive_to_ns(local: dt.datetime) -> int:
    """Nanoseconds between the naive ``local`` and 1970-01-01T00:00 on the same (naive) scale."""
    delta = local.replace(tzinfo=None) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


@dataclass(frozen=True, slots=True)
class DeviceClock:
    """How to place one connection's device time stamps on UTC.

    ``skew_ns``: gateway local time − device local time at connect, or None when the device has no
    Current Time Service (its stamps are then used uncorrected). ``utc_offset_ns``: local − UTC for the
    zone the stamps are in. ``gateway_unsynced``: the gateway's own clock was not synchronised.
    """

    skew_ns: int | None = None
    utc_offset_ns: int = 0
    gateway_unsynced: bool = False

    def _base_quality(self) -> int:
        return int(TimeQuality.GATEWAY_UNSYNCED) if self.gateway_unsynced else 0

    def correct(self, device_local: dt.datetime, fraction_ns: int = 0) -> tuple[int, int]:
        """A device time stamp (naive local time) → (UTC ns since the epoch, TimeQuality flags)."""
        local_ns = naive_to_ns(device_local) + fraction_ns
        quality = self._base_quality()
        if self.skew_ns is None:
            quality |= TimeQuality.DEVICE_UNCORRECTED
            return local_ns - self.utc_offset_ns, quality
        return local_ns + self.skew_ns - self.utc_offset_ns, quality

    def received(self, received_ns: int) -> tuple[int, int]:
        """Live data without a device time stamp: the receive time (UTC ns) and its quality."""
        return received_ns, self._base_quality() | TimeQuality.RECEIVE_TIME

    @classmethod
    def measure(
        cls,
        device_now: dt.datetime,
        gateway_now_utc_ns: int,
        utc_offset_ns: int,
        *,
        gateway_unsynced: bool = False,
    ) -> DeviceClock:
        """The clock from one Current Time reading taken at ``gateway_now_utc_ns``."""
        gateway_local_ns = gateway_now_utc_ns + utc_offset_ns
        return cls(gateway_local_ns - naive_to_ns(device_now), utc_offset_ns, gateway_unsynced)
