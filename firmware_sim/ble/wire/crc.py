"""E2E-CRC of the CGM service, protocols.md §6.2: CRC-16/MCRF4XX."""

from __future__ import annotations

import struct


def crc16_mcrf4xx(data: bytes, crc: int = 0xFFFF) -> int:
    """Polynomial 0x1021 reflected (0x8408), seed 0xFFFF, no final XOR."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def with_crc(data: bytes) -> bytes:
    """``data`` followed by its CRC, little-endian."""
    return data + struct.pack("<H", crc16_mcrf4xx(data))
