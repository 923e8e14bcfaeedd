"""Glucose measurement → one reading in the metric of its sample type; context → HbA1c.

Measurement time = base time + time offset (device local clock, placed on UTC by ``clock``).
Control-solution results give no reading; a reserved sample type is a ``PayloadError``
(reason ``unknown_sample_type``): the record is quarantined, not guessed.
"""

from __future__ import annotations

from typing import Final

from drivers.glucose.codec import GlucoseContext, GlucoseMeasurement, SampleType
from drivers.sdk.clock import DeviceClock
from drivers.sdk.points import number_reading, stamp_time
from gateway.errors import PayloadError
from gateway.model import Reading

METRIC_BY_TYPE: Final[dict[int, str]] = {
    SampleType.CAPILLARY_WHOLE_BLOOD: "glucose_capillary_whole_blood",
    SampleType.CAPILLARY_PLASMA: "glucose_capillary_plasma",
    SampleType.VENOUS_WHOLE_BLOOD: "glucose_venous_whole_blood",
    SampleType.VENOUS_PLASMA: "glucose_venous_plasma",
    SampleType.ARTERIAL_WHOLE_BLOOD: "glucose_arterial_whole_blood",
    SampleType.ARTERIAL_PLASMA: "glucose_arterial_plasma",
    SampleType.UNDETERMINED_WHOLE_BLOOD: "glucose_undetermined_whole_blood",
    SampleType.UNDETERMINED_PLASMA: "glucose_undetermined_plasma",
    SampleType.INTERSTITIAL_FLUID: "glucose_isf",
}
"""Sample type nibble → vocabulary metric (control solution is deliberately absent)."""


def glucose_metric(sample_type: int) -> str:
    try:
        return METRIC_BY_TYPE[sample_type]
    except KeyError:
        raise PayloadError(
            f"glucose sample type {sample_type} is reserved: no metric", reason="unknown_sample_type"
        ) from None


def measurement_time(m: GlucoseMeasurement, clock: DeviceClock, received_ns: int) -> tuple[int, int]:
    """(UTC ns, TimeQuality) of base time + time offset; an unknown base time gives the receive time."""
    return stamp_time(m.base_time, clock, received_ns, offset_ns=(m.time_offset_min or 0) * 60_000_000_000)


def readings(m: GlucoseMeasurement, clock: DeviceClock, received_ns: int) -> tuple[Reading, ...]:
    """The glucose reading (mg/dL or mmol/L as sent, precision kept), with ``seq`` and sensor status.

    Empty for a control-solution result or a record without a concentration.
    """
    value = m.converted
    if value is None or m.is_control_solution or m.sample_type is None:
        return ()
    metric = glucose_metric(m.sample_type)
    t, tq = measurement_time(m, clock, received_ns)
    return (number_reading(metric, value, m.unit, t, tq, seq=m.sequence, status=int(m.sensor_status or 0)),)


def context_readings(ctx: GlucoseContext, time_ns: int, time_quality: int) -> tuple[Reading, ...]:
    """HbA1c (%) of a context, timed like its measurement (pass that measurement's time)."""
    if ctx.hba1c_pct is None:
        return ()
    return (number_reading("hba1c", ctx.hba1c_pct, "%", time_ns, time_quality, seq=ctx.sequence),)
