"""CGM Measurement 0x2AA7, Feature 0x2AA8, Status 0x2AA9, Session Start 0x2AAA, Run Time 0x2AAB. Pure.

[conflict] annunciation octet order: the SIG definition (Status, Cal/Temp, Warning) is the default;
``warning_first=True`` reads the reverse order some older firmware sends (a per-device-model override).
"""

from __future__ import annotations

import datetime as dt
import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.cgm.crc import check_crc, split_crc, with_crc
from drivers.sdk.gatt import ByteReader, DateTime
from drivers.sdk.ieee11073 import Number11073, encode_number_sfloat
from gateway.errors import PayloadError


class CgmFlags(enum.IntFlag):
    TREND = 0x01
    QUALITY = 0x02
    WARNING_OCTET = 0x20
    CAL_TEMP_OCTET = 0x40
    STATUS_OCTET = 0x80


KNOWN_FLAGS: Final = 0xE3
MIN_RECORD_SIZE: Final = 6


class CgmAnnunciation(enum.IntFlag):
    """The 24-bit sensor status annunciation: Status (0–7), Cal/Temp (8–15), Warning (16–23)."""

    SESSION_STOPPED = 1 << 0
    DEVICE_BATTERY_LOW = 1 << 1
    SENSOR_TYPE_INCORRECT = 1 << 2
    SENSOR_MALFUNCTION = 1 << 3
    DEVICE_SPECIFIC_ALERT = 1 << 4
    GENERAL_DEVICE_FAULT = 1 << 5
    TIME_SYNC_REQUIRED = 1 << 8
    CALIBRATION_NOT_ALLOWED = 1 << 9
    CALIBRATION_RECOMMENDED = 1 << 10
    CALIBRATION_REQUIRED = 1 << 11
    TEMPERATURE_TOO_HIGH = 1 << 12
    TEMPERATURE_TOO_LOW = 1 << 13
    CALIBRATION_PENDING = 1 << 14
    BELOW_PATIENT_LOW = 1 << 16
    ABOVE_PATIENT_HIGH = 1 << 17
    BELOW_HYPO = 1 << 18
    ABOVE_HYPER = 1 << 19
    RATE_OF_DECREASE_EXCEEDED = 1 << 20
    RATE_OF_INCREASE_EXCEEDED = 1 << 21
    BELOW_DEVICE_RANGE = 1 << 22
    ABOVE_DEVICE_RANGE = 1 << 23


_OCTETS: Final = (
    (CgmFlags.STATUS_OCTET, "status octet"),
    (CgmFlags.CAL_TEMP_OCTET, "cal/temp octet"),
    (CgmFlags.WARNING_OCTET, "warning octet"),
)
ALERT_BITS: Final = 0x3F << 16
"""Warning bits 0–5 (patient low/high, hypo, hyper, rate of change): the device's own alerts."""


