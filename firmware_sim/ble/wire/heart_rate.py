"""Heart Rate Measurement 0x2A37 and Body Sensor Location 0x2A38 (protocols.md §2)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass


class SensorContact(enum.IntEnum):
    """Flag bits 2..1."""

    NOT_SUPPORTED = 0
    NO_CONTACT = 2
    CONTACT = 3


class BodySensorLocation(enum.IntEnum):
    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    bpm: int
    contact: SensorContact = SensorContact.NOT_SUPPORTED
    energy_kj: int | None = None
    rr_1024: tuple[int, ...] = ()
    """RR intervals in 1/1024 s, oldest first."""
    uint16: bool = False
    """Send the heart rate as uint16 even when it fits in a byte."""

    def to_bytes(self) -> bytes:
        wide = self.uint16 or self.bpm > 0xFF
        flags = (0x01 if wide else 0) | (int(self.contact) << 1)
        out = bytearray()
        out += struct.pack("<H", self.bpm) if wide else bytes([self.bpm])
        if self.energy_kj is not None:
            flags |= 0x08
            out += struct.pack("<H", min(self.energy_kj, 0xFFFF))
        if self.rr_1024:
            flags |= 0x10
            out += struct.pack(f"<{len(self.rr_1024)}H", *self.rr_1024)
        return bytes([flags]) + bytes(out)


def rr_ms_to_1024(rr_ms: float) -> int:
    """An RR interval in ms as the 1/1024 s units of the wire."""
    return round(rr_ms * 1024 / 1000)


def body_sensor_location(location: BodySensorLocation) -> bytes:
    return bytes([int(location)])
