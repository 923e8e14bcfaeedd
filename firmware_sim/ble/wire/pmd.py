"""Polar Measurement Data (PMD) control point and ECG data frames (protocols.md §8)."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

POLAR_EPOCH = datetime(2000, 1, 1)
PMD_RESPONSE = 0xF0
PMD_FEATURES = 0x0F


class PmdOp(enum.IntEnum):
    GET_SETTINGS = 0x01
    START = 0x02
    STOP = 0x03


class PmdType(enum.IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3


class PmdSetting(enum.IntEnum):
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


_SETTING_FORMAT: dict[int, str] = {PmdSetting.CHANNELS: "B", PmdSetting.CONVERSION_FACTOR: "f"}
"""Value format per setting type (§8): channels u8, conversion factor IEEE-754 float32, others u16."""


def pmd_settings(settings: Iterable[tuple[int, Sequence[float]]]) -> bytes:
    """``{setting_type, count, values…}`` as in a start request or a settings response."""
    out = bytearray()
    for setting, values in settings:
        fmt = _SETTING_FORMAT.get(setting, "H")
        packed = [v if fmt == "f" else int(v) for v in values]
        out += bytes([setting, len(values)]) + struct.pack(f"<{len(values)}{fmt}", *packed)
    return bytes(out)


def pmd_start_request(measurement: int, settings: Iterable[tuple[int, Sequence[float]]]) -> bytes:
    return bytes([PmdOp.START, measurement]) + pmd_settings(settings)


def pmd_stop_request(measurement: int) -> bytes:
    return bytes([PmdOp.STOP, measurement])


def pmd_response(op: int, measurement: int, status: int, more: bool = False, params: bytes = b"") -> bytes:
    """``F0 <op> <type> <status> <more> [params]``."""
    return bytes([PMD_RESPONSE, op, measurement, status, 1 if more else 0]) + params


def pmd_features(types: Iterable[PmdType]) -> bytes:
    """Control point read value: ``0F`` then a bitmask of the supported measurement types."""
    mask = 0
    for t in types:
        mask |= 1 << t
    return bytes([PMD_FEATURES]) + struct.pack("<H", mask)


def polar_ns(dt: datetime) -> int:
    """Nanoseconds since 2000-01-01T00:00:00 (device local time)."""
    delta = dt - POLAR_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


@dataclass(frozen=True, slots=True)
class EcgFrame:
    """Uncompressed ECG frame (type 0): int24 µV samples; ``timestamp_ns`` of the **last** sample."""

    timestamp_ns: int
    samples_uv: Sequence[int]

    def to_bytes(self) -> bytes:
        out = bytearray(bytes([PmdType.ECG]) + struct.pack("<Q", self.timestamp_ns) + b"\x00")
        for s in self.samples_uv:
            if not -(2**23) <= s < 2**23:
                raise ValueError(f"ECG sample out of int24 range: {s}")
            out += (s & 0xFFFFFF).to_bytes(3, "little")
        return bytes(out)
