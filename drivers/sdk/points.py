"""Helpers the profiles' ``points`` modules share: numbers → readings, device time stamps → UTC."""

from __future__ import annotations

from drivers.sdk.clock import DeviceClock
from drivers.sdk.gatt import DateTime
from drivers.sdk.ieee11073 import Number11073
from gateway.model import Reading


def number_reading(
    metric: str,
    n: Number11073,
    unit: str,
    time_ns: int,
    time_quality: int,
    *,
    seq: int | None = None,
    status: int = 0,
    alert: bool = False,
) -> Reading:
    """A reading from an SFLOAT/FLOAT: its value and precision, or its absent reason."""
    return Reading(
        metric,
        n.value,
        unit,
        time_ns,
        precision=n.precision,
        absent=None if n.absent is None else n.absent.value,
        seq=seq,
        time_quality=int(time_quality),
        status=status,
        alert=alert,
    )


def stamp_time(stamp: DateTime | None, clock: DeviceClock, received_ns: int, *, offset_ns: int = 0) -> tuple[int, int]:
    """A device Date Time (+ an offset) → (UTC ns, TimeQuality); no or unknown stamp → receive time."""
    local = None if stamp is None else stamp.datetime()
    if local is None:
        t, q = clock.received(received_ns)
        return t, int(q)
    t, q = clock.correct(local, offset_ns)
    return t, int(q)