@dataclass(frozen=True, slots=True)
class CgmRecord:
    """One record of a CGM Measurement notification."""

    flags: CgmFlags
    glucose_mg_dl: Number11073
    time_offset_min: int
    status_octet: int | None = None
    cal_temp_octet: int | None = None
    warning_octet: int | None = None
    trend: Number11073 | None = None
    """(mg/dL)/min."""
    quality_pct: Number11073 | None = None
    crc: int | None = None

    @property
    def annunciation(self) -> CgmAnnunciation:
        return CgmAnnunciation(
            (self.status_octet or 0) | (self.cal_temp_octet or 0) << 8 | (self.warning_octet or 0) << 16
        )

    @property
    def alert(self) -> bool:
        return bool(int(self.annunciation) & ALERT_BITS)

    @classmethod
    def parse(cls, record: bytes, what: str, *, crc: bool | None, warning_first: bool) -> CgmRecord:
        r = ByteReader(record, what)
        r.u8("size")
        flags = CgmFlags(r.u8("flags") & KNOWN_FLAGS)
        glucose, offset = r.sfloat("glucose concentration"), r.u16("time offset")
        octets: dict[CgmFlags, int] = {}
        order = _OCTETS[::-1] if warning_first else _OCTETS
        for bit, name in order:
            if flags & bit:
                octets[bit] = r.u8(name)
        trend = r.sfloat("trend") if flags & CgmFlags.TREND else None
        quality = r.sfloat("quality") if flags & CgmFlags.QUALITY else None
        sent_crc = None
        if crc is None:
            crc = r.remaining == 2
        if crc:
            sent_crc = r.u16("E2E-CRC")
            check_crc(record[: r.offset], what)
        r.end()
        return cls(
            flags,
            glucose,
            offset,
            octets.get(CgmFlags.STATUS_OCTET),
            octets.get(CgmFlags.CAL_TEMP_OCTET),
            octets.get(CgmFlags.WARNING_OCTET),
            trend,
            quality,
            sent_crc,
        )

    def to_bytes(self, *, crc: bool = False) -> bytes:
        """Encode (Status, Cal/Temp, Warning order), with the E2E-CRC when ``crc``."""
        flags = 0
        body = struct.pack("<HH", encode_number_sfloat(self.glucose_mg_dl), self.time_offset_min)
        for bit, octet in (
            (CgmFlags.STATUS_OCTET, self.status_octet),
            (CgmFlags.CAL_TEMP_OCTET, self.cal_temp_octet),
            (CgmFlags.WARNING_OCTET, self.warning_octet),
        ):
            if octet is not None:
                flags |= bit
                body += bytes((octet,))
        for bit, n in ((CgmFlags.TREND, self.trend), (CgmFlags.QUALITY, self.quality_pct)):
            if n is not None:
                flags |= bit
                body += struct.pack("<H", encode_number_sfloat(n))
        size = 2 + len(body) + (2 if crc else 0)
        out = bytes((size, flags)) + body
        return with_crc(out) if crc else out


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One 0x2AA7 notification: one or more records back to back, each starting with its size."""

    records: tuple[CgmRecord, ...]

    @classmethod
    def from_bytes(cls, data: bytes, *, crc: bool | None = None, warning_first: bool = False) -> CgmMeasurement:
        """Decode every record. ``crc``: True when CGM Feature says E2E-CRC is supported (then every
        record must carry a valid CRC), False when not, None = infer per record from its size."""
        data = bytes(data)
        if not data:
            raise PayloadError("CGM Measurement: empty notification")
        records: list[CgmRecord] = []
        at = 0
        while at < len(data):
            what = f"CGM Measurement record {len(records)}"
            size = data[at]
            if size < MIN_RECORD_SIZE:
                raise PayloadError(f"{what}: size {size} at offset {at} is below the minimum {MIN_RECORD_SIZE}")
            if at + size > len(data):
                raise PayloadError(f"{what}: size {size} at offset {at} exceeds the {len(data) - at} byte(s) left")
            records.append(CgmRecord.parse(data[at : at + size], what, crc=crc, warning_first=warning_first))
            at += size
        return cls(tuple(records))

    def to_bytes(self, *, crc: bool = False) -> bytes:
        return b"".join(r.to_bytes(crc=crc) for r in self.records)


class CgmFeatureBits(enum.IntFlag):
    CALIBRATION = 1 << 0
    PATIENT_HIGH_LOW_ALERTS = 1 << 1
    HYPO_ALERTS = 1 << 2
    HYPER_ALERTS = 1 << 3
    RATE_ALERTS = 1 << 4
    DEVICE_SPECIFIC_ALERT = 1 << 5
    SENSOR_MALFUNCTION_DETECTION = 1 << 6
    TEMPERATURE_HIGH_LOW_DETECTION = 1 << 7
    RESULT_HIGH_LOW_DETECTION = 1 << 8
    LOW_BATTERY_DETECTION = 1 << 9
    SENSOR_TYPE_ERROR_DETECTION = 1 << 10
    GENERAL_DEVICE_FAULT = 1 << 11
    E2E_CRC = 1 << 12
    MULTIPLE_BONDS = 1 << 13
    MULTIPLE_SESSIONS = 1 << 14
    TREND = 1 << 15
    QUALITY = 1 << 16


@dataclass(frozen=True, slots=True)
class CgmFeature:
    """CGM Feature 0x2AA8: 24-bit features, type/location octet, CRC (0xFFFF when E2E-CRC is unsupported)."""

    features: CgmFeatureBits
    sample_type: int
    sample_location: int
    crc: int

    @property
    def e2e_crc(self) -> bool:
        return bool(self.features & CgmFeatureBits.E2E_CRC)

    @classmethod
    def from_bytes(cls, data: bytes) -> CgmFeature:
        r = ByteReader(data, "CGM Feature")
        features = CgmFeatureBits(r.u24("features") & 0x01FFFF)
        type_loc = r.u8("type and sample location")
        crc = r.u16("E2E-CRC")
        if features & CgmFeatureBits.E2E_CRC:
            check_crc(bytes(data[: r.offset]), "CGM Feature")
        return cls(features, type_loc & 0x0F, type_loc >> 4, crc)

    def to_bytes(self) -> bytes:
        body = int(self.features).to_bytes(3, "little") + bytes(
            ((self.sample_location & 0xF) << 4 | self.sample_type & 0xF,)
        )
        return with_crc(body) if self.e2e_crc else body + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class CgmStatus:
    """CGM Status 0x2AA9: time offset (min) and the 24-bit status (annunciation layout)."""

    time_offset_min: int
    status: CgmAnnunciation

    @classmethod
    def from_bytes(cls, data: bytes, *, crc: bool | None = None) -> CgmStatus:
        body = split_crc(bytes(data), 5, "CGM Status", crc)
        offset, low, high = struct.unpack_from("<HBH", body)
        return cls(offset, CgmAnnunciation(low | high << 8))

    def to_bytes(self, *, crc: bool = False) -> bytes:
        body = struct.pack("<H", self.time_offset_min) + int(self.status).to_bytes(3, "little")
        return with_crc(body) if crc else body


DST_OFFSET_MIN: Final[dict[int, int]] = {0: 0, 2: 30, 4: 60, 8: 120}
TIME_ZONE_UNKNOWN: Final = -128
DST_UNKNOWN: Final = 255


@dataclass(frozen=True, slots=True)
class CgmSessionStartTime:
    """CGM Session Start Time 0x2AAA: local Date Time, time zone (15-min steps), DST offset code."""

    start: DateTime
    time_zone: int
    dst_offset: int

    @property
    def utc_offset_ns(self) -> int | None:
        """Local − UTC of the start time (zone + DST), or None when either is unknown or reserved."""
        if self.time_zone == TIME_ZONE_UNKNOWN or self.dst_offset not in DST_OFFSET_MIN:
            return None
        return (self.time_zone * 15 + DST_OFFSET_MIN[self.dst_offset]) * 60_000_000_000

    def local_start(self) -> dt.datetime | None:
        return self.start.datetime()

    @classmethod
    def from_bytes(cls, data: bytes, *, crc: bool | None = None) -> CgmSessionStartTime:
        body = split_crc(bytes(data), 9, "CGM Session Start Time", crc)
        r = ByteReader(body, "CGM Session Start Time")
        return cls(r.date_time("session start time"), r.s8("time zone"), r.u8("DST offset"))

    def to_bytes(self, *, crc: bool = False) -> bytes:
        body = self.start.to_bytes() + struct.pack("<bB", self.time_zone, self.dst_offset)
        return with_crc(body) if crc else body


@dataclass(frozen=True, slots=True)
class CgmSessionRunTime:
    """CGM Session Run Time 0x2AAB: expected session length in hours."""

    hours: int

    @classmethod
    def from_bytes(cls, data: bytes, *, crc: bool | None = None) -> CgmSessionRunTime:
        body = split_crc(bytes(data), 2, "CGM Session Run Time", crc)
        return cls(struct.unpack_from("<H", body)[0])

    def to_bytes(self, *, crc: bool = False) -> bytes:
        body = struct.pack("<H", self.hours)
        return with_crc(body) if crc else body
