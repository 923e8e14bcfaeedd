"""PLX Spot-check 0x2A5E, PLX Continuous 0x2A5F and PLX Features 0x2A60 (protocols.md §4)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import datetime

from firmware_sim.ble.wire.ieee11073 import Value, sfloat
from firmware_sim.ble.wire.time_fields import date_time


class PlxMeasurementStatus(enum.IntFlag):
    ONGOING = 1 << 5
    EARLY_ESTIMATE = 1 << 6
    VALIDATED = 1 << 7
    FULLY_QUALIFIED = 1 << 8
    FROM_STORAGE = 1 << 9
    DEMONSTRATION = 1 << 10
    TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    UNAVAILABLE = 1 << 13
    QUESTIONABLE = 1 << 14
    INVALID = 1 << 15


class PlxFeature(enum.IntFlag):
    MEASUREMENT_STATUS = 1 << 0
    DEVICE_SENSOR_STATUS = 1 << 1
    SPOT_CHECK_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    FAST = 1 << 4
    SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


def _u24(v: int) -> bytes:
    return struct.pack("<I", v)[:3]


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    spo2: Value
    pulse_bpm: Value
    time_stamp: datetime | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pai: Value | None = None
    clock_not_set: bool = False

    def to_bytes(self) -> bytes:
        flags = 0x10 if self.clock_not_set else 0
        out = bytearray(sfloat(self.spo2) + sfloat(self.pulse_bpm))
        if self.time_stamp is not None:
            flags |= 0x01
            out += date_time(self.time_stamp)
        if self.measurement_status is not None:
            flags |= 0x02
            out += struct.pack("<H", self.measurement_status)
        if self.device_sensor_status is not None:
            flags |= 0x04
            out += _u24(self.device_sensor_status)
        if self.pai is not None:
            flags |= 0x08
            out += sfloat(self.pai)
        return bytes([flags]) + bytes(out)


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    spo2: Value
    pulse_bpm: Value
    fast: tuple[Value, Value] | None = None
    slow: tuple[Value, Value] | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pai: Value | None = None

    def to_bytes(self) -> bytes:
        flags = 0
        out = bytearray(sfloat(self.spo2) + sfloat(self.pulse_bpm))
        if self.fast is not None:
            flags |= 0x01
            out += sfloat(self.fast[0]) + sfloat(self.fast[1])
        if self.slow is not None:
            flags |= 0x02
            out += sfloat(self.slow[0]) + sfloat(self.slow[1])
        if self.measurement_status is not None:
            flags |= 0x04
            out += struct.pack("<H", self.measurement_status)
        if self.device_sensor_status is not None:
            flags |= 0x08
            out += _u24(self.device_sensor_status)
        if self.pai is not None:
            flags |= 0x10
            out += sfloat(self.pai)
        return bytes([flags]) + bytes(out)


def plx_features(features: PlxFeature, measurement_status_mask: int = 0, device_sensor_status_mask: int = 0) -> bytes:
    out = bytearray(struct.pack("<H", int(features)))
    if features & PlxFeature.MEASUREMENT_STATUS:
        out += struct.pack("<H", measurement_status_mask)
    if features & PlxFeature.DEVICE_SENSOR_STATUS:
        out += _u24(device_sensor_status_mask)
    return bytes(out)
