"""Who gets a BLE connection slot next: a pure function of the devices' states and the time.

Adapters hold only a handful of links. Streaming devices (heart-rate straps, ECG) keep their slot
while they stream; store-and-forward devices (glucose meters) get short turns, round robin, the one
whose last complete turn is oldest first. ``reserved_for_store`` slots are never given to streaming
devices while any store-and-forward device is registered, so a ward full of straps cannot starve the
glucose meters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drivers.sdk.driver import DriverKind


@dataclass(slots=True)
class SlotState:
    """The scheduler's view of one registered, matched device (times are ``time.monotonic()``)."""

    device_id: str
    kind: DriverKind
    last_seen: float = -1e18
    """When it was last advertised."""
    next_attempt: float = 0.0
    """No connect before this (reconnect backoff)."""
    last_turn_done: float = -1e18
    """When its last complete store-and-forward turn ended."""
    connected: bool = False
    failures: int = 0
    """Consecutive failed connects or sessions (drives the backoff)."""


def pick(
    states: Iterable[SlotState],
    now: float,
    *,
    max_connections: int,
    reserved_for_store: int,
    seen_timeout_s: float,
    store_interval_s: float,
) -> list[str]:
    """The device ids to connect now, in order, filling free slots."""
    all_states = list(states)
    busy = [s for s in all_states if s.connected]
    free = max_connections - len(busy)
    if free <= 0:
        return []
    any_store = any(s.kind is DriverKind.STORE for s in all_states)
    reserve = min(reserved_for_store, max_connections - 1) if any_store else 0
    stream_busy = sum(1 for s in busy if s.kind is DriverKind.STREAM)
    stream_room = max(0, max_connections - reserve - stream_busy)

    def ready(s: SlotState) -> bool:
        return not s.connected and now - s.last_seen <= seen_timeout_s and now >= s.next_attempt

    streams = sorted(
        (s for s in all_states if s.kind is DriverKind.STREAM and ready(s)), key=lambda s: (s.failures, s.device_id)
    )
    stores = sorted(
        (
            s
            for s in all_states
            if s.kind is DriverKind.STORE and ready(s) and now - s.last_turn_done >= store_interval_s
        ),
        key=lambda s: (s.last_turn_done, s.failures, s.device_id),
    )
    chosen = [s.device_id for s in streams[: min(free, stream_room)]]
    free -= len(chosen)
    chosen += [s.device_id for s in stores[:free]]
    return chosen
