"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) encoders, protocols.md §1.

A number is ``mantissa × 10^exponent``; the exponent carries the precision, so ``Num(20, -1)``
(2.0) and ``Num(2, 0)`` (2) encode differently. Special values exist only with exponent 0.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from decimal import Decimal

SFLOAT_MANTISSA_MIN, SFLOAT_MANTISSA_MAX = -2045, 2045
"""Mantissas outside this range collide with the special values (0x07FE..0x0802) at exponent 0;
the encoder refuses them at any exponent."""
SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX = -8, 7
FLOAT_MANTISSA_MIN, FLOAT_MANTISSA_MAX = -(2**23) + 3, 2**23 - 3
FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX = -128, 127


class Special(enum.Enum):
    """Special values; ``.value`` is (SFLOAT raw, FLOAT raw)."""

    NAN = (0x07FF, 0x007FFFFF)
    NRES = (0x0800, 0x00800000)
    POSITIVE_INFINITY = (0x07FE, 0x007FFFFE)
    NEGATIVE_INFINITY = (0x0802, 0x00800002)
    RESERVED = (0x0801, 0x00800001)

    @property
    def sfloat_raw(self) -> int:
        return self.value[0]

    @property
    def float_raw(self) -> int:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class Num:
    """A finite 11073 number: ``mantissa × 10^exponent``."""

    mantissa: int
    exponent: int = 0

    @classmethod
    def parse(cls, text: str) -> Num:
        """``Num.parse("93.3") == Num(933, -1)``; the number of decimals sets the exponent."""
        sign, digits, exponent = Decimal(text).as_tuple()
        if not isinstance(exponent, int):
            raise ValueError(f"not a finite number: {text!r}")
        mantissa = int("".join(map(str, digits)) or "0")
        return cls(-mantissa if sign else mantissa, exponent)

    @classmethod
    def of(cls, value: float, exponent: int) -> Num:
        """``value`` rounded to a precision of ``10^exponent``."""
        return cls(round(Decimal(repr(value)).scaleb(-exponent)), exponent)

    def __float__(self) -> float:
        return float(Decimal(self.mantissa).scaleb(self.exponent))


Value = Num | Special
"""What an SFLOAT/FLOAT field holds."""


def sfloat_raw(value: Value) -> int:
    """The 16-bit word of an SFLOAT (before little-endian serialisation)."""
    if isinstance(value, Special):
        return value.sfloat_raw
    m, e = value.mantissa, value.exponent
    if not SFLOAT_MANTISSA_MIN <= m <= SFLOAT_MANTISSA_MAX:
        raise ValueError(f"SFLOAT mantissa out of range: {m}")
    if not SFLOAT_EXPONENT_MIN <= e <= SFLOAT_EXPONENT_MAX:
        raise ValueError(f"SFLOAT exponent out of range: {e}")
    return ((e & 0xF) << 12) | (m & 0x0FFF)


def float_raw(value: Value) -> int:
    """The 32-bit word of a FLOAT (before little-endian serialisation)."""
    if isinstance(value, Special):
        return value.float_raw
    m, e = value.mantissa, value.exponent
    if not FLOAT_MANTISSA_MIN <= m <= FLOAT_MANTISSA_MAX:
        raise ValueError(f"FLOAT mantissa out of range: {m}")
    if not FLOAT_EXPONENT_MIN <= e <= FLOAT_EXPONENT_MAX:
        raise ValueError(f"FLOAT exponent out of range: {e}")
    return ((e & 0xFF) << 24) | (m & 0xFFFFFF)


def sfloat(value: Value) -> bytes:
    """An SFLOAT as sent on the wire (2 bytes, little-endian)."""
    return struct.pack("<H", sfloat_raw(value))


def float32(value: Value) -> bytes:
    """A FLOAT as sent on the wire (4 bytes, little-endian)."""
    return struct.pack("<I", float_raw(value))
