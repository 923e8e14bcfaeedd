"""GATT helpers shared by the BLE codecs: a bounds-checked reader, Date Time, UUIDs, E2E-CRC.

All multi-octet GATT fields are little-endian (protocols.md, general rules). Every read checks the
remaining length first and raises :class:`~gateway.errors.PayloadError` (reason ``malformed``)
naming the characteristic, the field and its offset.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass
from typing import Final

from drivers.sdk.ieee11073 import Number11073, decode_float, decode_sfloat
from gateway.errors import PayloadError

SIG_BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
DATE_TIME_SIZE: Final = 7
_HEX16 = re.compile(r"(?:0x)?([0-9a-f]{4})")
_HEX32 = re.compile(r"(?:0x)?([0-9a-f]{8})")
_FULL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalize_uuid(uuid: str | int) -> str:
    """``'2a37'``, ``'0x2A37'``, ``0x2A37``, ``'00002a37'`` or a full UUID → canonical lowercase full UUID."""
    if isinstance(uuid, int):
        if not 0 <= uuid <= 0xFFFFFFFF:
            raise PayloadError(f"UUID {uuid:#x} is not a 16- or 32-bit SIG UUID")
        return f"{uuid:08x}{SIG_BASE_UUID_SUFFIX}"
    text = uuid.strip().lower()
    if m := _HEX16.fullmatch(text):
        return f"0000{m.group(1)}{SIG_BASE_UUID_SUFFIX}"
    if m := _HEX32.fullmatch(text):
        return f"{m.group(1)}{SIG_BASE_UUID_SUFFIX}"
    compact = text.strip("{}").replace("-", "")
    if re.fullmatch(r"[0-9a-f]{32}", compact):
        full = f"{compact[:8]}-{compact[8:12]}-{compact[12:16]}-{compact[16:20]}-{compact[20:]}"
        if _FULL.fullmatch(full):
            return full
    raise PayloadError(f"{uuid!r} is not a UUID (16-bit like 2a37, or 128-bit)")


def short_uuid(uuid: str) -> str | None:
    """The 16-bit form (``'2a37'``) of a SIG UUID, or None for a vendor UUID."""
    full = normalize_uuid(uuid)
    if full.startswith("0000") and full.endswith(SIG_BASE_UUID_SUFFIX):
        return full[4:8]
    return None


def crc16_mcrf4xx(data: bytes, crc: int = 0xFFFF) -> int:
    """E2E-CRC of the CGM service (protocols.md §6.2): CRC-16/MCRF4XX, CRC("123456789") = 0x6F91."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


@dataclass(frozen=True, slots=True)
class DateTime:
    """Date Time 0x2A08 (7 octets): the device's local wall clock, no zone. 0 = unknown (date parts)."""

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> DateTime:
        return ByteReader(data, "Date Time", offset).date_time("date time")

    def to_bytes(self) -> bytes:
        return struct.pack("<HBBBBB", self.year, self.month, self.day, self.hours, self.minutes, self.seconds)

    @property
    def known(self) -> bool:
        """False when the year, month or day is 0 ("not known")."""
        return self.year != 0 and self.month != 0 and self.day != 0

    def datetime(self) -> dt.datetime | None:
        """The naive local datetime; None when not known; PayloadError when a field is out of range."""
        if not self.known:
            return None
        try:
            return dt.datetime(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)
        except ValueError as e:
            raise PayloadError(f"date time {self.iso()} is not a valid time: {e}") from None

    def iso(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}T{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}"

    @classmethod
    def of(cls, t: dt.datetime) -> DateTime:
        return cls(t.year, t.month, t.day, t.hour, t.minute, t.second)


class ByteReader:
    """Sequential little-endian reads over one characteristic value, every read bounds-checked."""

    __slots__ = ("data", "offset", "what")

    def __init__(self, data: bytes, what: str, offset: int = 0) -> None:
        self.data = bytes(data)
        self.what = what
        self.offset = offset

    def need(self, n: int, field: str) -> int:
        """Check that ``n`` octets remain for ``field``; return the field's offset and advance past it."""
        at = self.offset
        if n < 0 or at + n > len(self.data):
            left = max(0, len(self.data) - at)
            raise PayloadError(
                f"{self.what}: {field} needs {n} byte(s) at offset {at}, {left} left", reason="malformed"
            )
        self.offset = at + n
        return at

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def _unpack(self, fmt: str, size: int, field: str) -> int:
        value: int = struct.unpack_from(fmt, self.data, self.need(size, field))[0]
        return value

    def u8(self, field: str) -> int:
        return self._unpack("<B", 1, field)

    def s8(self, field: str) -> int:
        return self._unpack("<b", 1, field)

    def u16(self, field: str) -> int:
        return self._unpack("<H", 2, field)

    def s16(self, field: str) -> int:
        return self._unpack("<h", 2, field)

    def u24(self, field: str) -> int:
        at = self.need(3, field)
        return int.from_bytes(self.data[at : at + 3], "little")

    def u32(self, field: str) -> int:
        return self._unpack("<I", 4, field)

    def u64(self, field: str) -> int:
        return self._unpack("<Q", 8, field)

    def f32(self, field: str) -> float:
        at = self.need(4, field)
        value: float = struct.unpack_from("<f", self.data, at)[0]
        return value

    def take(self, n: int, field: str) -> bytes:
        at = self.need(n, field)
        return self.data[at : at + n]

    def rest(self) -> bytes:
        at = self.offset
        self.offset = len(self.data)
        return self.data[at:]

    def sfloat(self, field: str) -> Number11073:
        return decode_sfloat(self.u16(field))

    def float32(self, field: str) -> Number11073:
        return decode_float(self.u32(field))

    def date_time(self, field: str) -> DateTime:
        at = self.need(7, field)
        return DateTime(*struct.unpack_from("<HBBBBB", self.data, at))

    def end(self) -> None:
        """Require that every octet was consumed (for fixed-layout values)."""
        if self.offset != len(self.data):
            raise PayloadError(
                f"{self.what}: {len(self.data) - self.offset} unexpected byte(s) at offset {self.offset}",
                reason="malformed",
            )
