"""The lean PUBLISH reader agrees with paho on every packet shape it accepts, and leaves the rest to paho."""

from __future__ import annotations

import struct
from typing import Any

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqtt.fastpublish import parse_publish


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, qos: int, mid: int, props: bytes | None, retain: bool, dup: bool) -> bytes:
    t = topic.encode()
    var = (
        struct.pack(">H", len(t)) + t + (struct.pack(">H", mid) if qos else b"") + (props if props is not None else b"")
    )
    body = var + payload
    return bytes([0x30 | qos << 1 | int(retain) | int(dup) << 3]) + varint(len(body)) + body


def paho_reads(packet: bytes, v5: bool) -> list[Any]:
    """What paho's own reader makes of ``packet`` (fed through its private socket hook)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    client.manual_ack_set(True)
    got: list[Any] = []
    client.on_message = lambda _c, _u, m: got.append(m)
    buf = bytearray(packet)

    def recv(n: int) -> bytes:
        if not buf:
            raise BlockingIOError
        out = bytes(buf[:n])
        del buf[:n]
        return out

    client._sock_recv = recv  # type: ignore[method-assign,assignment]
    while buf:
        assert client._packet_read() == paho.MQTT_ERR_SUCCESS
    return got


topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=40)
small_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@st.composite
def v5_properties(draw: st.DrawFn) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if draw(st.booleans()):
        props.ContentType = draw(small_text)
    if draw(st.booleans()):
        props.PayloadFormatIndicator = draw(st.integers(0, 1))
    if draw(st.booleans()):
        props.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        props.ResponseTopic = draw(small_text.filter(bool))
    if draw(st.booleans()):
        props.CorrelationData = draw(st.binary(max_size=16))
    if draw(st.booleans()):
        props.SubscriptionIdentifier = [draw(st.integers(1, 2**28 - 1))]
    for _ in range(draw(st.integers(0, 2))):
        pairs = getattr(props, "UserProperty", [])
        props.UserProperty = [*pairs, (draw(small_text), draw(small_text))]
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return packed


@settings(max_examples=400, deadline=None)
@given(
    topic=topics,
    payload=st.binary(max_size=2000),
    qos=st.integers(0, 1),
    mid=st.integers(1, 65535),
    v5=st.booleans(),
    props=v5_properties(),
    retain=st.booleans(),
)
def test_the_lean_reader_agrees_with_paho(
    topic: str, payload: bytes, qos: int, mid: int, v5: bool, props: bytes, retain: bool
) -> None:
    packet = publish(topic, payload, qos, mid, props if v5 else None, retain, dup=False)
    (want,) = paho_reads(packet, v5)
    got = parse_publish(bytearray(packet + b"\xe0\x00"), v5)  # followed by another packet
    assert got is not None
    msg, size = got
    assert size == len(packet)
    assert (msg.topic, msg.payload, msg.qos, msg.mid, msg.retain) == (
        want.topic,
        want.payload,
        want.qos,
        want.mid if qos else 0,
        want.retain,
    )
    assert (msg.properties is None) == (not v5)
    if v5:
        assert msg.properties is not None
        assert msg.properties.ContentType == getattr(want.properties, "ContentType", None)


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=300), qos=st.integers(0, 1), v5=st.booleans(), props=v5_properties())
def test_a_partial_packet_is_left_to_paho(payload: bytes, qos: int, v5: bool, props: bytes) -> None:
    packet = publish("ds4h/v1/devices/d/readings", payload, qos, 7, props if v5 else None, False, False)
    for cut in range(len(packet)):
        assert parse_publish(bytearray(packet[:cut]), v5) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_raise(data: bytes, v5: bool) -> None:
    got = parse_publish(bytearray(data), v5)
    if got is not None:
        assert 0 < got[1] <= len(data)


def test_what_it_leaves_to_paho() -> None:
    qos2 = publish("t", b"x", 2, 5, None, False, False)
    assert parse_publish(bytearray(qos2), False) is None
    assert parse_publish(bytearray(b"\x40\x02\x00\x05"), False) is None  # a PUBACK
    alias = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    alias.TopicAlias = 3
    aliased = publish("t", b"x", 1, 5, alias.pack(), False, False)  # type: ignore[no-untyped-call]
    assert parse_publish(bytearray(aliased), True) is None
