"""Blood Pressure Measurement 0x2A35, Intermediate Cuff Pressure 0x2A36, Feature 0x2A49 (§3). Pure."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.sdk.gatt import ByteReader, DateTime
from drivers.sdk.ieee11073 import Number11073, encode_number_sfloat

MMHG_PER_KPA: Final = 1 / 0.133322387415


class BpFlags(enum.IntFlag):
    UNITS_KPA = 0x01
    TIME_STAMP = 0x02
    PULSE_RATE = 0x04
    USER_ID = 0x08
    MEASUREMENT_STATUS = 0x10


KNOWN_FLAGS: Final = BpFlags(0x1F)


class BpStatus(enum.IntFlag):
    """Measurement status (16-bit). Bits 4..3 are the pulse-rate range (see :attr:`PULSE_RANGE_MASK`)."""

    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_ABOVE_UPPER_LIMIT = 0x0008
    PULSE_BELOW_LOWER_LIMIT = 0x0010
    IMPROPER_POSITION = 0x0020


PULSE_RANGE_MASK: Final = 0x0018
STATUS_BITS: Final = 0x003F
"""Defined measurement-status bits; reserved bits 6–15 are dropped."""
UNKNOWN_USER: Final = 0xFF


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """One 0x2A35 indication (the same layout carries 0x2A36, see :class:`IntermediateCuffPressure`)."""

    flags: BpFlags
    systolic: Number11073
    diastolic: Number11073
    mean_arterial: Number11073
    time_stamp: DateTime | None = None
    pulse_rate: Number11073 | None = None
    user_id: int | None = None
    status: BpStatus | None = None

    WHAT = "Blood Pressure Measurement"

    @property
    def unit(self) -> str:
        """UCUM unit of the three pressures (the pulse rate is always /min)."""
        return "kPa" if self.flags & BpFlags.UNITS_KPA else "mm[Hg]"

    @classmethod
    def from_bytes(cls, data: bytes) -> BloodPressureMeasurement:
        r = ByteReader(data, cls.WHAT)
        flags = BpFlags(r.u8("flags") & KNOWN_FLAGS)
        sys_, dia, mean = r.sfloat("systolic"), r.sfloat("diastolic"), r.sfloat("mean arterial pressure")
        ts = r.date_time("time stamp") if flags & BpFlags.TIME_STAMP else None
        pulse = r.sfloat("pulse rate") if flags & BpFlags.PULSE_RATE else None
        user = r.u8("user id") if flags & BpFlags.USER_ID else None
        status = BpStatus(r.u16("measurement status") & STATUS_BITS) if flags & BpFlags.MEASUREMENT_STATUS else None
        return cls(flags, sys_, dia, mean, ts, pulse, user, status)

    def to_bytes(self) -> bytes:
        flags = int(self.flags) & int(BpFlags.UNITS_KPA)
        tail = bytearray()
        if self.time_stamp is not None:
            flags |= BpFlags.TIME_STAMP
            tail += self.time_stamp.to_bytes()
        if self.pulse_rate is not None:
            flags |= BpFlags.PULSE_RATE
            tail += struct.pack("<H", encode_number_sfloat(self.pulse_rate))
        if self.user_id is not None:
            flags |= BpFlags.USER_ID
            tail.append(self.user_id)
        if self.status is not None:
            flags |= BpFlags.MEASUREMENT_STATUS
            tail += struct.pack("<H", int(self.status))
        words = (encode_number_sfloat(n) for n in (self.systolic, self.diastolic, self.mean_arterial))
        return bytes((flags,)) + struct.pack("<3H", *words) + bytes(tail)


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    """One 0x2A36 notification: the current cuff pressure while inflating/deflating (live UI only).

    Same layout as 0x2A35; the systolic slot carries the cuff pressure, diastolic and MAP are unused.
    """

    measurement: BloodPressureMeasurement

    @property
    def cuff_pressure(self) -> Number11073:
        return self.measurement.systolic

    @property
    def unit(self) -> str:
        return self.measurement.unit

    @classmethod
    def from_bytes(cls, data: bytes) -> IntermediateCuffPressure:
        r = ByteReader(data, "Intermediate Cuff Pressure")
        flags = BpFlags(r.u8("flags") & KNOWN_FLAGS)
        cuff = r.sfloat("current cuff pressure")
        unused1, unused2 = r.sfloat("diastolic (unused)"), r.sfloat("mean arterial pressure (unused)")
        ts = r.date_time("time stamp") if flags & BpFlags.TIME_STAMP else None
        pulse = r.sfloat("pulse rate") if flags & BpFlags.PULSE_RATE else None
        user = r.u8("user id") if flags & BpFlags.USER_ID else None
        status = BpStatus(r.u16("measurement status") & STATUS_BITS) if flags & BpFlags.MEASUREMENT_STATUS else None
        return cls(BloodPressureMeasurement(flags, cuff, unused1, unused2, ts, pulse, user, status))

    def to_bytes(self) -> bytes:
        return self.measurement.to_bytes()


class BpFeature(enum.IntFlag):
    BODY_MOVEMENT_DETECTION = 0x01
    CUFF_FIT_DETECTION = 0x02
    IRREGULAR_PULSE_DETECTION = 0x04
    PULSE_RATE_RANGE_DETECTION = 0x08
    MEASUREMENT_POSITION_DETECTION = 0x10
    MULTIPLE_BONDS = 0x20


@dataclass(frozen=True, slots=True)
class BloodPressureFeature:
    """Blood Pressure Feature 0x2A49 (16-bit); reserved bits are dropped."""

    features: BpFeature

    @classmethod
    def from_bytes(cls, data: bytes) -> BloodPressureFeature:
        return cls(BpFeature(ByteReader(data, "Blood Pressure Feature").u16("features") & 0x3F))

    def to_bytes(self) -> bytes:
        return struct.pack("<H", int(self.features))
