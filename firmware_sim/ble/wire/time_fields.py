"""Date Time 0x2A08, Current Time 0x2A2B, Local Time Information 0x2A0F (protocols.md §7)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import datetime


class AdjustReason(enum.IntFlag):
    MANUAL = 0x01
    EXTERNAL_REFERENCE = 0x02
    TIME_ZONE_CHANGE = 0x04
    DST_CHANGE = 0x08


NO_ADJUSTMENT = AdjustReason(0)
TIME_ZONE_UNKNOWN = -128
DST_UNKNOWN = 255


def date_time(dt: datetime) -> bytes:
    """7-byte Date Time: year u16, month, day, hours, minutes, seconds (device local, no zone)."""
    return struct.pack("<HBBBBB", dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


def parse_date_time(data: bytes) -> datetime:
    """The device's side of a written Date Time (e.g. CGM Session Start Time); ValueError if invalid."""
    if len(data) < 7:
        raise ValueError("Date Time needs 7 bytes")
    year, month, day, hour, minute, second = struct.unpack_from("<HBBBBB", data)
    return datetime(year, month, day, hour, minute, second)


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Current Time 0x2A2B: Exact Time 256 (Date Time, day of week, 1/256 s) + adjust reason."""

    time: datetime
    adjust_reason: AdjustReason = NO_ADJUSTMENT

    def to_bytes(self) -> bytes:
        fractions256 = self.time.microsecond * 256 // 1_000_000
        return date_time(self.time) + bytes([self.time.isoweekday(), fractions256, int(self.adjust_reason)])

    @classmethod
    def from_bytes(cls, data: bytes) -> CurrentTime:
        """Parse a collector's write (10 bytes); ValueError if malformed."""
        if len(data) != 10:
            raise ValueError("Current Time needs 10 bytes")
        dt = parse_date_time(data).replace(microsecond=data[8] * 1_000_000 // 256)
        return cls(dt, AdjustReason(data[9] & 0x0F))


def local_time_information(time_zone_quarters: int, dst: int) -> bytes:
    """Local Time Information 0x2A0F: time zone (sint8, 15-min steps) + DST offset (uint8)."""
    return struct.pack("<bB", time_zone_quarters, dst)
