"""PLX Spot-check 0x2A5E, PLX Continuous 0x2A5F and PLX Features 0x2A60 (protocols.md §4). Pure."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.sdk.gatt import ByteReader, DateTime
from drivers.sdk.ieee11073 import Number11073, encode_number_sfloat


class SpotCheckFlags(enum.IntFlag):
    TIME_STAMP = 0x01
    MEASUREMENT_STATUS = 0x02
    DEVICE_SENSOR_STATUS = 0x04
    PULSE_AMPLITUDE_INDEX = 0x08
    CLOCK_NOT_SET = 0x10


class ContinuousFlags(enum.IntFlag):
    FAST = 0x01
    SLOW = 0x02
    MEASUREMENT_STATUS = 0x04
    DEVICE_SENSOR_STATUS = 0x08
    PULSE_AMPLITUDE_INDEX = 0x10


class PlxMeasurementStatus(enum.IntFlag):
    """Measurement status (16-bit); bits 0–4 are reserved."""

    MEASUREMENT_ONGOING = 1 << 5
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


class PlxDeviceSensorStatus(enum.IntFlag):
    """Device and sensor status (24-bit); bits 16–23 are reserved."""

    EXTENDED_DISPLAY_UPDATE = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NON_PULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED = 1 << 11
    UNKNOWN_SENSOR = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


MEASUREMENT_STATUS_BITS: Final = 0xFFE0
DEVICE_SENSOR_STATUS_BITS: Final = 0x00FFFF
DEMO_OR_TEST: Final = PlxMeasurementStatus.DEMONSTRATION | PlxMeasurementStatus.TESTING


def _statuses(
    r: ByteReader, has_meas: bool, has_dev: bool
) -> tuple[PlxMeasurementStatus | None, PlxDeviceSensorStatus | None]:
    meas = PlxMeasurementStatus(r.u16("measurement status") & MEASUREMENT_STATUS_BITS) if has_meas else None
    dev = PlxDeviceSensorStatus(r.u24("device and sensor status") & DEVICE_SENSOR_STATUS_BITS) if has_dev else None
    return meas, dev


def _sf(n: Number11073) -> bytes:
    return struct.pack("<H", encode_number_sfloat(n))


def _status_bytes(meas: PlxMeasurementStatus | None, dev: PlxDeviceSensorStatus | None) -> bytes:
    out = b"" if meas is None else struct.pack("<H", int(meas))
    return out + (b"" if dev is None else int(dev).to_bytes(3, "little"))


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    """One 0x2A5E indication (or a stored record fetched through RACP)."""

    flags: SpotCheckFlags
    spo2: Number11073
    pulse_rate: Number11073
    time_stamp: DateTime | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_sensor_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: Number11073 | None = None

    @property
    def clock_not_set(self) -> bool:
        return bool(self.flags & SpotCheckFlags.CLOCK_NOT_SET)

    @classmethod
    def from_bytes(cls, data: bytes) -> PlxSpotCheck:
        r = ByteReader(data, "PLX Spot-check Measurement")
        flags = SpotCheckFlags(r.u8("flags") & 0x1F)
        spo2, pr = r.sfloat("SpO2"), r.sfloat("pulse rate")
        ts = r.date_time("time stamp") if flags & SpotCheckFlags.TIME_STAMP else None
        meas, dev = _statuses(
            r, bool(flags & SpotCheckFlags.MEASUREMENT_STATUS), bool(flags & SpotCheckFlags.DEVICE_SENSOR_STATUS)
        )
        pai = r.sfloat("pulse amplitude index") if flags & SpotCheckFlags.PULSE_AMPLITUDE_INDEX else None
        return cls(flags, spo2, pr, ts, meas, dev, pai)

    def to_bytes(self) -> bytes:
        flags = int(self.flags & SpotCheckFlags.CLOCK_NOT_SET)
        flags |= SpotCheckFlags.TIME_STAMP if self.time_stamp is not None else 0
        flags |= SpotCheckFlags.MEASUREMENT_STATUS if self.measurement_status is not None else 0
        flags |= SpotCheckFlags.DEVICE_SENSOR_STATUS if self.device_sensor_status is not None else 0
        flags |= SpotCheckFlags.PULSE_AMPLITUDE_INDEX if self.pulse_amplitude_index is not None else 0
        out = bytes((flags,)) + _sf(self.spo2) + _sf(self.pulse_rate)
        out += b"" if self.time_stamp is None else self.time_stamp.to_bytes()
        out += _status_bytes(self.measurement_status, self.device_sensor_status)
        return out + (b"" if self.pulse_amplitude_index is None else _sf(self.pulse_amplitude_index))


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    """One 0x2A5F notification: SpO2/PR normal, optionally fast and slow, statuses and PAI."""

    flags: ContinuousFlags
    spo2: Number11073
    pulse_rate: Number11073
    spo2_fast: Number11073 | None = None
    pulse_rate_fast: Number11073 | None = None
    spo2_slow: Number11073 | None = None
    pulse_rate_slow: Number11073 | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_sensor_status: PlxDeviceSensorStatus | None = None
    pulse_amplitude_index: Number11073 | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> PlxContinuous:
        r = ByteReader(data, "PLX Continuous Measurement")
        flags = ContinuousFlags(r.u8("flags") & 0x1F)
        spo2, pr = r.sfloat("SpO2 (normal)"), r.sfloat("pulse rate (normal)")
        spo2_fast = pr_fast = spo2_slow = pr_slow = None
        if flags & ContinuousFlags.FAST:
            spo2_fast, pr_fast = r.sfloat("SpO2 (fast)"), r.sfloat("pulse rate (fast)")
        if flags & ContinuousFlags.SLOW:
            spo2_slow, pr_slow = r.sfloat("SpO2 (slow)"), r.sfloat("pulse rate (slow)")
        meas, dev = _statuses(
            r, bool(flags & ContinuousFlags.MEASUREMENT_STATUS), bool(flags & ContinuousFlags.DEVICE_SENSOR_STATUS)
        )
        pai = r.sfloat("pulse amplitude index") if flags & ContinuousFlags.PULSE_AMPLITUDE_INDEX else None
        return cls(flags, spo2, pr, spo2_fast, pr_fast, spo2_slow, pr_slow, meas, dev, pai)

    def to_bytes(self) -> bytes:
        flags = 0
        out = _sf(self.spo2) + _sf(self.pulse_rate)
        if self.spo2_fast is not None and self.pulse_rate_fast is not None:
            flags |= ContinuousFlags.FAST
            out += _sf(self.spo2_fast) + _sf(self.pulse_rate_fast)
        if self.spo2_slow is not None and self.pulse_rate_slow is not None:
            flags |= ContinuousFlags.SLOW
            out += _sf(self.spo2_slow) + _sf(self.pulse_rate_slow)
        flags |= ContinuousFlags.MEASUREMENT_STATUS if self.measurement_status is not None else 0
        flags |= ContinuousFlags.DEVICE_SENSOR_STATUS if self.device_sensor_status is not None else 0
        out += _status_bytes(self.measurement_status, self.device_sensor_status)
        if self.pulse_amplitude_index is not None:
            flags |= ContinuousFlags.PULSE_AMPLITUDE_INDEX
            out += _sf(self.pulse_amplitude_index)
        return bytes((flags,)) + out


class PlxFeature(enum.IntFlag):
    MEASUREMENT_STATUS = 0x01
    DEVICE_SENSOR_STATUS = 0x02
    SPOT_CHECK_STORAGE = 0x04
    SPOT_CHECK_TIME_STAMP = 0x08
    SPO2PR_FAST = 0x10
    SPO2PR_SLOW = 0x20
    PULSE_AMPLITUDE_INDEX = 0x40
    MULTIPLE_BONDS = 0x80


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """PLX Features 0x2A60: supported features, then the supported status masks when flagged."""

    features: PlxFeature
    measurement_status_support: int | None = None
    device_sensor_status_support: int | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> PlxFeatures:
        r = ByteReader(data, "PLX Features")
        features = PlxFeature(r.u16("supported features") & 0xFF)
        meas = r.u16("measurement status support") if features & PlxFeature.MEASUREMENT_STATUS else None
        dev = r.u24("device and sensor status support") if features & PlxFeature.DEVICE_SENSOR_STATUS else None
        return cls(features, meas, dev)
