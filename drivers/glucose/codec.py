"""Glucose Measurement 0x2A18, Measurement Context 0x2A34, Feature 0x2A51 (protocols.md §5). Pure."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.sdk.gatt import ByteReader, DateTime
from drivers.sdk.ieee11073 import Number11073, encode_number_sfloat


class GlucoseFlags(enum.IntFlag):
    TIME_OFFSET = 0x01
    CONCENTRATION = 0x02
    UNIT_MOL_PER_L = 0x04
    SENSOR_STATUS = 0x08
    CONTEXT_FOLLOWS = 0x10


class SampleType(enum.IntEnum):
    """Type nibble; 0 and 11–15 are reserved (kept as raw numbers)."""

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
    SUBCUTANEOUS_TISSUE = 5
    NOT_AVAILABLE = 15


class SensorStatus(enum.IntFlag):
    """Sensor status annunciation (16-bit); bits 12–15 reserved.

    [conflict] bits 5/6: the SIG GATT XML (used here) says 5 = higher, 6 = lower than the device
    can process; one vendor library names them the other way round.
    """

    BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_TOO_HIGH = 1 << 5
    RESULT_TOO_LOW = 1 << 6
    TEMPERATURE_TOO_HIGH = 1 << 7
    TEMPERATURE_TOO_LOW = 1 << 8
    READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


SENSOR_STATUS_BITS: Final = 0x0FFF


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """One 0x2A18 notification (live or a stored record sent during an RACP transfer)."""

    flags: GlucoseFlags
    sequence: int
    base_time: DateTime
    time_offset_min: int | None = None
    concentration: Number11073 | None = None
    sample_type: int | None = None
    sample_location: int | None = None
    sensor_status: SensorStatus | None = None

    @property
    def unit(self) -> str:
        """UCUM unit after conversion: kg/L → ``mg/dL``, mol/L → ``mmol/L``."""
        return "mmol/L" if self.flags & GlucoseFlags.UNIT_MOL_PER_L else "mg/dL"

    @property
    def converted(self) -> Number11073 | None:
        """The concentration in :attr:`unit`: kg/L × 10**5 = mg/dL; mol/L × 10**3 = mmol/L (exact, precision kept)."""
        if self.concentration is None:
            return None
        return self.concentration.shifted(3 if self.flags & GlucoseFlags.UNIT_MOL_PER_L else 5)

    @property
    def is_control_solution(self) -> bool:
        """A control-solution test (type 10 or location 4): never patient data."""
        return (
            self.sample_type == SampleType.CONTROL_SOLUTION or self.sample_location == SampleLocation.CONTROL_SOLUTION
        )

    @property
    def context_follows(self) -> bool:
        return bool(self.flags & GlucoseFlags.CONTEXT_FOLLOWS)

    @classmethod
    def from_bytes(cls, data: bytes) -> GlucoseMeasurement:
        r = ByteReader(data, "Glucose Measurement")
        flags = GlucoseFlags(r.u8("flags") & 0x1F)
        seq = r.u16("sequence number")
        base = r.date_time("base time")
        offset = r.s16("time offset") if flags & GlucoseFlags.TIME_OFFSET else None
        conc = kind = loc = None
        if flags & GlucoseFlags.CONCENTRATION:
            conc = r.sfloat("glucose concentration")
            type_loc = r.u8("type and sample location")
            kind, loc = type_loc & 0x0F, type_loc >> 4
        status = (
            SensorStatus(r.u16("sensor status annunciation") & SENSOR_STATUS_BITS)
            if (flags & GlucoseFlags.SENSOR_STATUS)
            else None
        )
        return cls(flags, seq, base, offset, conc, kind, loc, status)

    def to_bytes(self) -> bytes:
        flags = int(self.flags & (GlucoseFlags.UNIT_MOL_PER_L | GlucoseFlags.CONTEXT_FOLLOWS))
        out = bytearray()
        if self.time_offset_min is not None:
            flags |= GlucoseFlags.TIME_OFFSET
            out += struct.pack("<h", self.time_offset_min)
        if self.concentration is not None:
            flags |= GlucoseFlags.CONCENTRATION
            out += struct.pack("<H", encode_number_sfloat(self.concentration))
            out.append(((self.sample_location or 0) & 0xF) << 4 | ((self.sample_type or 0) & 0xF))
        if self.sensor_status is not None:
            flags |= GlucoseFlags.SENSOR_STATUS
            out += struct.pack("<H", int(self.sensor_status))
        return struct.pack("<BH", flags, self.sequence) + self.base_time.to_bytes() + bytes(out)


class ContextFlags(enum.IntFlag):
    CARBOHYDRATE = 0x01
    MEAL = 0x02
    TESTER_HEALTH = 0x04
    EXERCISE = 0x08
    MEDICATION = 0x10
    MEDICATION_UNIT_LITRES = 0x20
    HBA1C = 0x40
    EXTENDED_FLAGS = 0x80


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """One 0x2A34 notification, paired with the 0x2A18 of the same sequence number.

    Carbohydrate in kg and medication in kg or L (SI base units; the SFLOAT exponent carries the scale).
    """

    flags: ContextFlags
    sequence: int
    extended_flags: int | None = None
    carbohydrate_id: int | None = None
    carbohydrate_kg: Number11073 | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise_duration_s: int | None = None
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication: Number11073 | None = None
    hba1c_pct: Number11073 | None = None

    @property
    def medication_unit(self) -> str:
        return "L" if self.flags & ContextFlags.MEDICATION_UNIT_LITRES else "kg"

    @classmethod
    def from_bytes(cls, data: bytes) -> GlucoseContext:
        r = ByteReader(data, "Glucose Measurement Context")
        flags = ContextFlags(r.u8("flags"))
        seq = r.u16("sequence number")
        ext = r.u8("extended flags") if flags & ContextFlags.EXTENDED_FLAGS else None
        carb_id = carb = meal = tester = health = ex_dur = ex_int = med_id = med = hba1c = None
        if flags & ContextFlags.CARBOHYDRATE:
            carb_id, carb = r.u8("carbohydrate id"), r.sfloat("carbohydrate")
        if flags & ContextFlags.MEAL:
            meal = r.u8("meal")
        if flags & ContextFlags.TESTER_HEALTH:
            th = r.u8("tester and health")
            tester, health = th & 0x0F, th >> 4
        if flags & ContextFlags.EXERCISE:
            ex_dur, ex_int = r.u16("exercise duration"), r.u8("exercise intensity")
        if flags & ContextFlags.MEDICATION:
            med_id, med = r.u8("medication id"), r.sfloat("medication")
        if flags & ContextFlags.HBA1C:
            hba1c = r.sfloat("HbA1c")
        return cls(flags, seq, ext, carb_id, carb, meal, tester, health, ex_dur, ex_int, med_id, med, hba1c)


class GlucoseFeatureBits(enum.IntFlag):
    LOW_BATTERY_DETECTION = 1 << 0
    SENSOR_MALFUNCTION_DETECTION = 1 << 1
    SAMPLE_SIZE = 1 << 2
    STRIP_INSERTION_ERROR_DETECTION = 1 << 3
    STRIP_TYPE_ERROR_DETECTION = 1 << 4
    RESULT_HIGH_LOW_DETECTION = 1 << 5
    TEMPERATURE_HIGH_LOW_DETECTION = 1 << 6
    READ_INTERRUPT_DETECTION = 1 << 7
    GENERAL_DEVICE_FAULT = 1 << 8
    TIME_FAULT = 1 << 9
    MULTIPLE_BONDS = 1 << 10


@dataclass(frozen=True, slots=True)
class GlucoseFeature:
    """Glucose Feature 0x2A51 (16-bit); reserved bits 11–15 dropped."""

    features: GlucoseFeatureBits

    @classmethod
    def from_bytes(cls, data: bytes) -> GlucoseFeature:
        return cls(GlucoseFeatureBits(ByteReader(data, "Glucose Feature").u16("features") & 0x07FF))
