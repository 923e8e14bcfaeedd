"""Battery Level → a ``battery_level`` reading (an invalid level > 100 % is absent, reason ``nan``)."""

from __future__ import annotations

from drivers.device_info.codec import BatteryLevel
from drivers.sdk.clock import DeviceClock
from gateway.model import AbsentReason, Reading


def battery_readings(level: BatteryLevel, clock: DeviceClock, received_ns: int) -> tuple[Reading, ...]:
    t, q = clock.received(received_ns)
    if not level.valid:
        return (Reading("battery_level", None, "%", t, absent=AbsentReason.NAN.value, time_quality=int(q)),)
    return (Reading("battery_level", float(level.percent), "%", t, precision=0, time_quality=int(q)),)
