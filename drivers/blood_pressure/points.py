"""Blood pressure → readings; intermediate cuff pressure → a live-display value that is never stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.blood_pressure.codec import BloodPressureMeasurement, BpStatus, IntermediateCuffPressure
from drivers.sdk.clock import DeviceClock
from drivers.sdk.points import number_reading, stamp_time
from gateway.model import AbsentReason, Reading

CUFF_PRESSURE_MDC: Final = 150300
"""MDC_PRESS_CUFF (2::19228), for displays only: cuff pressure is not in the stored vocabulary."""


def readings(m: BloodPressureMeasurement, clock: DeviceClock, received_ns: int) -> tuple[Reading, ...]:
    """Systolic, diastolic, mean arterial pressure (mm[Hg] or kPa, as sent) and pulse rate (/min).

    ``status`` = the measurement status bits; ``alert`` when the cuff reports an irregular pulse.
    Time = the device time stamp corrected by ``clock``, else the receive time.
    """
    t, tq = stamp_time(m.time_stamp, clock, received_ns)
    status = int(m.status or 0)
    alert = bool(status & BpStatus.IRREGULAR_PULSE)
    unit = m.unit
    out = [
        number_reading("bp_systolic", m.systolic, unit, t, tq, status=status, alert=alert),
        number_reading("bp_diastolic", m.diastolic, unit, t, tq, status=status, alert=alert),
        number_reading("bp_mean", m.mean_arterial, unit, t, tq, status=status, alert=alert),
    ]
    if m.pulse_rate is not None:
        out.append(number_reading("pulse_rate_bp", m.pulse_rate, "/min", t, tq, status=status, alert=alert))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LiveCuffPressure:
    """The current cuff pressure during a measurement: for a live display, NEVER a stored result.

    Deliberately not a :class:`~gateway.model.Reading`, so it cannot enter a batch by mistake.
    """

    value: float | None
    unit: str
    precision: int | None
    absent: AbsentReason | None
    time_ns: int
    mdc: int = CUFF_PRESSURE_MDC


def live_cuff_pressure(icp: IntermediateCuffPressure, received_ns: int) -> LiveCuffPressure:
    """The cuff pressure of one 0x2A36 notification, timed at the receive time."""
    p = icp.cuff_pressure
    return LiveCuffPressure(p.value, icp.unit, p.precision, p.absent, received_ns)
