"""Pulse oximetry → readings: SpO2, pulse rate, perfusion (pulse amplitude index).

``Reading.status`` = measurement status (bits 0–15) | device-and-sensor status << 16. Readings
flagged as demonstration or test data are real-looking but not patient data: the session drops
measurements for which :func:`is_demo_or_test` is true (and counts them).
The fast and slow SpO2/PR averages of the continuous measurement are decoded but not stored: they
would share the normal values' metric and time.
"""

from __future__ import annotations

from drivers.pulse_oximeter.codec import DEMO_OR_TEST, PlxContinuous, PlxMeasurementStatus, PlxSpotCheck
from drivers.sdk.clock import DeviceClock
from drivers.sdk.points import number_reading, stamp_time
from gateway.model import Reading, TimeQuality


def is_demo_or_test(m: PlxSpotCheck | PlxContinuous) -> bool:
    """The device marked this measurement as demonstration or test data: never patient data."""
    return bool(m.measurement_status is not None and m.measurement_status & DEMO_OR_TEST)


def is_invalid(m: PlxSpotCheck | PlxContinuous) -> bool:
    """The device says the measurement is invalid or unavailable."""
    bad = PlxMeasurementStatus.INVALID | PlxMeasurementStatus.UNAVAILABLE
    return bool(m.measurement_status is not None and m.measurement_status & bad)


def status_bits(m: PlxSpotCheck | PlxContinuous) -> int:
    return int(m.measurement_status or 0) | int(m.device_sensor_status or 0) << 16


def readings(m: PlxSpotCheck | PlxContinuous, clock: DeviceClock, received_ns: int) -> tuple[Reading, ...]:
    """SpO2 (%), pulse rate (/min) and, when sent, perfusion index (%, the PAI).

    Spot-checks with a time stamp are placed by ``clock``; when the device says its clock is not set
    the stamp is still used but flagged ``DEVICE_UNCORRECTED``. Continuous data: receive time.
    """
    if isinstance(m, PlxSpotCheck):
        t, tq = stamp_time(m.time_stamp, clock, received_ns)
        if m.clock_not_set and m.time_stamp is not None:
            tq |= TimeQuality.DEVICE_UNCORRECTED
    else:
        t, tq = stamp_time(None, clock, received_ns)
    status = status_bits(m)
    out = [
        number_reading("spo2", m.spo2, "%", t, tq, status=status),
        number_reading("pulse_rate_oximeter", m.pulse_rate, "/min", t, tq, status=status),
    ]
    if m.pulse_amplitude_index is not None:
        out.append(number_reading("perfusion_index", m.pulse_amplitude_index, "%", t, tq, status=status))
    return tuple(out)
