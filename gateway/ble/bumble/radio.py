"""The central's radio: one bumble ``Device`` and its controller, shared by every bleak client.

A radio is built on an in-process ``LocalLink`` (tests) or on a bumble transport spec
(``tcp-client:127.0.0.1:PORT`` for a hub, ``usb:0`` for a dongle).  bleak constructs backend
objects itself, so a radio hands out backend *classes* bound to it::

    async with await BumbleRadio.open("usb:0") as radio:
        async with BleakClient(address, backend=radio.client_backend) as client: ...
        devices = await BleakScanner.discover(backend=radio.scanner_backend)

It serialises LE connects (a bumble device allows one pending connect), bounds every connect by
a timeout (and cancels the pending connect in the controller when it expires or the caller is
cancelled), and reference-counts scanning so several scanners can share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from bleak.exc import BleakError
from bumble import core, hci
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from gateway.ble.bumble.controller import GatewayController

if TYPE_CHECKING:
    from gateway.ble.bumble.client import BleakClientBumble
    from gateway.ble.bumble.scanner import BleakScannerBumble

log = logging.getLogger(__name__)

AdvertisementListener = Callable[[Advertisement], None]

DEFAULT_MTU = 517
DEFAULT_OPERATION_TIMEOUT_S = 10.0
CANCEL_GRACE_S = 2.0  # how long the controller may take to confirm a connect cancel


def random_static_address() -> hci.Address:
    """A fresh static random address (two top bits set), unique per device on a link."""
    raw = bytearray(secrets.token_bytes(6))
    raw[5] |= 0xC0  # little-endian: byte 5 is the most significant
    return hci.Address(bytes(raw), hci.Address.RANDOM_DEVICE_ADDRESS)


def le_address(address: str, known: dict[str, hci.Address] | None = None) -> hci.Address:
    """The typed LE address for a bleak address string: as last seen advertising, else guessed.

    The guess: static random if the two top bits are set, public otherwise.
    """
    text = address.upper()
    if known is not None and text in known:
        return known[text]
    try:
        top = int(text[:2], 16)
    except ValueError as error:
        raise BleakError(f"not a Bluetooth address: {address!r}") from error
    kind = hci.Address.RANDOM_DEVICE_ADDRESS if top >= 0xC0 else hci.Address.PUBLIC_DEVICE_ADDRESS
    return hci.Address(text, kind)


@dataclass(frozen=True)
class RadioSettings:
    """Tunables of a radio.

    ``active_scan``: scanners asking for active scanning (bleak's default) get it only if this is
    true; the gateway scans passively by default.  ``max_connections``: connection slots.
    ``mtu``: ATT MTU requested after every connect.  ``operation_timeout_s``: bound on every
    GATT request and HCI exchange.
    """

    active_scan: bool = False
    max_connections: int = 32
    mtu: int = DEFAULT_MTU
    operation_timeout_s: float = DEFAULT_OPERATION_TIMEOUT_S
    known_addresses: int = 4096  # typed addresses remembered from advertisements


class BumbleRadio:
    """One bumble central: device, host, controller or transport, connect lock, scan fan-out."""

    def __init__(
        self,
        device: Device,
        *,
        transport: Transport | None = None,
        controller: GatewayController | None = None,
        settings: RadioSettings = RadioSettings(),
    ) -> None:
        """Prefer :meth:`on_link` or :meth:`open`; this wraps an already powered-on device."""
        self.device = device
        self.settings = settings
        self._transport = transport
        self._controller = controller
        self._connect_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._scan_users = 0
        self._listeners: dict[object, AdvertisementListener] = {}
        self._address_types: OrderedDict[str, hci.Address] = OrderedDict()
        self._closed = False
        self._client_backend: type[BleakClientBumble] | None = None
        self._scanner_backend: type[BleakScannerBumble] | None = None
        if device.keystore is None:
            device.keystore = MemoryKeyStore()
        device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)

    # construction ---------------------------------------------------------------------------

    @classmethod
    async def on_link(
        cls,
        link: LocalLink,
        *,
        address: hci.Address | None = None,
        name: str = "ds4h-gateway",
        settings: RadioSettings = RadioSettings(),
    ) -> Self:
        """A radio with its own virtual controller on ``link``; call inside the running loop."""
        controller = GatewayController(name, link=link)
        host = Host(controller, AsyncPipeSink(controller))
        device = Device(name=name, address=address or random_static_address(), host=host)
        await device.power_on()
        return cls(device, controller=controller, settings=settings)

    @classmethod
    async def open(
        cls,
        spec: str,
        *,
        address: hci.Address | None = None,
        name: str = "ds4h-gateway",
        settings: RadioSettings = RadioSettings(),
    ) -> Self:
        """A radio on a bumble transport: ``tcp-client:127.0.0.1:PORT``, ``usb:0``, ``hci-socket:0`` …"""
        transport = await open_transport(spec)
        try:
            device = Device.with_hci(name, address or random_static_address(), transport.source, transport.sink)
            await device.power_on()
        except BaseException:
            await transport.close()
            raise
        return cls(device, transport=transport, settings=settings)

    async def aclose(self) -> None:
        """Disconnect every link, stop scanning, detach from the link or close the transport."""
        if self._closed:
            return
        self._closed = True
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                async with asyncio.timeout(self.settings.operation_timeout_s):
                    await connection.disconnect()
        if self.device.is_scanning:
            with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                async with asyncio.timeout(self.settings.operation_timeout_s):
                    await self.device.stop_scanning()
        self.device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self.device.power_off()
        if self._controller is not None:
            self._controller.link.remove_controller(self._controller)
        if self._transport is not None:
            await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # bleak backends bound to this radio ----------------------------------------------------

    @property
    def client_backend(self) -> type[BleakClientBumble]:
        """A ``BaseBleakClient`` subclass bound to this radio: ``BleakClient(..., backend=…)``."""
        if self._client_backend is None:
            from gateway.ble.bumble.client import BleakClientBumble

            self._client_backend = type("BleakClientBumble", (BleakClientBumble,), {"radio": self})
        return self._client_backend

    @property
    def scanner_backend(self) -> type[BleakScannerBumble]:
        """A ``BaseBleakScanner`` subclass bound to this radio: ``BleakScanner(..., backend=…)``."""
        if self._scanner_backend is None:
            from gateway.ble.bumble.scanner import BleakScannerBumble

            self._scanner_backend = type("BleakScannerBumble", (BleakScannerBumble,), {"radio": self})
        return self._scanner_backend

    # connections ---------------------------------------------------------------------------

    @property
    def address(self) -> hci.Address:
        address: hci.Address = self.device.random_address
        return address

    def resolve(self, address: str) -> hci.Address:
        """The typed address for a bleak address string (from advertisements seen so far)."""
        return le_address(address, self._address_types)

    async def connect(self, address: hci.Address, timeout_s: float) -> Connection:
        """Open an LE link within ``timeout_s`` (lock wait included); TimeoutError if it expires."""
        if self._closed:
            raise BleakError("the bumble radio is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with asyncio.timeout(timeout_s):
            await self._connect_lock.acquire()
        try:
            if len(self.device.connections) >= self.settings.max_connections:
                raise BleakError(f"all {self.settings.max_connections} connection slots of the radio are in use")
            remaining = max(deadline - loop.time(), 0.001)
            try:
                # bumble cancels the pending connect in the controller when its own timeout
                # expires; the outer guard only catches a controller that never confirms.
                async with asyncio.timeout(remaining + CANCEL_GRACE_S):
                    connection: Connection = await self.device.connect(
                        address, transport=core.PhysicalTransport.LE, timeout=remaining
                    )
                    return connection
            except core.TimeoutError as error:
                raise TimeoutError(f"connect to {address.to_string(False)} timed out after {timeout_s} s") from error
            except TimeoutError as error:
                raise TimeoutError(
                    f"connect to {address.to_string(False)} timed out and the controller did not confirm the cancel"
                ) from error
            except asyncio.CancelledError:
                await asyncio.shield(self._cancel_pending_connect())
                raise
            except core.ConnectionError as error:
                raise BleakError(f"connect to {address.to_string(False)} failed: {error}") from error
            except core.BaseBumbleError as error:
                raise BleakError(f"connect to {address.to_string(False)} failed: {error}") from error
        finally:
            self._connect_lock.release()

    async def _cancel_pending_connect(self) -> None:
        """Tell the controller to drop a connect whose waiter went away (errors only logged)."""
        try:
            async with asyncio.timeout(CANCEL_GRACE_S):
                await self.device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        except (core.BaseBumbleError, hci.HCI_Error, TimeoutError) as error:
            log.debug("LE connect cancel not confirmed: %s", error)

    # scanning ------------------------------------------------------------------------------

    def add_advertisement_listener(self, listener: AdvertisementListener) -> Callable[[], None]:
        """Call ``listener`` for every advertising report; returns the unregister function."""
        token = object()
        self._listeners[token] = listener
        return lambda: self._listeners.pop(token, None) and None

    async def start_scanning(self, *, active: bool) -> None:
        """Start (or join) scanning; the first user's mode wins while scanning is shared."""
        async with self._scan_lock:
            self._scan_users += 1
            if self._scan_users == 1:
                try:
                    async with asyncio.timeout(self.settings.operation_timeout_s):
                        await self.device.start_scanning(active=active, filter_duplicates=False)
                except BaseException:
                    self._scan_users -= 1
                    raise

    async def stop_scanning(self) -> None:
        async with self._scan_lock:
            if self._scan_users == 0:
                return
            self._scan_users -= 1
            if self._scan_users == 0 and self.device.is_scanning:
                async with asyncio.timeout(self.settings.operation_timeout_s):
                    await self.device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address: hci.Address = advertisement.address
        key = address.to_string(False)
        self._address_types[key] = address
        self._address_types.move_to_end(key)
        if len(self._address_types) > self.settings.known_addresses:
            self._address_types.popitem(last=False)
        for listener in list(self._listeners.values()):
            listener(advertisement)
