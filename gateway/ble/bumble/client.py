"""bleak ``BaseBleakClient`` on bumble: one LE link of a :class:`~gateway.ble.bumble.radio.BumbleRadio`.

Use it through bleak: ``BleakClient(address, backend=radio.client_backend)`` (or
``backend=BleakClientBumble, radio=radio``).  Every network wait is bounded: the connect by
bleak's ``timeout``, each GATT request by the radio's ``operation_timeout_s``.  Errors are
bleak's: ``BleakGATTProtocolError`` for ATT error responses, ``TimeoutError`` for expired
waits, ``BleakError`` for the rest (not connected, link lost mid-request, bumble errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble import att, core, gatt, hci
from bumble.device import Connection
from bumble.gatt_client import CharacteristicProxy, Client

from gateway.ble.bumble import services as gatt_services
from gateway.ble.bumble.radio import BumbleRadio

log = logging.getLogger(__name__)

ATT_DEFAULT_MTU = 23


class BleakClientBumble(BaseBleakClient):
    """A bleak client backend driving one connection of a bumble radio."""

    radio: ClassVar[BumbleRadio | None] = None  # bound by BumbleRadio.client_backend

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        radio: BumbleRadio | None = None,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        chosen = radio or type(self).radio
        if chosen is None:
            raise BleakError("no bumble radio: use backend=radio.client_backend or pass radio=")
        self._radio: BumbleRadio = chosen
        self._peer: hci.Address | None = None
        self._name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            self._name = address_or_ble_device.name
            if isinstance(address_or_ble_device.details, hci.Address):
                self._peer = address_or_ble_device.details
        self._only_services = sorted(services or ())
        self._connection: Connection | None = None
        self._closing = False
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    # connection ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name or self.address

    @property
    def mtu_size(self) -> int:
        connection = self._connection
        return connection.gatt_client.mtu if connection is not None else ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self._connection is not None:
            return
        timeout = float(kwargs.get("timeout", self._timeout))
        peer = self._peer or self._radio.resolve(self.address)
        connection = await self._radio.connect(peer, timeout)
        self._connection = connection
        self._closing = False
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            async with self._request("connect setup"):
                await connection.gatt_client.request_mtu(self._radio.settings.mtu)
                self.services = await gatt_services.discover(
                    connection.gatt_client, lambda: self.mtu_size - 3, self._only_services
                )
            if pair:
                await self.pair()
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        try:
            async with asyncio.timeout(self._radio.settings.operation_timeout_s):
                await connection.disconnect()
        except core.BaseBumbleError as error:
            log.debug("disconnect from %s: %s", self.address, error)
        finally:
            self._forget(connection)

    def _on_disconnection(self, reason: int) -> None:
        connection = self._connection
        if connection is None:
            return
        self._forget(connection)
        if not self._closing:
            log.debug("%s disconnected, reason 0x%02X", self.address, reason)
            if self._disconnected_callback is not None:
                self._disconnected_callback()

    def _forget(self, connection: Connection) -> None:
        if self._connection is not connection:
            return
        connection.remove_listener(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._connection = None
        self._subscribers.clear()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair (and bond) with the radio's pairing configuration (bumble default: LE Secure Connections)."""
        connection = self._require_connection()
        try:
            async with asyncio.timeout(self._timeout):
                await connection.pair()
        except core.BaseBumbleError as error:
            raise BleakError(f"pairing with {self.address} failed: {error}") from error

    async def unpair(self) -> None:
        """Forget the bond (keys in the radio's key store) and drop the link if there is one."""
        await self.disconnect()
        keystore = self._radio.device.keystore
        peer = self._peer or self._radio.resolve(self.address)
        if keystore is not None:
            try:
                await keystore.delete(str(peer))
            except KeyError:
                log.debug("no bond with %s to remove", self.address)

    # GATT I/O --------------------------------------------------------------------------------

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.handle, use_cached)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.handle, use_cached)

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        client = self._require_connection().gatt_client
        async with self._request(f"write handle 0x{characteristic.handle:04X}"):
            await client.write_value(characteristic.handle, bytes(data), with_response=response)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        client = self._require_connection().gatt_client
        async with self._request(f"write descriptor 0x{descriptor.handle:04X}"):
            await client.write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Write the CCCD: notifications if the characteristic has them, indications otherwise."""
        client = self._require_connection().gatt_client
        proxy = self._proxy(characteristic)
        if proxy.get_descriptor(gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR) is None:
            raise BleakError(f"characteristic {characteristic.uuid} has no CCCD: cannot notify or indicate")
        address = self.address

        def deliver(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception:
                log.exception("notification callback for %s %s raised", address, characteristic.uuid)

        previous = self._subscribers.pop(characteristic.handle, None)
        async with self._request(f"subscribe {characteristic.uuid}"):
            if previous is not None:
                await client.unsubscribe(proxy, previous)
            await client.subscribe(proxy, deliver, prefer_notify=True)
        self._subscribers[characteristic.handle] = deliver

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        client = self._require_connection().gatt_client
        subscriber = self._subscribers.pop(characteristic.handle, None)
        async with self._request(f"unsubscribe {characteristic.uuid}"):
            await client.unsubscribe(self._proxy(characteristic), subscriber, force=subscriber is None)

    # helpers -----------------------------------------------------------------------------------

    async def _read(self, handle: int, use_cached: bool) -> bytearray:
        client: Client = self._require_connection().gatt_client
        if use_cached and handle in client.cached_values:
            return bytearray(client.cached_values[handle][1])
        async with self._request(f"read handle 0x{handle:04X}"):
            value = await client.read_value(handle)
        return bytearray(value)

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise BleakError("Not connected")
        return self._connection

    @staticmethod
    def _proxy(characteristic: BleakGATTCharacteristic) -> CharacteristicProxy[bytes]:
        proxy = characteristic.obj
        if not isinstance(proxy, CharacteristicProxy):
            raise BleakError(f"characteristic {characteristic.uuid} was not discovered by the bumble backend")
        return proxy

    @asynccontextmanager
    async def _request(self, what: str) -> AsyncIterator[None]:
        """Bound a GATT exchange by the operation timeout and translate bumble's errors to bleak's."""
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(self._radio.settings.operation_timeout_s):
                yield
        except att.ATT_Error as error:
            raise BleakGATTProtocolError(error.error_code) from error
        except (TimeoutError, core.TimeoutError) as error:
            raise TimeoutError(f"{what} on {self.address}: no response") from error
        except asyncio.CancelledError as error:
            # bumble cancels the pending response future when the link drops: that is not a
            # cancellation of this task, so it becomes a BleakError.
            if task is not None and task.cancelling():
                raise
            raise BleakError(f"{what} on {self.address}: disconnected") from error
        except core.BaseBumbleError as error:
            raise BleakError(f"{what} on {self.address}: {error}") from error
