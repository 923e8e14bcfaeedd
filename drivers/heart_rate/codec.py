"""Heart Rate Measurement 0x2A37 and Body Sensor Location 0x2A38 (protocols.md §2). Pure."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.sdk.gatt import ByteReader
from gateway.errors import PayloadError

RESET_ENERGY_EXPENDED: Final = b"\x01"
"""Written to the Heart Rate Control Point 0x2A39 to reset the energy expended."""

RR_UNITS_PER_S: Final = 1024


class HrFlags(enum.IntFlag):
    HR_UINT16 = 0x01
    CONTACT_DETECTED = 0x02
    CONTACT_SUPPORTED = 0x04
    ENERGY_EXPENDED = 0x08
    RR_INTERVALS = 0x10


KNOWN_FLAGS: Final = HrFlags(0x1F)


class SensorContact(enum.IntEnum):
    """Flag bits 2..1: 0 and 1 both mean "feature not supported"."""

    NOT_SUPPORTED = 0
    NO_CONTACT = 2
    CONTACT = 3


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One 0x2A37 notification. RR intervals are raw (1/1024 s), oldest first."""

    flags: HrFlags
    heart_rate: int
    energy_expended_kj: int | None = None
    rr_intervals: tuple[int, ...] = ()

    @property
    def sensor_contact(self) -> SensorContact:
        bits = (int(self.flags) >> 1) & 0b11
        return SensorContact.NOT_SUPPORTED if bits < 2 else SensorContact(bits)

    @property
    def contact_lost(self) -> bool:
        """Contact detection is supported and reports no skin contact: low-quality reading."""
        return self.sensor_contact is SensorContact.NO_CONTACT

    @property
    def rr_ms(self) -> tuple[float, ...]:
        return tuple(rr * 1000 / RR_UNITS_PER_S for rr in self.rr_intervals)

    @classmethod
    def from_bytes(cls, data: bytes) -> HeartRateMeasurement:
        r = ByteReader(data, "Heart Rate Measurement")
        flags = HrFlags(r.u8("flags") & KNOWN_FLAGS)
        hr = r.u16("heart rate (uint16)") if flags & HrFlags.HR_UINT16 else r.u8("heart rate (uint8)")
        energy = r.u16("energy expended") if flags & HrFlags.ENERGY_EXPENDED else None
        rr: tuple[int, ...] = ()
        if flags & HrFlags.RR_INTERVALS:
            if r.remaining == 0 or r.remaining % 2:
                raise PayloadError(
                    f"Heart Rate Measurement: RR intervals need a whole number (≥ 1) of 2-byte values at offset "
                    f"{r.offset}, {r.remaining} byte(s) left"
                )
            n = r.remaining // 2
            rr = struct.unpack_from(f"<{n}H", r.take(2 * n, "RR intervals"))
        return cls(flags, hr, energy, rr)

    def to_bytes(self) -> bytes:
        flags = int(self.flags) & ~(HrFlags.ENERGY_EXPENDED | HrFlags.RR_INTERVALS)
        if self.energy_expended_kj is not None:
            flags |= HrFlags.ENERGY_EXPENDED
        if self.rr_intervals:
            flags |= HrFlags.RR_INTERVALS
        out = bytearray((flags,))
        out += struct.pack("<H" if flags & HrFlags.HR_UINT16 else "<B", self.heart_rate)
        if self.energy_expended_kj is not None:
            out += struct.pack("<H", self.energy_expended_kj)
        out += struct.pack(f"<{len(self.rr_intervals)}H", *self.rr_intervals)
        return bytes(out)


class SensorLocation(enum.IntEnum):
    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


@dataclass(frozen=True, slots=True)
class BodySensorLocation:
    """Body Sensor Location 0x2A38: one uint8; 7–255 reserved (kept as the raw number)."""

    location: int

    @property
    def name(self) -> str:
        try:
            return SensorLocation(self.location).name.lower()
        except ValueError:
            return f"reserved({self.location})"

    @classmethod
    def from_bytes(cls, data: bytes) -> BodySensorLocation:
        return cls(ByteReader(data, "Body Sensor Location").u8("location"))

    def to_bytes(self) -> bytes:
        return bytes((self.location,))
