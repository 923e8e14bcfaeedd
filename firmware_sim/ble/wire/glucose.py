"""Glucose Measurement 0x2A18, Measurement Context 0x2A34 and Glucose Feature 0x2A51 (§5.1–§5.3)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import datetime

from firmware_sim.ble.wire.ieee11073 import Value, sfloat
from firmware_sim.ble.wire.time_fields import date_time


class GlucoseType(enum.IntEnum):
    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(enum.IntEnum):
    FINGER = 1
    ALTERNATE_SITE = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    SUBCUTANEOUS = 5
    NOT_AVAILABLE = 15


class GlucoseFeature(enum.IntFlag):
    LOW_BATTERY = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_ERROR = 1 << 4
    RESULT_HIGH_LOW = 1 << 5
    TEMPERATURE_HIGH_LOW = 1 << 6
    READ_INTERRUPT = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BONDS = 1 << 10


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    sequence: int
    base_time: datetime
    time_offset_min: int | None = None
    concentration: Value | None = None
    """kg/L (``mol_per_l`` False) or mol/L; present together with type and location."""
    mol_per_l: bool = False
    type: int = GlucoseType.CAPILLARY_WHOLE_BLOOD
    location: int = SampleLocation.FINGER
    status: int | None = None
    context_follows: bool = False

    def to_bytes(self) -> bytes:
        flags = 0x10 if self.context_follows else 0
        out = bytearray(struct.pack("<H", self.sequence) + date_time(self.base_time))
        if self.time_offset_min is not None:
            flags |= 0x01
            out += struct.pack("<h", self.time_offset_min)
        if self.concentration is not None:
            flags |= 0x02 | (0x04 if self.mol_per_l else 0)
            out += sfloat(self.concentration) + bytes([(self.type & 0x0F) | ((self.location & 0x0F) << 4)])
        if self.status is not None:
            flags |= 0x08
            out += struct.pack("<H", self.status)
        return bytes([flags]) + bytes(out)


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    sequence: int
    carbohydrate: tuple[int, Value] | None = None
    """(carbohydrate id, kg)."""
    meal: int | None = None
    tester_health: tuple[int, int] | None = None
    exercise: tuple[int, int] | None = None
    """(duration s, intensity %)."""
    medication: tuple[int, Value, bool] | None = None
    """(medication id, amount, amount in litres rather than kg)."""
    hba1c: Value | None = None

    def to_bytes(self) -> bytes:
        flags = 0
        out = bytearray()
        if self.carbohydrate is not None:
            flags |= 0x01
            out += bytes([self.carbohydrate[0]]) + sfloat(self.carbohydrate[1])
        if self.meal is not None:
            flags |= 0x02
            out.append(self.meal)
        if self.tester_health is not None:
            flags |= 0x04
            out.append((self.tester_health[0] & 0x0F) | ((self.tester_health[1] & 0x0F) << 4))
        if self.exercise is not None:
            flags |= 0x08
            out += struct.pack("<HB", *self.exercise)
        if self.medication is not None:
            flags |= 0x10 | (0x20 if self.medication[2] else 0)
            out += bytes([self.medication[0]]) + sfloat(self.medication[1])
        if self.hba1c is not None:
            flags |= 0x40
            out += sfloat(self.hba1c)
        return bytes([flags]) + struct.pack("<H", self.sequence) + bytes(out)


def glucose_feature(features: GlucoseFeature) -> bytes:
    return struct.pack("<H", int(features))
