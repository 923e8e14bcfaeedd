"""CGM records → readings: glucose (mg/dL) and trend ((mg/dL)/min), one pair per record.

Record time = session start time (0x2AAA, local, with its own zone when known) + time offset
minutes, placed on UTC by ``clock``. Without a session start time the newest record of the
notification is taken as received now and older ones are placed back by their offsets (flagged
``RECEIVE_TIME``). ``seq`` = the record's time offset (the CGM's own record key, also RACP's filter).
``status`` = the 24-bit annunciation; ``alert`` = a warning bit 0–5 (patient low/high, hypo, hyper,
rate of change). CGM quality is decoded but not stored (no vocabulary metric).
"""

from __future__ import annotations

import dataclasses

from drivers.cgm.codec import CgmMeasurement, CgmRecord, CgmSessionStartTime
from drivers.sdk.clock import DeviceClock
from drivers.sdk.points import number_reading
from gateway.model import Reading

MINUTE_NS = 60_000_000_000


def record_time(
    record: CgmRecord, session_start: CgmSessionStartTime | None, clock: DeviceClock, anchor: tuple[int, int]
) -> tuple[int, int]:
    """(UTC ns, TimeQuality) of one record; ``anchor`` = (receive time, offset of the newest record)."""
    start = None if session_start is None else session_start.local_start()
    if session_start is None or start is None:
        received_ns, newest_offset = anchor
        t, q = clock.received(received_ns - (newest_offset - record.time_offset_min) * MINUTE_NS)
        return t, int(q)
    zone = session_start.utc_offset_ns
    if zone is not None:
        clock = dataclasses.replace(clock, utc_offset_ns=zone)
    t, q = clock.correct(start, record.time_offset_min * MINUTE_NS)
    return t, int(q)


def readings(
    m: CgmMeasurement,
    session_start: CgmSessionStartTime | None,
    clock: DeviceClock,
    received_ns: int,
    *,
    metric: str = "glucose_isf",
) -> tuple[Reading, ...]:
    """Every record's glucose and (when sent) trend reading, in record order."""
    anchor = (received_ns, max(r.time_offset_min for r in m.records))
    out: list[Reading] = []
    for rec in m.records:
        t, tq = record_time(rec, session_start, clock, anchor)
        status, alert, seq = int(rec.annunciation), rec.alert, rec.time_offset_min
        out.append(number_reading(metric, rec.glucose_mg_dl, "mg/dL", t, tq, seq=seq, status=status, alert=alert))
        if rec.trend is not None:
            out.append(
                number_reading("glucose_trend", rec.trend, "mg/dL/min", t, tq, seq=seq, status=status, alert=alert)
            )
    return tuple(out)
