"""Heart Rate Measurement → readings: heart rate, energy expended, one reading per RR interval."""

from __future__ import annotations

from typing import Final

from drivers.heart_rate.codec import RR_UNITS_PER_S, HeartRateMeasurement, HrFlags
from drivers.sdk.clock import DeviceClock
from gateway.model import Reading

STATUS_MASK: Final = int(HrFlags.CONTACT_DETECTED | HrFlags.CONTACT_SUPPORTED)
"""``Reading.status`` of heart-rate readings = the measurement's sensor-contact flag bits (0b100 = no contact)."""


def rr_end_offsets_ns(rr_intervals: tuple[int, ...]) -> tuple[int, ...]:
    """For each RR (oldest first), how long before the notification its beat ended (ns).

    The newest RR ends at the notification; RR *k* ends the sum of the later RRs earlier, so the
    RRs of one notification never share a time.
    """
    out: list[int] = []
    later = 0
    for rr in reversed(rr_intervals):
        out.append(later * 1_000_000_000 // RR_UNITS_PER_S)
        later += rr
    return tuple(reversed(out))


def readings(m: HeartRateMeasurement, clock: DeviceClock, received_ns: int) -> tuple[Reading, ...]:
    """Heart rate (/min), energy expended (kJ) and RR intervals (ms), timed at the receive time.

    The measurement carries no time stamp. Each RR is its own reading, timed at the end of its beat.
    """
    t, quality = clock.received(received_ns)
    tq = int(quality)
    status = int(m.flags) & STATUS_MASK
    out = [Reading("heart_rate", float(m.heart_rate), "/min", t, precision=0, time_quality=tq, status=status)]
    if m.energy_expended_kj is not None:
        out.append(
            Reading(
                "energy_expended", float(m.energy_expended_kj), "kJ", t, precision=0, time_quality=tq, status=status
            )
        )
    for rr, back in zip(m.rr_intervals, rr_end_offsets_ns(m.rr_intervals), strict=True):
        out.append(Reading("rr_interval", rr * 1000 / RR_UNITS_PER_S, "ms", t - back, time_quality=tq, status=status))
    return tuple(out)
