"""Blood Pressure Measurement 0x2A35, Intermediate Cuff Pressure 0x2A36, Feature 0x2A49 (§3)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import datetime

from firmware_sim.ble.wire.ieee11073 import Special, Value, sfloat
from firmware_sim.ble.wire.time_fields import date_time

USER_UNKNOWN = 0xFF


class BpStatus(enum.IntFlag):
    """Measurement status bits (pulse-rate range occupies bits 4..3)."""

    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_ABOVE_RANGE = 0x0008
    PULSE_BELOW_RANGE = 0x0010
    IMPROPER_POSITION = 0x0020


class BpFeature(enum.IntFlag):
    BODY_MOVEMENT = 0x0001
    CUFF_FIT = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_RATE_RANGE = 0x0008
    MEASUREMENT_POSITION = 0x0010
    MULTIPLE_BONDS = 0x0020


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """Also the layout of Intermediate Cuff Pressure (cuff pressure in ``systolic``)."""

    systolic: Value
    diastolic: Value
    mean_arterial: Value
    kpa: bool = False
    time_stamp: datetime | None = None
    pulse_bpm: Value | None = None
    user_id: int | None = None
    status: BpStatus | None = None

    def to_bytes(self) -> bytes:
        flags = 0x01 if self.kpa else 0
        out = bytearray(sfloat(self.systolic) + sfloat(self.diastolic) + sfloat(self.mean_arterial))
        if self.time_stamp is not None:
            flags |= 0x02
            out += date_time(self.time_stamp)
        if self.pulse_bpm is not None:
            flags |= 0x04
            out += sfloat(self.pulse_bpm)
        if self.user_id is not None:
            flags |= 0x08
            out.append(self.user_id)
        if self.status is not None:
            flags |= 0x10
            out += struct.pack("<H", int(self.status))
        return bytes([flags]) + bytes(out)


def intermediate_cuff_pressure(cuff: Value, *, kpa: bool = False, time_stamp: datetime | None = None) -> bytes:
    """0x2A36: current cuff pressure in the systolic slot, the other two NaN."""
    return BloodPressureMeasurement(cuff, Special.NAN, Special.NAN, kpa=kpa, time_stamp=time_stamp).to_bytes()


def blood_pressure_feature(features: BpFeature) -> bytes:
    return struct.pack("<H", int(features))
