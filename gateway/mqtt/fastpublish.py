"""A lean reader for the one packet the gateway receives by the thousand: PUBLISH with QoS 0 or 1.

paho builds an ``MQTTMessage`` and a full ``Properties`` object for every PUBLISH and reads its header
byte by byte (about 70 µs per ECG frame here); this parser takes the same packet straight from the
receive buffer in a few µs. Anything it does not handle plainly — another packet type, QoS 2, a packet
not yet fully buffered, a topic alias, an unknown property, any inconsistency — is left to paho, which
stays the reference (``tests/test_mqtt_fastpublish.py`` checks both agree on every packet shape).
"""

from __future__ import annotations

from dataclasses import dataclass

PUBLISH = 0x30

# MQTT v5 property identifiers by the shape of their value (MQTT 5.0 §2.2.2.2)
_BYTE = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_U16 = frozenset({0x13, 0x21, 0x22})  # 0x23 (topic alias) is left to paho
_U32 = frozenset({0x02, 0x11, 0x18, 0x27})
_VARINT = frozenset({0x0B})
_STRING = frozenset({0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F})  # 0x03 (content type) is read
_BINARY = frozenset({0x09, 0x16})
_PAIR = 0x26
_CONTENT_TYPE = 0x03


@dataclass(slots=True)
class PublishProperties:
    """The one property the gateway reads (``ContentType``, as paho names it)."""

    ContentType: str | None = None


@dataclass(slots=True)
class Publish:
    """What the source reads of a message: the attributes of paho's ``MQTTMessage`` it uses."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    properties: PublishProperties | None
    retain: bool = False
    dup: bool = False


def _varint(buf: bytearray, pos: int, end: int) -> tuple[int, int] | None:
    value = 0
    mult = 1
    for _ in range(4):
        if pos >= end:
            return None
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if b < 0x80:
            return value, pos
        mult *= 128
    return None


def parse_publish(buf: bytearray, v5: bool) -> tuple[Publish, int] | None:
    """The PUBLISH at the start of ``buf`` and its length in bytes, or None to let paho read the packet."""
    n = len(buf)
    if n < 2:
        return None
    b0 = buf[0]
    qos = (b0 >> 1) & 3
    if b0 & 0xF0 != PUBLISH or qos > 1:
        return None
    head = _varint(buf, 1, n)
    if head is None:
        return None
    length, p = head
    end = p + length
    if end > n or p + 2 > end:
        return None
    tlen = (buf[p] << 8) | buf[p + 1]
    p += 2
    if tlen == 0 or p + tlen > end:
        return None
    try:
        topic = buf[p : p + tlen].decode("utf-8")
    except UnicodeDecodeError:
        return None
    p += tlen
    mid = 0
    if qos:
        if p + 2 > end:
            return None
        mid = (buf[p] << 8) | buf[p + 1]
        p += 2
    props: PublishProperties | None = None
    if v5:
        plen = _varint(buf, p, end)
        if plen is None:
            return None
        size, p = plen
        pend = p + size
        if pend > end:
            return None
        props = PublishProperties()
        while p < pend:
            pid = buf[p]
            p += 1
            if pid == _CONTENT_TYPE or pid in _STRING or pid in _BINARY:
                if p + 2 > pend:
                    return None
                slen = (buf[p] << 8) | buf[p + 1]
                p += 2
                if p + slen > pend:
                    return None
                if pid == _CONTENT_TYPE:
                    try:
                        props.ContentType = buf[p : p + slen].decode("utf-8")
                    except UnicodeDecodeError:
                        return None
                p += slen
            elif pid in _BYTE:
                p += 1
            elif pid in _U16:
                p += 2
            elif pid in _U32:
                p += 4
            elif pid in _VARINT:
                v = _varint(buf, p, pend)
                if v is None:
                    return None
                p = v[1]
            elif pid == _PAIR:
                for _ in range(2):
                    if p + 2 > pend:
                        return None
                    slen = (buf[p] << 8) | buf[p + 1]
                    p += 2 + slen
            else:
                return None  # a topic alias or an unknown property: paho's business
            if p > pend:
                return None
    return Publish(mid, qos, topic, bytes(buf[p:end]), props, bool(b0 & 1), bool(b0 & 8)), end
