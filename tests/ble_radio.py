"""Test helpers for the bumble bleak backend: a small GATT peripheral on a virtual radio.

The peripheral is plain bumble (no bleak): a Heart Rate service (0x180D: notify 0x2A37, read
0x2A38) and a test service with an indicate characteristic, a writable one, one that answers
reads with an ATT error and one whose read callback raises a non-ATT error (bumble then sends
no response at all, so the client must time out).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from bumble import att
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, StreamPacketSink, Transport

from gateway.ble.bumble.controller import GatewayController
from gateway.ble.bumble.radio import random_static_address

HEART_RATE_SERVICE = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT = "00002a37-0000-1000-8000-00805f9b34fb"
BODY_SENSOR_LOCATION = "00002a38-0000-1000-8000-00805f9b34fb"
TEST_SERVICE = "7e570000-0000-4000-8000-00000000d54a"
INDICATE_CHAR = "7e570001-0000-4000-8000-00000000d54a"
WRITE_CHAR = "7e570002-0000-4000-8000-00000000d54a"
ERROR_CHAR = "7e570003-0000-4000-8000-00000000d54a"
SILENT_CHAR = "7e570004-0000-4000-8000-00000000d54a"
MANUFACTURER_ID = 0x0F0F
APP_ERROR = 0x80

_NOTIFY = Characteristic.Properties.NOTIFY
_INDICATE = Characteristic.Properties.INDICATE
_READ = Characteristic.Properties.READ
_WRITE = Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE
_RW = Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE


class TestPeripheral:
    """A bumble GATT peripheral advertising every ``interval_ms`` (name in the advertising data)."""

    __test__ = False  # not a pytest class

    def __init__(self, device: Device, *, name: str, controller: GatewayController | None, transport: Transport | None):
        self.device = device
        self.name = name
        self.writes: asyncio.Queue[bytes] = asyncio.Queue()
        self.connections: list[Connection] = []
        self._controller = controller
        self._transport = transport
        self.heart_rate: Characteristic[bytes] = Characteristic(UUID.from_16_bits(0x2A37), _NOTIFY, _RW, b"\x00\x48")
        self.location: Characteristic[bytes] = Characteristic(UUID.from_16_bits(0x2A38), _READ, _RW, b"\x01")
        self.indicate_char: Characteristic[bytes] = Characteristic(UUID(INDICATE_CHAR), _INDICATE, _RW, b"")
        self.write_char: Characteristic[bytes] = Characteristic(
            UUID(WRITE_CHAR), _WRITE | _READ, _RW, CharacteristicValue(read=self._read_last, write=self._on_write)
        )
        self.error_char: Characteristic[bytes] = Characteristic(
            UUID(ERROR_CHAR), _READ, _RW, CharacteristicValue(read=self._refuse)
        )
        self.silent_char: Characteristic[bytes] = Characteristic(
            UUID(SILENT_CHAR), _READ, _RW, CharacteristicValue(read=self._crash)
        )
        self._last_write = b""
        self._dead = False
        device.add_services(
            [
                Service(UUID.from_16_bits(0x180D), [self.heart_rate, self.location]),
                Service(UUID(TEST_SERVICE), [self.indicate_char, self.write_char, self.error_char, self.silent_char]),
            ]
        )
        device.on(Device.EVENT_CONNECTION, self._on_connection)

    @classmethod
    async def on_link(cls, link: LocalLink, name: str, address: Address | None = None) -> Self:
        controller = GatewayController(name, link=link)
        device = Device(
            name=name, address=address or random_static_address(), host=Host(controller, AsyncPipeSink(controller))
        )
        return cls(device, name=name, controller=controller, transport=None)

    @classmethod
    async def open(cls, spec: str, name: str) -> Self:
        transport = await open_transport(spec)
        device = Device.with_hci(name, random_static_address(), transport.source, transport.sink)
        return cls(device, name=name, controller=None, transport=transport)

    @property
    def address(self) -> str:
        text: str = self.device.random_address.to_string(False)
        return text

    async def start(self, interval_ms: float = 20.0) -> Self:
        await self.device.power_on()
        advertising = AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                (AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes(UUID.from_16_bits(0x180D))),
                (AdvertisingData.MANUFACTURER_SPECIFIC_DATA, MANUFACTURER_ID.to_bytes(2, "little") + b"sim"),
                (AdvertisingData.SERVICE_DATA_16_BIT_UUID, bytes(UUID.from_16_bits(0x180D)) + b"\x2a"),
            ]
        )
        await self.device.start_advertising(
            auto_restart=True,
            advertising_data=bytes(advertising),
            advertising_interval_min=interval_ms,
            advertising_interval_max=interval_ms,
        )
        return self

    async def notify(self, value: bytes) -> None:
        await self.device.notify_subscribers(self.heart_rate, value)

    async def indicate(self, value: bytes) -> None:
        await self.device.indicate_subscribers(self.indicate_char, value)

    async def disconnect_all(self) -> None:
        for connection in list(self.connections):
            await connection.disconnect()

    def drop_hci(self) -> None:
        """Close the HCI socket to the hub abruptly, as a crashing firmware process would."""
        assert self._transport is not None and isinstance(self._transport.sink, StreamPacketSink)
        self._transport.sink.close()
        self._dead = True

    async def aclose(self) -> None:
        if self._dead:
            assert self._transport is not None
            await self._transport.close()
            return
        for connection in list(self.connections):
            await connection.disconnect()
        await self.device.stop_advertising()
        await self.device.power_off()
        if self._controller is not None:
            self._controller.le_legacy_advertiser.stop()
            self._controller.link.remove_controller(self._controller)
        if self._transport is not None:
            await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # GATT callbacks -------------------------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        self.connections.append(connection)
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self.connections.remove(connection))

    def _on_write(self, _connection: Connection, value: bytes) -> None:
        self._last_write = bytes(value)
        self.writes.put_nowait(bytes(value))

    def _read_last(self, _connection: Connection) -> bytes:
        return self._last_write

    def _refuse(self, _connection: Connection) -> bytes:
        raise att.ATT_Error(APP_ERROR)

    def _crash(self, _connection: Connection) -> bytes:
        raise RuntimeError("simulated firmware bug: no ATT response is sent")
