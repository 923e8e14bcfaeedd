"""The device ack watermark (gateway/mqtt/acks.py): the highest seq with every earlier frame settled."""

from __future__ import annotations

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from gateway.mqtt.acks import AckTracker


@given(st.permutations(list(range(60))), st.integers(0, 59))
def test_watermark_is_the_settled_prefix_whatever_the_order(order: list[int], cut: int) -> None:
    t = AckTracker()
    settled: set[int] = set()
    for i, seq in enumerate(order[:cut]):
        t.settle("d", "b", seq, None, float(i))
        settled.add(seq)
    expected = -1
    while expected + 1 in settled:
        expected += 1
    assert t.watermarks("d").get("b", -1) == expected


def test_unacked_lets_a_restarted_gateway_skip_what_the_device_released() -> None:
    t = AckTracker()
    t.settle("d", "b", 102, 100, 1.0)
    assert t.watermarks("d") == {"b": 99}
    t.settle("d", "b", 100, 100, 2.0)
    t.settle("d", "b", 101, 100, 3.0)
    assert t.watermarks("d") == {"b": 102}
    assert t.take_dirty() == ["d"] and t.take_dirty() == []


def test_payload_lists_recent_boots_first_and_drops_old_ones() -> None:
    t = AckTracker(max_boots=2, boot_ttl_s=100)
    t.settle("d", "old", 0, None, 1.0)
    t.settle("d", "mid", 0, None, 2.0)
    t.settle("d", "new", 5, 5, 3.0)
    assert cbor2.loads(t.payload("d")) == [{"boot": "new", "seq": 5}, {"boot": "mid", "seq": 0}]
    t.settle("d", "later", 0, None, 500.0)  # 'mid' and 'new' are past the TTL
    assert cbor2.loads(t.payload("d")) == [{"boot": "later", "seq": 0}]
    assert t.devices() == ["d"]


def test_read_header_of_a_rejected_frame() -> None:
    import json

    from drivers.senml.profile import read_header

    bad_unit = [
        {"bn": "urn:dev:ds4h:d1:", "n": "boot", "vs": "b7"},
        {"n": "seq", "v": 12},
        {"n": "unacked", "v": 10},
        {"n": "heart-rate", "u": "Pa", "v": 1.2},
    ]
    assert read_header(json.dumps(bad_unit).encode(), "application/senml+json") == ("b7", 12, 10)
    assert read_header(b"\xff\x00 garbage", None) is None
    assert read_header(json.dumps([{"n": "boot", "vs": "bad id!"}, {"n": "seq", "v": 1}]).encode(), None) is None


@given(st.binary(max_size=300))
def test_read_header_never_raises(data: bytes) -> None:
    from drivers.senml.profile import read_header

    read_header(data, None)
