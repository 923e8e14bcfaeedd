"""Current Time, Local Time Information, Device Information and Battery Level values (§7). Pure."""

from __future__ import annotations

import datetime as dt
import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.sdk.clock import DeviceClock
from drivers.sdk.gatt import ByteReader, DateTime
from gateway.errors import PayloadError


class AdjustReason(enum.IntFlag):
    MANUAL = 0x01
    EXTERNAL_REFERENCE = 0x02
    TIME_ZONE_CHANGE = 0x04
    DST_CHANGE = 0x08


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Current Time 0x2A2B: Date Time, day of week (0 unknown, 1 Monday … 7 Sunday), 1/256 s, adjust reason."""

    date_time: DateTime
    day_of_week: int
    fractions256: int
    adjust_reason: AdjustReason

    @property
    def fraction_ns(self) -> int:
        return self.fractions256 * 1_000_000_000 // 256

    def datetime(self) -> dt.datetime | None:
        """The device's local time (naive) including the fraction, or None when not known."""
        base = self.date_time.datetime()
        return None if base is None else base + dt.timedelta(microseconds=self.fraction_ns // 1000)

    def device_clock(
        self, gateway_now_utc_ns: int, utc_offset_ns: int, *, gateway_unsynced: bool = False
    ) -> DeviceClock:
        """The :class:`DeviceClock` of a connection from this reading taken at ``gateway_now_utc_ns``."""
        now = self.datetime()
        if now is None:
            return DeviceClock(None, utc_offset_ns, gateway_unsynced)
        return DeviceClock.measure(now, gateway_now_utc_ns, utc_offset_ns, gateway_unsynced=gateway_unsynced)

    @classmethod
    def from_bytes(cls, data: bytes) -> CurrentTime:
        r = ByteReader(data, "Current Time")
        when = r.date_time("date time")
        dow, frac = r.u8("day of week"), r.u8("fractions256")
        return cls(when, dow, frac, AdjustReason(r.u8("adjust reason") & 0x0F))

    def to_bytes(self) -> bytes:
        return self.date_time.to_bytes() + bytes((self.day_of_week, self.fractions256, int(self.adjust_reason)))


DST_OFFSET_MIN: Final[dict[int, int]] = {0: 0, 2: 30, 4: 60, 8: 120}


@dataclass(frozen=True, slots=True)
class LocalTimeInformation:
    """Local Time Information 0x2A0F: time zone (sint8, 15-min steps, −128 unknown) and DST code."""

    time_zone: int
    dst_offset: int

    @property
    def utc_offset_ns(self) -> int | None:
        """Local − UTC (zone + DST), or None when unknown."""
        if self.time_zone == -128 or self.dst_offset not in DST_OFFSET_MIN:
            return None
        return (self.time_zone * 15 + DST_OFFSET_MIN[self.dst_offset]) * 60_000_000_000

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalTimeInformation:
        r = ByteReader(data, "Local Time Information")
        return cls(r.s8("time zone"), r.u8("DST offset"))

    def to_bytes(self) -> bytes:
        return struct.pack("<bB", self.time_zone, self.dst_offset)


def decode_string(data: bytes, what: str = "Device Information string") -> str:
    """A DIS UTF-8 string (no terminator; trailing NULs some devices send are dropped)."""
    try:
        return bytes(data).rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError(f"{what}: not UTF-8 at offset {e.start}") from None


@dataclass(frozen=True, slots=True)
class SystemId:
    """System ID 0x2A23: 40-bit manufacturer identifier, then 24-bit organisationally unique id."""

    manufacturer_id: int
    oui: int

    @classmethod
    def from_bytes(cls, data: bytes) -> SystemId:
        raw = ByteReader(data, "System ID").take(8, "system id")
        return cls(int.from_bytes(raw[:5], "little"), int.from_bytes(raw[5:], "little"))

    def to_bytes(self) -> bytes:
        return self.manufacturer_id.to_bytes(5, "little") + self.oui.to_bytes(3, "little")


@dataclass(frozen=True, slots=True)
class PnpId:
    """PnP ID 0x2A50: vendor id source (1 Bluetooth SIG, 2 USB-IF), vendor, product, version."""

    vendor_id_source: int
    vendor_id: int
    product_id: int
    product_version: int

    @classmethod
    def from_bytes(cls, data: bytes) -> PnpId:
        r = ByteReader(data, "PnP ID")
        return cls(r.u8("vendor id source"), r.u16("vendor id"), r.u16("product id"), r.u16("product version"))

    def to_bytes(self) -> bytes:
        return struct.pack("<BHHH", self.vendor_id_source, self.vendor_id, self.product_id, self.product_version)


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery Level 0x2A19: uint8 percent; values above 100 are invalid."""

    percent: int

    @property
    def valid(self) -> bool:
        return self.percent <= 100

    @classmethod
    def from_bytes(cls, data: bytes) -> BatteryLevel:
        return cls(ByteReader(data, "Battery Level").u8("battery level"))

    def to_bytes(self) -> bytes:
        return bytes((self.percent,))
