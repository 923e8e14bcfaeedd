"""Base class of a simulated peripheral: identity, clock, battery, faults, the standard services
(Device Information, Battery, Current Time), advertising and the life cycle of its tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

import numpy as np
from bumble import att
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.faults import Faults
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.wire.device_info import battery_level, system_id, utf8
from firmware_sim.ble.wire.time_fields import NO_ADJUSTMENT, AdjustReason, CurrentTime, local_time_information

log = logging.getLogger(__name__)

ADVERTISING_INTERVAL_MS = 50.0
LEGACY_ADVERTISING_MAX = 31

# ATT error codes used by the simulated devices.
ATT_UNLIKELY_ERROR = 0x0E
ATT_INVALID_ATTRIBUTE_VALUE_LENGTH = 0x0D
ATT_CCCD_IMPROPERLY_CONFIGURED = 0xFD
"""Common profile error code (Core Supplement Part B)."""
ATT_PROCEDURE_ALREADY_IN_PROGRESS = 0xFE

Properties = Characteristic.Properties
READABLE = Characteristic.Permissions.READABLE
WRITEABLE = Characteristic.Permissions.WRITEABLE
Reader = Callable[[Connection], Awaitable[bytes]]
Writer = Callable[[Connection, bytes], Awaitable[None]]


def att_error(code: int, message: str = "") -> att.ATT_Error:
    """bumble answers only :class:`~bumble.att.ATT_Error` with an ATT error response."""
    return att.ATT_Error(code, message=message)


class SimPeripheral:
    """One simulated device. Subclasses add their profile services in :meth:`profile_services` and
    their periodic behaviour in :meth:`run`; everything else is common."""

    profile_service_uuids: ClassVar[tuple[UUID, ...]] = ()
    """Service UUIDs put in the advertising data."""

    def __init__(self, identity: DeviceIdentity, *, seed: int = 0, clock: DeviceClock | None = None) -> None:
        self.identity = identity
        self.seed = seed
        self.clock = clock or DeviceClock()
        self.faults = Faults()
        self.rng = np.random.default_rng([seed, identity.index, sum(identity.address.encode())])
        self._battery = 100
        self._device: Device | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.battery_level_char = self._readable(uuids.BATTERY_LEVEL, lambda: battery_level(self._battery), notify=True)
        self.current_time_char: Characteristic[bytes] = Characteristic(
            uuids.CURRENT_TIME,
            Properties.READ | Properties.NOTIFY | Properties.WRITE,
            READABLE | WRITEABLE,
            CharacteristicValue(read=self._read_current_time, write=self._write_current_time),
        )

    # ------------------------------------------------------------------ building blocks

    @property
    def device(self) -> Device:
        if self._device is None:
            raise RuntimeError(f"{self.identity.name} is not attached to a controller")
        return self._device

    async def guard(self) -> None:
        """Every read and control-point write passes here: waits while the device hangs."""
        await self.faults.wait_responsive()
        if self._closing:
            raise att_error(ATT_UNLIKELY_ERROR, "device shutting down")

    def _readable(self, uuid: UUID, value: Callable[[], bytes], *, notify: bool = False) -> Characteristic[bytes]:
        async def read(_connection: Connection) -> bytes:
            await self.guard()
            return value()

        props = Properties.READ | (Properties.NOTIFY if notify else Properties(0))
        return Characteristic(uuid, props, READABLE, CharacteristicValue(read=read))

    def readable(self, uuid: UUID, value: Callable[[], bytes], *, notify: bool = False) -> Characteristic[bytes]:
        """A readable characteristic whose value is computed at each read (hang-aware)."""
        return self._readable(uuid, value, notify=notify)

    @staticmethod
    def notifying(uuid: UUID, *, indicate: bool = False) -> Characteristic[bytes]:
        """A measurement characteristic (value only ever pushed)."""
        return Characteristic(
            uuid, Properties.INDICATE if indicate else Properties.NOTIFY, Characteristic.Permissions(0), b""
        )

    def control_point(
        self, uuid: UUID, write: Writer, *, indicate: bool = True, read: Reader | None = None
    ) -> Characteristic[bytes]:
        """A write-with-response control point; the writer runs after :meth:`guard`."""

        async def guarded_write(connection: Connection, value: bytes) -> None:
            await self.guard()
            await write(connection, value)

        async def guarded_read(connection: Connection) -> bytes:
            await self.guard()
            assert read is not None
            return await read(connection)

        props = Properties.WRITE | (Properties.INDICATE if indicate else Properties(0))
        perms = WRITEABLE
        if read is not None:
            props |= Properties.READ
            perms |= READABLE
        return Characteristic(
            uuid,
            props,
            perms,
            CharacteristicValue(read=guarded_read if read is not None else None, write=guarded_write),
        )

    def subscribed(self, connection: Connection, characteristic: Characteristic[bytes], *, indicate: bool) -> bool:
        """Whether ``connection`` enabled notifications (or indications) on ``characteristic``."""
        cccd = self.device.gatt_server.subscribers.get(connection, {}).get(characteristic.handle)
        if cccd is None or len(cccd) != 2:
            return False
        return bool(cccd[0] & (0x02 if indicate else 0x01))

    def garbage(self) -> bytes:
        """Random bytes for the garbage fault: half the time 0–2 bytes, else 3–20."""
        n = int(self.rng.integers(0, 3)) if self.rng.random() < 0.5 else int(self.rng.integers(3, 21))
        return self.rng.bytes(n)

    async def notify_measurement(
        self, characteristic: Characteristic[bytes], value: bytes, *, connection: Connection | None = None
    ) -> None:
        """Push a measurement (notify or indicate, from the characteristic's properties) to one
        connection or to every subscriber; the garbage fault replaces the value."""
        if self.faults.hung or self._device is None:
            return
        if self.faults.take_garbage():
            value = self.garbage()
        indicate = bool(characteristic.properties & Properties.INDICATE)
        dev = self.device
        if connection is None:
            await (dev.indicate_subscribers if indicate else dev.notify_subscribers)(characteristic, value)
        elif indicate:
            await dev.indicate_subscriber(connection, characteristic, value)
        else:
            await dev.notify_subscriber(connection, characteristic, value)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by this device: cancelled and awaited on close."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("%s: task failed: %r", self.identity.name, exc)

    # ------------------------------------------------------------------ standard services

    def standard_services(self) -> list[Service]:
        ident = self.identity
        dis = Service(
            uuids.DEVICE_INFORMATION_SERVICE,
            [
                self._readable(uuids.MANUFACTURER_NAME, lambda: utf8(ident.manufacturer)),
                self._readable(uuids.MODEL_NUMBER, lambda: utf8(ident.model)),
                self._readable(uuids.SERIAL_NUMBER, lambda: utf8(ident.serial)),
                self._readable(uuids.HARDWARE_REVISION, lambda: utf8(ident.hardware)),
                self._readable(uuids.FIRMWARE_REVISION, lambda: utf8(ident.firmware)),
                self._readable(
                    uuids.SYSTEM_ID,
                    lambda: system_id(int(ident.address.replace(":", ""), 16) & 0xFF_FFFF_FFFF, 0x000000),
                ),
            ],
        )
        battery = Service(uuids.BATTERY_SERVICE, [self.battery_level_char])
        clock = self.clock
        cts = Service(
            uuids.CURRENT_TIME_SERVICE,
            [
                self.current_time_char,
                self._readable(
                    uuids.LOCAL_TIME_INFORMATION,
                    lambda: local_time_information(clock.time_zone_quarters, clock.dst),
                ),
            ],
        )
        return [dis, battery, cts]

    async def _read_current_time(self, _connection: Connection) -> bytes:
        await self.guard()
        return CurrentTime(self.clock.now(), self._adjust_reason).to_bytes()

    _adjust_reason = NO_ADJUSTMENT

    async def _write_current_time(self, _connection: Connection, value: bytes) -> None:
        await self.guard()
        try:
            written = CurrentTime.from_bytes(value)
        except ValueError as exc:
            raise att_error(ATT_INVALID_ATTRIBUTE_VALUE_LENGTH, str(exc)) from exc
        self.clock.set(written.time)
        self._adjust_reason = AdjustReason.MANUAL

    async def jump_clock(self, seconds: float) -> None:
        """Step the device clock and notify Current Time subscribers (adjust reason: manual)."""
        self.clock.jump(seconds)
        self._adjust_reason = AdjustReason.MANUAL
        if self._device is not None and not self.faults.hung:
            await self.device.notify_subscribers(
                self.current_time_char, CurrentTime(self.clock.now(), self._adjust_reason).to_bytes()
            )

    async def set_battery(self, percent: int) -> None:
        self._battery = percent
        if self._device is not None and not self.faults.hung:
            await self.device.notify_subscribers(self.battery_level_char, battery_level(percent))

    # ------------------------------------------------------------------ profile hooks

    def profile_services(self) -> list[Service]:
        raise NotImplementedError

    async def run(self) -> None:
        """The device's periodic behaviour (measurements); runs until the device closes."""

    def on_connection(self, connection: Connection) -> None:
        """Called for each new central; subclasses may track per-connection state."""

    def on_disconnection(self, connection: Connection) -> None:
        """Called when a central goes away."""

    # ------------------------------------------------------------------ advertising and life cycle

    def advertising_data(self) -> bytes:
        sixteen = [u for u in self.profile_service_uuids if len(bytes(u)) == 2]
        wide = [u for u in self.profile_service_uuids if len(bytes(u)) == 16]
        fields: list[tuple[int, bytes]] = [(AdvertisingData.FLAGS, bytes([0x06]))]
        if sixteen:
            fields.append(
                (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, b"".join(bytes(u) for u in sixteen))
            )
        if wide:
            fields.append(
                (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, b"".join(bytes(u) for u in wide))
            )
        fields.append((AdvertisingData.COMPLETE_LOCAL_NAME, self.identity.name.encode()))
        data = bytes(AdvertisingData(fields))
        if len(data) > LEGACY_ADVERTISING_MAX:
            raise ValueError(f"advertising data of {self.identity.name} is {len(data)} > 31 bytes")
        return data

    async def start(self, device: Device, *, advertising_interval_ms: float = ADVERTISING_INTERVAL_MS) -> None:
        """Attach to a (not yet powered) bumble device, power it on, advertise, run."""
        self._device = device
        device.add_services(self.standard_services() + self.profile_services())
        device.on(device.EVENT_CONNECTION, self._on_connection)
        await device.power_on()
        await device.start_advertising(
            advertising_data=self.advertising_data(),
            advertising_interval_min=advertising_interval_ms,
            advertising_interval_max=advertising_interval_ms,
            auto_restart=True,
        )
        self.spawn(self.run())

    def _on_connection(self, connection: Connection) -> None:
        connection.on(connection.EVENT_DISCONNECTION, lambda _reason: self.on_disconnection(connection))
        self.on_connection(connection)

    async def disconnect_all(self) -> None:
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def stop(self) -> None:
        """Stop tasks, drop links, stop advertising, power off. Idempotent."""
        if self._closing or self._device is None:
            return
        self._closing = True
        self.faults.resume()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        device = self.device
        if device.connections:
            await asyncio.wait_for(self.disconnect_all(), 5.0)
            for _ in range(3):  # let auto-restart of advertising run before stopping it for good
                await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            await device.stop_advertising()
        await device.power_off()
