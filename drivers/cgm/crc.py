"""E2E-CRC framing of CGM values: check and strip, or append (protocols.md §6.2)."""

from __future__ import annotations

import struct

from drivers.sdk.gatt import crc16_mcrf4xx
from gateway.errors import PayloadError


def check_crc(value: bytes, what: str) -> bytes:
    """``value`` ends with its E2E-CRC (LE): return the octets before it, or raise ``bad_crc``."""
    if len(value) < 3:
        raise PayloadError(f"{what}: {len(value)} byte(s) cannot hold a value and its E2E-CRC")
    body, (sent,) = value[:-2], struct.unpack_from("<H", value, len(value) - 2)
    if crc16_mcrf4xx(body) != sent:
        raise PayloadError(
            f"{what}: E2E-CRC {sent:#06x} does not match the computed {crc16_mcrf4xx(body):#06x}", reason="bad_crc"
        )
    return body


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its E2E-CRC."""
    return body + struct.pack("<H", crc16_mcrf4xx(body))


def split_crc(value: bytes, size: int, what: str, crc: bool | None) -> bytes:
    """The ``size`` value octets of a fixed-size CGM value, CRC checked when present.

    ``crc``: True = the CRC must be there (E2E-CRC supported), False = none, None = infer from the length.
    """
    if crc is None:
        crc = len(value) == size + 2
    if len(value) != size + (2 if crc else 0):
        raise PayloadError(
            f"{what}: {len(value)} byte(s), expected {size}{' + 2 (E2E-CRC)' if crc else ''}", reason="malformed"
        )
    return check_crc(value, what) if crc else value
