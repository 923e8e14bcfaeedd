"""Advertising data (AD structures) → bleak's ``AdvertisementData``; pure, no I/O.

bumble's virtual link repeats AD structures in some reports and never sends scan responses,
so every field is de-duplicated here, and a scan response (from a real dongle in active mode)
is merged into the advertisement it answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from bleak.backends.scanner import AdvertisementData

# AD types, Bluetooth Assigned Numbers 2.3
_UUID16 = (0x02, 0x03)
_UUID32 = (0x04, 0x05)
_UUID128 = (0x06, 0x07)
_SHORT_NAME = 0x08
_COMPLETE_NAME = 0x09
_TX_POWER = 0x0A
_SERVICE_DATA16 = 0x16
_SERVICE_DATA32 = 0x20
_SERVICE_DATA128 = 0x21
_MANUFACTURER = 0xFF

_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


def uuid_from_le_bytes(data: bytes) -> str:
    """A 16-, 32- or 128-bit UUID in little-endian wire order as bleak's lowercase string."""
    if len(data) in (2, 4):
        return f"{int.from_bytes(data, 'little'):08x}{_BASE_UUID_TAIL}"
    return str(uuid.UUID(bytes=bytes(reversed(data))))


@dataclass
class AdFields:
    """The AD structures bleak reports, de-duplicated and in first-seen order."""

    local_name: str | None = None
    service_uuids: list[str] = field(default_factory=list)
    service_data: dict[str, bytes] = field(default_factory=dict)
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    tx_power: int | None = None

    def merge(self, other: AdFields) -> AdFields:
        """Fields of ``self`` completed by ``other`` (e.g. an advertisement and its scan response)."""
        merged = AdFields(
            local_name=self.local_name or other.local_name,
            service_uuids=list(dict.fromkeys(self.service_uuids + other.service_uuids)),
            service_data={**other.service_data, **self.service_data},
            manufacturer_data={**other.manufacturer_data, **self.manufacturer_data},
            tx_power=self.tx_power if self.tx_power is not None else other.tx_power,
        )
        return merged

    def to_bleak(self, rssi: int, platform_data: tuple[object, ...] = ()) -> AdvertisementData:
        return AdvertisementData(
            local_name=self.local_name,
            manufacturer_data=dict(self.manufacturer_data),
            service_data=dict(self.service_data),
            service_uuids=list(self.service_uuids),
            tx_power=self.tx_power,
            rssi=rssi,
            platform_data=platform_data,
        )


def parse_ad(data: bytes) -> AdFields:
    """Parse AD structures; a truncated trailing structure is ignored, as controllers may cut it."""
    fields = AdFields()
    uuids: dict[str, None] = {}
    short_name: str | None = None
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length == 0 or offset + 1 + length > len(data):
            break
        ad_type = data[offset + 1]
        value = data[offset + 2 : offset + 1 + length]
        offset += 1 + length
        if ad_type in _UUID16 + _UUID32 + _UUID128:
            size = 2 if ad_type in _UUID16 else 4 if ad_type in _UUID32 else 16
            for i in range(0, len(value) - size + 1, size):
                uuids[uuid_from_le_bytes(value[i : i + size])] = None
        elif ad_type == _COMPLETE_NAME:
            fields.local_name = value.decode("utf-8", errors="replace")
        elif ad_type == _SHORT_NAME:
            short_name = value.decode("utf-8", errors="replace")
        elif ad_type == _TX_POWER and len(value) == 1:
            fields.tx_power = int.from_bytes(value, "little", signed=True)
        elif ad_type in (_SERVICE_DATA16, _SERVICE_DATA32, _SERVICE_DATA128):
            size = 2 if ad_type == _SERVICE_DATA16 else 4 if ad_type == _SERVICE_DATA32 else 16
            if len(value) >= size:
                fields.service_data[uuid_from_le_bytes(value[:size])] = bytes(value[size:])
        elif ad_type == _MANUFACTURER and len(value) >= 2:
            fields.manufacturer_data[int.from_bytes(value[:2], "little")] = bytes(value[2:])
    if fields.local_name is None:
        fields.local_name = short_name
    fields.service_uuids = list(uuids)
    return fields
