"""Run a set of simulated peripherals: in-process on a bumble ``LocalLink`` (tests), or each on its
own HCI transport (e.g. ``tcp-client:127.0.0.1:PORT`` to a hub process that owns the link)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from firmware_sim.ble.peripheral import ADVERTISING_INTERVAL_MS, SimPeripheral

LE_ACL_DATA_PACKET_LENGTH = 251


class _Closer(Protocol):
    async def __call__(self) -> None: ...


def local_controller(link: LocalLink, name: str) -> Controller:
    """A virtual controller on ``link`` with 251-byte LE ACL packets. Call inside the running loop."""
    controller = Controller(name, link=link)
    controller.le_acl_data_packet_length = LE_ACL_DATA_PACKET_LENGTH
    return controller


def local_device(link: LocalLink, name: str, address: str) -> tuple[Device, Controller]:
    """A bumble device with its own controller on ``link`` (not powered on)."""
    controller = local_controller(link, name)
    device = Device(name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller)))
    return device, controller


class BleSimulation:
    """Async context manager running ``peripherals`` until exit.

    Exactly one of ``link`` (in-process) or ``transport`` (a bumble transport spec opened once per
    device) must be given. Build it inside the running event loop.
    """

    def __init__(
        self,
        peripherals: Sequence[SimPeripheral],
        *,
        link: LocalLink | None = None,
        transport: str | None = None,
        advertising_interval_ms: float = ADVERTISING_INTERVAL_MS,
    ) -> None:
        if (link is None) == (transport is None):
            raise ValueError("give exactly one of link= or transport=")
        self.peripherals = list(peripherals)
        self.link = link
        self.transport = transport
        self.advertising_interval_ms = advertising_interval_ms
        self._closers: list[_Closer] = []

    async def _attach(self, peripheral: SimPeripheral) -> None:
        ident = peripheral.identity
        if self.link is not None:
            link = self.link
            device, controller = local_device(link, ident.name, ident.address)

            async def close_local() -> None:
                await peripheral.stop()
                link.remove_controller(controller)

            self._closers.append(close_local)
        else:
            assert self.transport is not None
            transport = await open_transport(self.transport)
            device = Device.with_hci(ident.name, Address(ident.address), transport.source, transport.sink)

            async def close_transport() -> None:
                try:
                    await peripheral.stop()
                finally:
                    await transport.close()

            self._closers.append(close_transport)
        await peripheral.start(device, advertising_interval_ms=self.advertising_interval_ms)

    async def __aenter__(self) -> BleSimulation:
        try:
            for peripheral in self.peripherals:
                await self._attach(peripheral)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                await close()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
