"""Device Information 0x180A strings and Battery Level 0x2A19 (protocols.md §7.5)."""

from __future__ import annotations

import struct


def utf8(text: str) -> bytes:
    """DIS strings: UTF-8, no terminator."""
    return text.encode("utf-8")


def system_id(manufacturer_id: int, oui: int) -> bytes:
    """System ID 0x2A23: 40-bit manufacturer identifier then 24-bit OUI, LSO first."""
    return struct.pack("<Q", manufacturer_id & 0xFF_FFFF_FFFF)[:5] + struct.pack("<I", oui)[:3]


def battery_level(percent: int) -> bytes:
    if not 0 <= percent <= 100:
        raise ValueError(f"battery level out of range: {percent}")
    return bytes([percent])
