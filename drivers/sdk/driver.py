"""The driver protocol: what a BLE device driver is, and what the gateway gives its sessions.

A driver is a small object registered under a name in the ``ds4h_gateway.drivers`` entry-point group.
It declares what it matches (service UUIDs, optionally name prefixes) and whether its devices stream
(they hold a connection slot) or store and forward (glucose meters: short turns). For every
connection the gateway's BLE manager calls :meth:`Driver.session` with a connected
:class:`bleak.BleakClient` and a :class:`SessionContext`; the session subscribes, runs control-point
flows, and hands batches to :meth:`SessionContext.commit`, which returns only once they are durably
committed. Sessions use bleak's public API only; everything else (slots, reconnects, clocks, storage)
is the gateway's job.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from drivers.sdk.clock import DeviceClock
from drivers.sdk.gatt import normalize_uuid

if TYPE_CHECKING:
    from bleak import BleakClient

    from gateway.model import Batch


class DriverKind(enum.StrEnum):
    STREAM = "stream"
    """Live data (heart rate, ECG, continuous SpO2): holds a connection slot while it streams."""
    STORE = "store"
    """Store and forward (glucose meter, CGM backfill, BP cuff): connects for a turn, collects, leaves."""


@dataclass(frozen=True, slots=True)
class Match:
    """What a driver matches in an advertisement or a discovered GATT table."""

    service_uuids: frozenset[str]
    """Any of these service UUIDs (16-bit ``'180d'`` or full form; normalised) selects the driver."""
    name_prefixes: tuple[str, ...] = ()
    """If set, the advertised local name must also start with one of these (e.g. ``'Polar H10'``)."""
    priority: int = 0
    """Higher wins when several drivers match (a vendor driver over a generic profile)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_uuids", frozenset(normalize_uuid(u) for u in self.service_uuids))

    def matches(self, service_uuids: Sequence[str], name: str | None) -> bool:
        if not self.service_uuids.intersection(normalize_uuid(u) for u in service_uuids):
            return False
        return not self.name_prefixes or (name is not None and name.startswith(self.name_prefixes))


class Session(Protocol):
    """One connection's work. ``run`` returns when a store-and-forward turn is complete; streaming
    sessions run until cancelled. ``stop`` is called (with a timeout) before a planned disconnect."""

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class SessionContext(Protocol):
    """What the gateway offers a session. Implemented by ``gateway.ble``."""

    @property
    def device_id(self) -> str: ...

    @property
    def clock(self) -> DeviceClock:
        """The device clock measured at connect (Current Time Service), or an uncorrected one."""
        ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...

    @property
    def gatt_timeout_s(self) -> float:
        """Longest wait for any one read, write, subscription or control-point answer."""
        ...

    @property
    def racp_timeout_s(self) -> float:
        """A record transfer with no progress for this long is aborted."""
        ...

    def now_ns(self) -> int:
        """The gateway's receive time (UTC ns)."""
        ...

    async def commit(self, batches: Sequence[Batch]) -> None:
        """Commit durably; returns after the outbox COMMIT (duplicates count as committed).

        Raises ``gateway.errors.BackpressureError`` when the outbox cannot take them now: the session
        must not advance its watermark and should end its turn (the data stays on the device)."""
        ...

    def commit_nowait(self, batches: Sequence[Batch]) -> None:
        """Hand live batches over without waiting (notifications cannot be refused or replayed;
        anything the gateway must drop is counted, never silent)."""
        ...

    def reject(self, reason: str, detail: str, payload: bytes) -> None:
        """Quarantine one bad notification under ``reason`` (counted; committed with the next group)."""
        ...

    def live(self, values: Sequence[object]) -> None:
        """Values for live display only (e.g. intermediate cuff pressure): never stored as results."""
        ...

    def load_state(self, key: str) -> str | None:
        """A value this driver saved for this device (e.g. the last committed RACP sequence)."""
        ...

    def save_state(self, key: str, value: str) -> None:
        """Persist a value durably (call it only after the data it describes is committed)."""
        ...


@runtime_checkable
class Driver(Protocol):
    """A BLE device driver, registered under ``name`` in the ``ds4h_gateway.drivers`` group."""

    name: str
    kind: DriverKind
    match: Match

    def session(self, client: BleakClient, ctx: SessionContext) -> Session: ...
