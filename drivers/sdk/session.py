"""Building blocks for driver sessions: notification streams, optional reads, waiting with timeouts.

Sessions use bleak's public API only. A decode error in one notification quarantines that
notification (counted under its reason) and the stream goes on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.sdk.driver import SessionContext
from gateway.errors import PayloadError
from gateway.model import Batch, Reading, SourceKey, Waveform

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic

Points = tuple[Sequence[Reading], Sequence[Waveform]]
Decoder = Callable[[bytes, int], Points | None]
"""Notification bytes and receive time → readings and waveforms to commit (None: nothing to store)."""


def has_characteristic(client: BleakClient, uuid: str) -> bool:
    return client.services.get_characteristic(uuid) is not None


async def read_optional(client: BleakClient, uuid: str, timeout_s: float) -> bytes | None:
    """Read a characteristic if the device has it (None otherwise); bounded by ``timeout_s``."""
    if not has_characteristic(client, uuid):
        return None
    return bytes(await asyncio.wait_for(client.read_gatt_char(uuid), timeout=timeout_s))


@dataclass(frozen=True, slots=True)
class Subscription:
    uuid: str
    decode: Decoder


class NotificationStream:
    """A streaming session: subscribe to each characteristic, commit every notification as one batch
    (source key: this connection's start time and a counter), run until cancelled, unsubscribe on stop."""

    def __init__(
        self,
        client: BleakClient,
        ctx: SessionContext,
        kind: str,
        subscriptions: Sequence[Subscription],
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.kind = kind
        self.subscriptions = subscriptions
        self.timeout_s = ctx.gatt_timeout_s
        self._epoch = ctx.now_ns()
        self._counter = itertools.count(1)
        self._subscribed: list[str] = []

    async def prepare(self) -> None:
        """Override for reads or control-point writes before subscribing."""

    async def started(self) -> None:
        """Override for control-point writes after subscribing (e.g. start a stream)."""

    async def run(self) -> None:
        await self.prepare()
        for sub in self.subscriptions:
            await asyncio.wait_for(self.client.start_notify(sub.uuid, self._handler(sub)), timeout=self.timeout_s)
            self._subscribed.append(sub.uuid)
        await self.started()
        await asyncio.Event().wait()  # stream until the manager cancels or stops us

    async def stop(self) -> None:
        for uuid in reversed(self._subscribed):
            await asyncio.wait_for(self.client.stop_notify(uuid), timeout=self.timeout_s)
        self._subscribed.clear()

    def _handler(self, sub: Subscription) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self.deliver(sub.decode, bytes(data))

        return on_notify

    def deliver(self, decode: Decoder, data: bytes) -> None:
        received = self.ctx.now_ns()
        try:
            points = decode(data, received)
        except PayloadError as e:
            self.ctx.reject(e.reason, str(e), data)
            return
        if points is None:
            return
        readings, waveforms = points
        if not readings and not waveforms:
            return
        key = SourceKey(self.ctx.device_id, ("n", self._epoch, next(self._counter)))
        self.ctx.commit_nowait([Batch(key, received, tuple(readings), tuple(waveforms), kind=self.kind)])
