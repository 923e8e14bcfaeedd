"""A bare bumble central on a LocalLink, for testing the simulated peripherals (no bleak, no
gateway code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bumble.core import UUID
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.link import LocalLink

from firmware_sim.ble.runner import local_device

CENTRAL_ADDRESS = "F0:F0:F0:F0:F0:01"


class Central:
    """One link to one peripheral, services discovered."""

    def __init__(self, device: Device, connection: Connection, peer: Peer) -> None:
        self.device = device
        self.connection = connection
        self.peer = peer

    def char(self, uuid: UUID) -> CharacteristicProxy[bytes]:
        found = self.peer.get_characteristics_by_uuid(uuid)
        assert found, f"no characteristic {uuid}"
        return found[0]

    async def read(self, uuid: UUID) -> bytes:
        return await self.peer.read_value(self.char(uuid))

    async def write(self, uuid: UUID, value: bytes) -> None:
        await self.peer.write_value(self.char(uuid), value, with_response=True)

    async def subscribe(self, uuid: UUID, *, indicate: bool = False) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        await self.peer.subscribe(self.char(uuid), queue.put_nowait, prefer_notify=not indicate)
        return queue

    async def subscribe_tagged(
        self, uuid: UUID, queue: asyncio.Queue[tuple[str, bytes]], tag: str, *, indicate: bool = False
    ) -> None:
        """Several characteristics into one queue, in arrival order."""
        await self.peer.subscribe(self.char(uuid), lambda v: queue.put_nowait((tag, v)), prefer_notify=not indicate)


async def connect(device: Device, address: str, *, mtu: int | None = None) -> Central:
    connection = await device.connect(address)
    peer = Peer(connection)
    if mtu is not None:
        await peer.request_mtu(mtu)
    await peer.discover_services()
    for service in peer.services:
        await service.discover_characteristics()
    return Central(device, connection, peer)


@asynccontextmanager
async def central_device(link: LocalLink, address: str = CENTRAL_ADDRESS) -> AsyncIterator[Device]:
    device, controller = local_device(link, "central", address)
    await device.power_on()
    try:
        yield device
    finally:
        for connection in list(device.connections.values()):
            await connection.disconnect()
        await device.power_off()
        link.remove_controller(controller)


async def advertisement_of(device: Device, address: str) -> Advertisement:
    """Scan until ``address`` advertises; returns its advertisement."""
    found: asyncio.Future[Advertisement] = asyncio.get_running_loop().create_future()

    def on_advertisement(advertisement: Advertisement) -> None:
        if str(advertisement.address) == address and not found.done():
            found.set_result(advertisement)

    device.on(device.EVENT_ADVERTISEMENT, on_advertisement)
    await device.start_scanning()
    try:
        return await asyncio.wait_for(found, 10.0)
    finally:
        device.remove_listener(device.EVENT_ADVERTISEMENT, on_advertisement)
        await device.stop_scanning()


async def drain(queue: asyncio.Queue[bytes]) -> list[bytes]:
    """What arrived so far, after letting the link settle a few loop turns."""
    for _ in range(20):
        await asyncio.sleep(0)
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
