"""The BLE source: one scanner, connection slots, reconnects, and a driver session per connection.

Only registered, enabled devices are connected: by BLE address, or, for a device registered by serial
number only, at the address where a short probe connection read that serial. Each connection runs in its own task
with a timeout on every wait, so a device that hangs or sends garbage never delays the others. A
streaming device keeps its slot until it disconnects; a store-and-forward device gets a turn of at most
``store_turn_s`` and then yields (see :mod:`gateway.ble.scheduler`). After every (re)connect the device's
clock, identity and battery are read first (:mod:`gateway.ble.connect_info`), then the driver's session
subscribes again from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.device_info import STRING_UUIDS
from drivers.device_info.codec import decode_string
from drivers.sdk.driver import Driver, DriverKind
from drivers.sdk.registry import DriverRegistry
from drivers.sdk.session import read_optional
from gateway.backoff import backoff_delay
from gateway.ble.connect_info import ConnectInfo, IdentityMismatch, read_connect_info
from gateway.ble.context import LIVE_KEEP, DeviceContext
from gateway.ble.pairing import PairingPolicy
from gateway.ble.scheduler import SlotState, pick
from gateway.ble.stack import BleStack
from gateway.clock import ClockMonitor
from gateway.config import BleSection
from gateway.devices import DeviceRegistry
from gateway.errors import BackpressureError, GatewayError, PayloadError, ShuttingDownError
from gateway.metrics import GatewayMetrics
from gateway.outbox.committer import Committer

log = logging.getLogger(__name__)

SCHEDULE_INTERVAL_S = 0.1
PROBE_RETRY_S = 600.0
"""An unknown address that was probed and is no registered device is not probed again for this long."""
STOP_TIMEOUT_S = 3.0
"""A session's ``stop`` (e.g. Polar's stop-streaming write) and the disconnect get this long each."""


@dataclass(slots=True)
class DeviceSlot:
    """Everything the manager knows about one registered BLE device."""

    device_id: str
    driver: Driver
    sched: SlotState
    ble_device: BLEDevice | None = None
    rssi: int | None = None
    info: ConnectInfo | None = None
    connected_since_ns: int = 0
    """When the current link came up; 0 while there is none (a connect may be in progress)."""
    last_error: str | None = None
    connects: int = 0
    """Links established since start (more than one: the device reconnected)."""
    live: deque[object] = field(default_factory=lambda: deque(maxlen=LIVE_KEEP))
    task: asyncio.Task[None] | None = None


class BleSource:
    def __init__(
        self,
        cfg: BleSection,
        stack: BleStack,
        drivers: DriverRegistry,
        registry: DeviceRegistry,
        committer: Committer,
        clock: ClockMonitor,
        metrics: GatewayMetrics,
        pairing: PairingPolicy,
    ) -> None:
        self._cfg = cfg
        self._stack = stack
        self._drivers = drivers
        self._registry = registry
        self._committer = committer
        self._clock = clock
        self._metrics = metrics
        self.pairing = pairing
        self.slots: dict[str, DeviceSlot] = {}
        self._by_address: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._rng = random.Random()
        self.scanning = False
        self._no_driver: set[str] = set()
        self._by_serial: dict[str, tuple[str, Driver]] = {}
        """Serial number → (device id, driver) of devices registered by serial only."""
        self._learned: dict[str, str] = {}
        """Address → device id, for serial-registered devices a probe has located."""
        self._probed: dict[str, float] = {}
        self._probe_queue: dict[str, BLEDevice] = {}
        self._probing = False

    # --- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self._stack.open()
        try:
            async with asyncio.TaskGroup() as tg:
                self._refresh_devices()
                scanner = BleakScanner(
                    detection_callback=self._on_advertisement,
                    scanning_mode=self._cfg.scan_mode,
                    **self._stack.scanner_kwargs(),
                )
                await asyncio.wait_for(scanner.start(), timeout=self._cfg.connect_timeout_s)
                self.scanning = True
                log.info("BLE scanning (%s, %d slot(s))", self._cfg.backend, self._cfg.max_connections)
                try:
                    await self._schedule(tg)
                finally:
                    self.scanning = False
                    with contextlib.suppress(BleakError, TimeoutError, OSError):
                        await asyncio.wait_for(scanner.stop(), timeout=STOP_TIMEOUT_S)
                    # sessions see the stop: they stop streaming and disconnect; connects in progress are cut
                    tasks = [s.task for s in self.slots.values() if s.task is not None]
                    if tasks:
                        _, late = await asyncio.wait(tasks, timeout=3 * STOP_TIMEOUT_S)
                        for t in late:
                            t.cancel()
        finally:
            await self._stack.close()

    async def _schedule(self, tg: asyncio.TaskGroup) -> None:
        last_refresh = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - last_refresh >= 1.0:
                self._refresh_devices()
                last_refresh = now
            self._start_probe(tg)
            for device_id in pick(
                (s.sched for s in self.slots.values()),
                now,
                max_connections=self._cfg.max_connections,
                reserved_for_store=self._cfg.store_slots,
                seen_timeout_s=self._cfg.seen_timeout_s,
                store_interval_s=self._cfg.store_interval_s,
            ):
                slot = self.slots[device_id]
                slot.sched.connected = True
                slot.task = tg.create_task(self._connection(slot), name=f"ble-{device_id}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=SCHEDULE_INTERVAL_S)

    # --- devices ---------------------------------------------------------------------------------
    def _refresh_devices(self) -> None:
        """Registered, enabled devices with a driver become slots: by their BLE address, or — registered by
        serial number only — by the address a probe found them at."""
        wanted: dict[str, tuple[str, Driver]] = {}
        by_serial: dict[str, tuple[str, Driver]] = {}
        learned = {device_id: address for address, device_id in self._learned.items()}
        for d in self._registry.current():  # once a second: reloads only after a registry change
            address = d.identities.get("ble_address")
            serial = d.identities.get("serial")
            if not d.enabled or (address is None and serial is None):
                continue
            driver = self._drivers.get(d.kind)
            if driver is None:
                if d.id not in self._no_driver:
                    self._no_driver.add(d.id)
                    log.warning(
                        "BLE device %s: no driver named %r (installed: %s)",
                        d.id,
                        d.kind,
                        ", ".join(self._drivers.names()),
                    )
                continue
            if address is None:
                assert serial is not None
                by_serial[serial] = (d.id, driver)
                if d.id not in learned:
                    continue
                address = learned[d.id]
            wanted[d.id] = (address.upper(), driver)
        self._by_serial = by_serial
        self._learned = {a: i for a, i in self._learned.items() if i in wanted}
        for device_id in list(self.slots):
            if device_id not in wanted:
                slot = self.slots.pop(device_id)
                if slot.task is not None:
                    slot.task.cancel()  # disabled or removed: drop the link now
                log.info("BLE device %s no longer registered/enabled", device_id)
        self._by_address = {address: device_id for device_id, (address, _) in wanted.items()}
        for device_id, (_, driver) in wanted.items():
            if device_id not in self.slots:
                self.slots[device_id] = DeviceSlot(device_id, driver, SlotState(device_id, driver.kind))

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        device_id = self._by_address.get(device.address.upper())
        if device_id is None:
            self._maybe_probe(device, adv)
            return
        slot = self.slots.get(device_id)
        if slot is None:
            return
        slot.ble_device = device
        slot.rssi = adv.rssi
        slot.sched.last_seen = time.monotonic()

    # --- devices registered by serial number only ---------------------------------------------------
    def _maybe_probe(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """An unknown address that advertises what an unlocated serial-registered device would: queue a
        short probe connection to read its serial number (at most once per ``PROBE_RETRY_S``)."""
        unlocated = {driver.name for device_id, driver in self._by_serial.values() if device_id not in self.slots}
        if not unlocated:
            return
        driver = self._drivers.match(adv.service_uuids, adv.local_name)
        if driver is None or driver.name not in unlocated:
            return
        address = device.address.upper()
        if time.monotonic() - self._probed.get(address, -1e18) < PROBE_RETRY_S:
            return
        self._probe_queue[address] = device

    def _start_probe(self, tg: asyncio.TaskGroup) -> None:
        busy = sum(1 for s in self.slots.values() if s.sched.connected)
        if self._probing or not self._probe_queue or busy >= self._cfg.max_connections:
            return
        address, device = self._probe_queue.popitem()
        self._probed[address] = time.monotonic()
        self._probing = True
        tg.create_task(self._probe(address, device), name=f"ble-probe-{address}")

    async def _probe(self, address: str, device: BLEDevice) -> None:
        client = BleakClient(device, timeout=self._cfg.connect_timeout_s, **self._stack.client_kwargs())
        try:
            await asyncio.wait_for(client.connect(), timeout=self._cfg.connect_timeout_s + 1)
            try:
                raw = await read_optional(client, STRING_UUIDS["serial_number"], self._cfg.gatt_timeout_s)
            finally:
                with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                    await asyncio.wait_for(client.disconnect(), timeout=STOP_TIMEOUT_S)
            serial = None if raw is None else decode_string(raw)
        except (BleakError, TimeoutError, OSError, EOFError, PayloadError) as e:
            log.debug("BLE probe of %s failed: %s", address, e)
            return
        finally:
            self._probing = False
        found = self._by_serial.get(serial) if serial is not None else None
        if found is None:
            log.debug("BLE probe: %s is not a registered device", address)
            return
        self._learned[address] = found[0]
        log.info("BLE device %s (registered by serial number) found at %s", found[0], address)
        self._refresh_devices()
        slot = self.slots.get(found[0])
        if slot is not None:
            slot.ble_device = device
            slot.sched.last_seen = time.monotonic()

    # --- one connection ----------------------------------------------------------------------------
    async def _connection(self, slot: DeviceSlot) -> None:
        outcome: str | None = None
        try:
            outcome = await self._connect_and_run(slot)
        except asyncio.CancelledError:
            raise
        except IdentityMismatch as e:
            outcome = "identity_mismatch"
            slot.last_error = str(e)
            log.error("BLE device %s: %s — not used", slot.device_id, e)
        except (BleakError, TimeoutError, OSError, EOFError, GatewayError) as e:
            outcome = "timeout" if isinstance(e, TimeoutError) else "error"
            slot.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            log.warning("BLE device %s: %s", slot.device_id, slot.last_error)
        except Exception as e:  # a driver bug must not take the other devices down: counted, logged, retried
            outcome = "driver_error"
            slot.last_error = f"{type(e).__name__}: {e}"
            log.exception("BLE device %s: driver %s failed", slot.device_id, slot.driver.name)
        finally:
            slot.sched.connected = False
            slot.task = None
        now = time.monotonic()
        if outcome is None:  # a complete turn (store) or a clean end of a stream
            slot.sched.failures = 0
            slot.sched.next_attempt = now
            slot.sched.last_turn_done = now
            return
        self._metrics.ble_connect_failures.labels(reason=outcome).inc()
        delay = backoff_delay(
            slot.sched.failures,
            initial_s=self._cfg.reconnect_initial_s,
            max_s=self._cfg.reconnect_max_s,
            rng=self._rng,
        )
        slot.sched.failures += 1
        slot.sched.next_attempt = now + delay

    async def _connect_and_run(self, slot: DeviceSlot) -> str | None:
        """Connect, read clock/identity/battery, run the driver's session. Returns None when the session
        ended as planned, or the reason the connection ended early (raises on errors)."""
        target: BLEDevice | str = slot.ble_device if slot.ble_device is not None else slot.device_id
        lost = asyncio.Event()
        client = BleakClient(
            target,
            disconnected_callback=lambda _c: lost.set(),
            timeout=self._cfg.connect_timeout_s,
            **self._stack.client_kwargs(),
        )
        await asyncio.wait_for(client.connect(), timeout=self._cfg.connect_timeout_s + 1)
        self._metrics.ble_connects.inc()
        if slot.connects:
            self._metrics.ble_reconnects.inc()
        slot.connects += 1
        self._metrics.ble_connected.inc()
        slot.connected_since_ns = time.time_ns()
        level = logging.DEBUG if slot.driver.kind is DriverKind.STORE else logging.INFO  # turns are frequent
        log.log(level, "BLE device %s connected (%s)", slot.device_id, slot.driver.name)
        ctx: DeviceContext | None = None
        try:
            device = self._registry.get(slot.device_id)
            info = await read_connect_info(
                client,
                slot.device_id,
                expected_serial=None if device is None else device.identities.get("serial"),
                timeout_s=self._cfg.gatt_timeout_s,
                gateway_unsynced=not self._clock.synced(),
            )
            slot.info = info
            if info.clock.skew_ns is not None:
                self._metrics.ble_clock_drift.labels(device=slot.device_id).set(info.clock.skew_ns / 1e9)
            ctx = DeviceContext(
                slot.device_id,
                slot.driver.name,
                info.clock,
                self._committer,
                self._registry,
                self._metrics,
                slot.live,
                gatt_timeout_s=self._cfg.gatt_timeout_s,
                racp_timeout_s=self._cfg.racp_timeout_s,
            )
            if info.clock.skew_ns is not None:
                self._registry.set_clock_skew(slot.device_id, info.clock.skew_ns)
            if info.battery is not None:
                ctx.commit_nowait([info.battery])
            session = slot.driver.session(client, ctx)
            slot.last_error = None
            return await self._run_session(slot, session, lost)
        finally:
            slot.connected_since_ns = 0
            self._metrics.ble_connected.dec()
            self._metrics.ble_disconnects.inc()
            if ctx is not None:
                await ctx.drain(STOP_TIMEOUT_S)
            with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                await asyncio.wait_for(client.disconnect(), timeout=STOP_TIMEOUT_S)

    async def _run_session(self, slot: DeviceSlot, session: Any, lost: asyncio.Event) -> str | None:
        run = asyncio.ensure_future(session.run())
        lost_wait = asyncio.ensure_future(lost.wait())
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        turn = self._cfg.store_turn_s if slot.driver.kind is DriverKind.STORE else None
        try:
            done, _ = await asyncio.wait({run, lost_wait, stop_wait}, timeout=turn, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost_wait.cancel()
            stop_wait.cancel()
        if run in done:
            exc = _leaf(run.exception())
            if isinstance(exc, (BackpressureError, ShuttingDownError)):
                log.info("BLE device %s: turn ended early: %s", slot.device_id, exc)
                return "backpressure"
            if exc is not None:
                raise exc
            return None
        # the link dropped, the gateway stops, or a store turn ran out: stop the session politely
        if not lost.is_set():
            with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                await asyncio.wait_for(session.stop(), timeout=STOP_TIMEOUT_S)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError, BleakError, TimeoutError, OSError, EOFError, GatewayError):
            await run
        if lost.is_set():
            return "disconnected"
        if self._stopping.is_set():
            return None
        return "turn_timeout"

    # --- status ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "scanning": self.scanning,
            "max_connections": self._cfg.max_connections,
            "pairing_window_s": round(self.pairing.window_remaining_s(), 1),
            "devices": {
                s.device_id: {
                    "driver": s.driver.name,
                    "connected": s.connected_since_ns != 0,
                    "connecting": s.sched.connected and s.connected_since_ns == 0,
                    "connected_since_ns": s.connected_since_ns or None,
                    "rssi": s.rssi,
                    "failures": s.sched.failures,
                    "connects": s.connects,
                    "slot": str(s.driver.kind),
                    "last_error": s.last_error,
                    **(s.info.status() if s.info is not None else {}),
                }
                for s in self.slots.values()
            },
        }


def _leaf(exc: BaseException | None) -> BaseException | None:
    """The first real error inside (nested) exception groups: a session running a TaskGroup raises one."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
