"""GATT discovery over a bumble client → bleak's ``BleakGATTServiceCollection``.

Each bleak object keeps its bumble proxy in ``obj``; handles are ATT handles (a
characteristic's handle is its value handle, the one every read, write and notification uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bumble.core import UUID
from bumble.gatt_client import Client

from gateway.ble.bumble.advertising import uuid_from_le_bytes


def uuid_str(uuid: UUID) -> str:
    """A bumble UUID as bleak's normalised lowercase 128-bit string."""
    return uuid_from_le_bytes(uuid.to_bytes(force_128=True))


async def discover(
    client: Client, max_write_without_response: Callable[[], int], only: Iterable[str] = ()
) -> BleakGATTServiceCollection:
    """Discover services (all, or only the given UUIDs), characteristics and descriptors."""
    collection = BleakGATTServiceCollection()
    for service in await client.discover_services([UUID(u) for u in only]):
        bleak_service = BleakGATTService(service, service.handle, uuid_str(service.uuid))
        collection.add_service(bleak_service)
        for characteristic in await client.discover_characteristics((), service):
            bleak_characteristic = BleakGATTCharacteristic(
                characteristic,
                characteristic.handle,
                uuid_str(characteristic.uuid),
                sorted(gatt_char_props_to_strs(int(characteristic.properties))),
                max_write_without_response,
                bleak_service,
            )
            collection.add_characteristic(bleak_characteristic)
            for descriptor in await client.discover_descriptors(characteristic):
                collection.add_descriptor(
                    BleakGATTDescriptor(descriptor, descriptor.handle, uuid_str(descriptor.type), bleak_characteristic)
                )
    return collection
