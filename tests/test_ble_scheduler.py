"""The BLE slot scheduler: streaming devices hold slots, store-and-forward devices take turns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sdk.driver import DriverKind
from gateway.ble.pairing import PairingPolicy
from gateway.ble.scheduler import SlotState, pick

STREAM, STORE = DriverKind.STREAM, DriverKind.STORE


def _pick(states: list[SlotState], now: float = 100.0, **kw: float) -> list[str]:
    args = {"max_connections": 4, "reserved_for_store": 1, "seen_timeout_s": 30.0, "store_interval_s": 60.0} | kw
    return pick(states, now, **args)  # type: ignore[arg-type]


def seen(device_id: str, kind: DriverKind, **kw: object) -> SlotState:
    return SlotState(device_id, kind, last_seen=99.0, **kw)  # type: ignore[arg-type]


def test_streams_leave_the_reserved_slot_to_store_devices() -> None:
    states = [seen(f"hr-{i}", STREAM) for i in range(6)] + [seen("meter-1", STORE)]
    chosen = _pick(states)
    assert chosen == ["hr-0", "hr-1", "hr-2", "meter-1"]


def test_without_store_devices_streams_take_every_slot() -> None:
    states = [seen(f"hr-{i}", STREAM) for i in range(6)]
    assert _pick(states) == ["hr-0", "hr-1", "hr-2", "hr-3"]


def test_store_turns_go_oldest_first_and_wait_their_interval() -> None:
    states = [
        seen("meter-a", STORE, last_turn_done=50.0),
        seen("meter-b", STORE, last_turn_done=10.0),
        seen("meter-c", STORE, last_turn_done=-1e18),
        seen("meter-d", STORE, last_turn_done=90.0),  # finished 10 s ago: not before the interval
    ]
    assert _pick(states, max_connections=2, store_interval_s=30.0) == ["meter-c", "meter-b"]


def test_unseen_backing_off_and_connected_devices_are_not_picked() -> None:
    states = [
        SlotState("gone", STREAM, last_seen=10.0),
        seen("backoff", STREAM, next_attempt=200.0),
        seen("busy", STREAM, connected=True),
        seen("ready", STREAM),
    ]
    assert _pick(states) == ["ready"]


def test_no_free_slot_no_pick() -> None:
    states = [seen(f"hr-{i}", STREAM, connected=True) for i in range(4)] + [seen("meter", STORE)]
    assert _pick(states) == []


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from([STREAM, STORE]), min_size=0, max_size=40),
    connected=st.lists(st.booleans(), min_size=40, max_size=40),
    max_connections=st.integers(1, 8),
    reserved=st.integers(0, 3),
)
def test_never_more_links_than_slots(
    kinds: list[DriverKind], connected: list[bool], max_connections: int, reserved: int
) -> None:
    states = [seen(f"d{i}", k, connected=c) for i, (k, c) in enumerate(zip(kinds, connected, strict=False))]
    chosen = _pick(states, max_connections=max_connections, reserved_for_store=reserved)
    busy = sum(s.connected for s in states)
    assert len(chosen) + busy <= max_connections or not chosen
    assert len(set(chosen)) == len(chosen)
    assert not {s.device_id for s in states if s.connected} & set(chosen)
    streams_after = sum(1 for s in states if s.kind is STREAM and (s.connected or s.device_id in chosen))
    if any(s.kind is STORE for s in states) and max_connections > 1:
        # streams never grow into the reserved slots
        assert streams_after <= max_connections - min(reserved, max_connections - 1) or streams_after == sum(
            1 for s in states if s.kind is STREAM and s.connected
        )


def test_pairing_policy() -> None:
    p = PairingPolicy(secure_connections_only=True, min_key_size=16)
    assert p.decide(secure_connections=True, key_size=16) == "refused_window"
    p.open_window(60)
    assert p.decide(secure_connections=True, key_size=16) is None
    assert p.decide(secure_connections=False, key_size=16) == "refused_legacy"
    assert p.decide(secure_connections=True, key_size=7) == "refused_key_size"
    p.close_window()
    assert p.decide(secure_connections=True) == "refused_window"
