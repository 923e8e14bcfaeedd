"""Polar PMD control point and ECG data frames (protocols.md §8). Pure; samples decoded with numpy."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from drivers.sdk.gatt import ByteReader
from gateway.errors import PayloadError

ECG_SAMPLE_RATE_HZ: Final = 130
ECG_RESOLUTION_BITS: Final = 14
HEADER_SIZE: Final = 10
RESPONSE_PREFIX: Final = 0xF0
FEATURES_PREFIX: Final = 0x0F
MAX_TIMESTAMP_NS: Final = 2**63 - 1


class PmdOp(enum.IntEnum):
    GET_SETTINGS = 0x01
    START = 0x02
    STOP = 0x03


class MeasurementType(enum.IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAGNETOMETER = 6
    SKIN_TEMPERATURE = 7
    SDK_MODE = 9
    LOCATION = 10
    PRESSURE = 11
    TEMPERATURE = 12
    OFFLINE_RECORDING = 13
    OFFLINE_HR = 14


class SettingType(enum.IntEnum):
    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    CHANNELS = 4
    CONVERSION_FACTOR = 5


class PmdStatus(enum.IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13
    DISK_FULL = 14


@dataclass(frozen=True, slots=True)
class PmdRequest:
    """A control-point write: op code, measurement type, then settings ``type count value…``."""

    op: int
    measurement_type: int
    settings: tuple[tuple[int, int], ...] = ()
    """(setting type, u16 value) pairs, each sent with count 1."""

    def to_bytes(self) -> bytes:
        out = bytes((self.op, self.measurement_type))
        for setting, value in self.settings:
            out += struct.pack("<BBH", setting, 1, value)
        return out

    @classmethod
    def start_ecg(
        cls, sample_rate_hz: int = ECG_SAMPLE_RATE_HZ, resolution_bits: int = ECG_RESOLUTION_BITS
    ) -> PmdRequest:
        """Start online ECG: ``02 00 00 01 82 00 01 01 0E 00`` for 130 Hz / 14 bit."""
        return cls(
            PmdOp.START,
            MeasurementType.ECG,
            ((SettingType.SAMPLE_RATE, sample_rate_hz), (SettingType.RESOLUTION, resolution_bits)),
        )

    @classmethod
    def stop(cls, measurement_type: int = MeasurementType.ECG) -> PmdRequest:
        return cls(PmdOp.STOP, measurement_type)

    @classmethod
    def get_settings(cls, measurement_type: int = MeasurementType.ECG) -> PmdRequest:
        return cls(PmdOp.GET_SETTINGS, measurement_type)


@dataclass(frozen=True, slots=True)
class PmdControlPointResponse:
    """Indication ``F0 <op> <type> <status> [more] [params]``; settings parsed when present."""

    op: int
    measurement_type: int
    status: int
    more: bool
    params: bytes

    @property
    def ok(self) -> bool:
        return self.status == PmdStatus.SUCCESS

    @property
    def status_name(self) -> str:
        try:
            return PmdStatus(self.status).name.lower()
        except ValueError:
            return f"unknown({self.status})"

    @classmethod
    def from_bytes(cls, data: bytes) -> PmdControlPointResponse:
        r = ByteReader(data, "PMD control point response")
        prefix = r.u8("response prefix")
        if prefix != RESPONSE_PREFIX:
            raise PayloadError(f"PMD control point response: prefix {prefix:#04x} is not 0xf0")
        op, mtype, status = r.u8("op code"), r.u8("measurement type"), r.u8("status")
        more = bool(r.u8("more")) if r.remaining else False
        return cls(op, mtype, status, more, r.rest())

    def settings(self) -> dict[int, tuple[float, ...]]:
        """The settings of a get-settings response: setting type → values."""
        return parse_settings(self.params)


def parse_settings(params: bytes) -> dict[int, tuple[float, ...]]:
    """``{type, count, values…}`` blocks; values are u16 except channels (u8) and conversion factor (f32)."""
    r = ByteReader(params, "PMD settings")
    out: dict[int, tuple[float, ...]] = {}
    while r.remaining:
        setting, count = r.u8("setting type"), r.u8("setting count")
        values: list[float] = []
        for _ in range(count):
            if setting == SettingType.CHANNELS:
                values.append(r.u8("channels"))
            elif setting == SettingType.CONVERSION_FACTOR:
                values.append(r.f32("conversion factor"))
            else:
                values.append(r.u16(f"setting {setting} value"))
        out[setting] = tuple(values)
    return out


@dataclass(frozen=True, slots=True)
class PmdFeatures:
    """The control point read: ``0F <bitmask…>``, bit n = measurement type n supported."""

    mask: int

    def supports(self, measurement_type: int) -> bool:
        return bool(self.mask >> measurement_type & 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> PmdFeatures:
        r = ByteReader(data, "PMD features")
        if r.u8("features prefix") != FEATURES_PREFIX:
            raise PayloadError("PMD features: prefix is not 0x0f")
        return cls(int.from_bytes(r.rest(), "little"))


def int24_samples(raw: bytes) -> npt.NDArray[np.int32]:
    """Little-endian signed int24 samples → int32 array (vectorised: pad to 4 bytes and view)."""
    n = len(raw) // 3
    triples = np.frombuffer(raw, dtype=np.uint8, count=3 * n).reshape(n, 3)
    padded = np.empty((n, 4), dtype=np.uint8)
    padded[:, :3] = triples
    padded[:, 3] = np.where(triples[:, 2] & 0x80, 0xFF, 0x00)
    return padded.view("<i4").reshape(n).astype(np.int32)


@dataclass(frozen=True, slots=True, eq=False)
class EcgFrame:
    """One PMD data notification of measurement type 0 (ECG), frame type 0: int24 µV samples.

    ``timestamp_ns``: Polar time (ns since 2000-01-01T00:00 on the device's clock) of the LAST sample.
    """

    timestamp_ns: int
    samples: npt.NDArray[np.int32] = field(repr=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> EcgFrame:
        r = ByteReader(data, "PMD ECG frame")
        mtype = r.u8("measurement type") & 0x3F
        if mtype != MeasurementType.ECG:
            raise PayloadError(f"PMD data frame: measurement type {mtype} is not ECG (0)", reason="unsupported")
        ts = r.u64("timestamp")
        if ts > MAX_TIMESTAMP_NS:
            raise PayloadError(f"PMD ECG frame: timestamp {ts} at offset 1 is beyond int64 ns (year 2292)")
        frame_type = r.u8("frame type")
        if frame_type != 0:
            raise PayloadError(
                f"PMD ECG frame: frame type {frame_type:#04x} is not 0 (uncompressed int24)", reason="unsupported"
            )
        raw = r.rest()
        if not raw or len(raw) % 3:
            raise PayloadError(
                f"PMD ECG frame: samples at offset {HEADER_SIZE} need a whole number (≥ 1) of 3-byte values, "
                f"{len(raw)} byte(s) left"
            )
        return cls(ts, int24_samples(raw))

    def to_bytes(self) -> bytes:
        v = self.samples.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return struct.pack("<BQB", MeasurementType.ECG, self.timestamp_ns, 0) + v.tobytes()

    @classmethod
    def of(cls, timestamp_ns: int, samples: list[int]) -> EcgFrame:
        return cls(timestamp_ns, np.asarray(samples, dtype=np.int32))

    def sample_times_ns(self, period_ns: float = 1e9 / ECG_SAMPLE_RATE_HZ) -> npt.NDArray[np.int64]:
        """Per-sample Polar times: the last sample at the frame time stamp, earlier ones ``period_ns`` apart."""
        back = np.arange(self.samples.size - 1, -1, -1, dtype=np.float64) * period_ns
        return self.timestamp_ns - np.rint(back).astype(np.int64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EcgFrame):
            return NotImplemented
        return self.timestamp_ns == other.timestamp_ns and np.array_equal(self.samples, other.samples)

    __hash__ = None  # type: ignore[assignment]
