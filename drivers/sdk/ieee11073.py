"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers (protocols.md §1).

A value is ``mantissa × 10**exponent``; the exponent also carries the precision the device reported
(``0xF014`` = 2.0 and ``0x0002`` = 2 are equal numbers with different precisions). Special values
(only when the exponent is 0) carry no number but an :class:`~gateway.model.AbsentReason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.errors import PayloadError
from gateway.model import AbsentReason

SFLOAT_SPECIAL: Final[dict[int, AbsentReason]] = {
    0x07FF: AbsentReason.NAN,
    0x0800: AbsentReason.NRES,
    0x07FE: AbsentReason.POS_INF,
    0x0802: AbsentReason.NEG_INF,
    0x0801: AbsentReason.RESERVED,
}
FLOAT_SPECIAL: Final[dict[int, AbsentReason]] = {
    0x007FFFFF: AbsentReason.NAN,
    0x00800000: AbsentReason.NRES,
    0x007FFFFE: AbsentReason.POS_INF,
    0x00800002: AbsentReason.NEG_INF,
    0x00800001: AbsentReason.RESERVED,
}
_SFLOAT_CODE: Final = {v: k for k, v in SFLOAT_SPECIAL.items()}
_FLOAT_CODE: Final = {v: k for k, v in FLOAT_SPECIAL.items()}


@dataclass(frozen=True, slots=True)
class Number11073:
    """A decoded SFLOAT/FLOAT: mantissa and exponent, or an absent reason for a special value."""

    mantissa: int
    exponent: int
    absent: AbsentReason | None = None

    @property
    def value(self) -> float | None:
        """The number (None for a special value)."""
        return None if self.absent is not None else scaled(self.mantissa, self.exponent)

    @property
    def precision(self) -> int | None:
        """Decimal digits after the point the device reported (None for a special value)."""
        return None if self.absent is not None else max(0, -self.exponent)

    def shifted(self, decades: int) -> Number11073:
        """The same measurement in a unit ``10**decades`` times smaller (e.g. kg/L → mg/dL: 5)."""
        if self.absent is not None:
            return self
        return Number11073(self.mantissa, self.exponent + decades)


def scaled(mantissa: int, exponent: int) -> float:
    """``mantissa × 10**exponent`` rounded once: int / int true division is correctly rounded, whereas
    ``float(10**k)`` is itself inexact for k > 22 (FLOAT exponents reach −128)."""
    if exponent >= 0:
        return float(mantissa * 10**exponent)
    divisor: int = 10**-exponent
    return mantissa / divisor


def decode_sfloat(raw: int) -> Number11073:
    """A 16-bit SFLOAT word (already read little-endian) → number."""
    raw &= 0xFFFF
    if raw in SFLOAT_SPECIAL:
        return Number11073(0, 0, SFLOAT_SPECIAL[raw])
    m, e = raw & 0x0FFF, raw >> 12
    if m >= 0x800:
        m -= 0x1000
    if e >= 0x8:
        e -= 0x10
    return Number11073(m, e)


def decode_float(raw: int) -> Number11073:
    """A 32-bit FLOAT word (already read little-endian) → number."""
    raw &= 0xFFFFFFFF
    if raw in FLOAT_SPECIAL:
        return Number11073(0, 0, FLOAT_SPECIAL[raw])
    m, e = raw & 0xFFFFFF, raw >> 24
    if m >= 0x800000:
        m -= 0x1000000
    if e >= 0x80:
        e -= 0x100
    return Number11073(m, e)


def encode_sfloat(mantissa: int, exponent: int = 0) -> int:
    """Mantissa (−2048…2047, not a special code) and exponent (−8…7) → 16-bit SFLOAT word."""
    if not -0x800 <= mantissa <= 0x7FF or not -8 <= exponent <= 7:
        raise PayloadError(f"SFLOAT out of range: mantissa {mantissa}, exponent {exponent}")
    raw = ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)
    if raw in SFLOAT_SPECIAL:
        raise PayloadError(f"SFLOAT mantissa {mantissa} with exponent 0 is a special value")
    return raw


def encode_float(mantissa: int, exponent: int = 0) -> int:
    """Mantissa (24-bit signed, not a special code) and exponent (−128…127) → 32-bit FLOAT word."""
    if not -0x800000 <= mantissa <= 0x7FFFFF or not -128 <= exponent <= 127:
        raise PayloadError(f"FLOAT out of range: mantissa {mantissa}, exponent {exponent}")
    raw = ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)
    if raw in FLOAT_SPECIAL:
        raise PayloadError(f"FLOAT mantissa {mantissa} with exponent 0 is a special value")
    return raw


def sfloat_special(reason: AbsentReason) -> int:
    """The SFLOAT word of a special value."""
    return _SFLOAT_CODE[reason]


def float_special(reason: AbsentReason) -> int:
    """The FLOAT word of a special value."""
    return _FLOAT_CODE[reason]


def encode_number_sfloat(n: Number11073) -> int:
    """The SFLOAT word of a decoded number (inverse of :func:`decode_sfloat`)."""
    return sfloat_special(n.absent) if n.absent is not None else encode_sfloat(n.mantissa, n.exponent)
