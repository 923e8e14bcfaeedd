"""Polar ECG frames → gateway waveforms (metric ``ecg``, unit ``uV``).

Polar time counts ns since 2000-01-01T00:00 on the strap's own clock, which is UTC only if the
collector set it so; otherwise (the H10 default clock restarts at 2019-01-01) the first frame is
anchored to the gateway's receive time. A :class:`PolarTimebase` holds that choice for a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.polar_pmd.codec import ECG_SAMPLE_RATE_HZ, EcgFrame
from drivers.sdk.clock import DeviceClock
from gateway.model import TimeQuality, Waveform

POLAR_EPOCH_UNIX_NS: Final = 946_684_800_000_000_000
"""2000-01-01T00:00:00Z in ns since the Unix epoch."""


@dataclass(frozen=True, slots=True)
class PolarTimebase:
    """Polar time → UTC ns: ``utc = polar + offset_ns``, with the time quality of that mapping."""

    offset_ns: int
    time_quality: int

    @classmethod
    def device_utc(cls, clock: DeviceClock | None = None) -> PolarTimebase:
        """The strap's clock was set to UTC by the collector."""
        unsynced = clock is not None and clock.gateway_unsynced
        return cls(POLAR_EPOCH_UNIX_NS, int(TimeQuality.GATEWAY_UNSYNCED) if unsynced else 0)

    @classmethod
    def anchored(cls, first: EcgFrame, received_ns: int, clock: DeviceClock) -> PolarTimebase:
        """The first frame's last sample is taken as received at ``received_ns``."""
        t, q = clock.received(received_ns)
        return cls(t - first.timestamp_ns, int(q))

    def utc_ns(self, polar_ns: int) -> int:
        return polar_ns + self.offset_ns


def frame_period_ns(frame: EcgFrame, previous_timestamp_ns: int | None = None) -> float:
    """Sample spacing: from two consecutive frames' time stamps when known, else the nominal 1e9/130 ns."""
    nominal = 1e9 / ECG_SAMPLE_RATE_HZ
    if previous_timestamp_ns is None or frame.samples.size == 0:
        return nominal
    measured = (frame.timestamp_ns - previous_timestamp_ns) / frame.samples.size
    return measured if 0.9 * nominal <= measured <= 1.1 * nominal else nominal


def waveform(
    frame: EcgFrame, timebase: PolarTimebase, *, previous_timestamp_ns: int | None = None, metric: str = "ecg"
) -> Waveform:
    """One frame as a waveform: the last sample at the frame time, ``start_ns`` = first sample.

    The period is rounded to whole ns (the model's ``period_ns`` is an integer); the start is
    computed from the exact period, so the last sample lands on the frame time within a few ns.
    """
    period = frame_period_ns(frame, previous_timestamp_ns)
    start = timebase.utc_ns(frame.timestamp_ns) - round((frame.samples.size - 1) * period)
    return Waveform(metric, "uV", start, round(period), frame.samples, time_quality=timebase.time_quality)
