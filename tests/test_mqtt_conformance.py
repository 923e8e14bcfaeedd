"""Conformance of the private aiomqtt/paho hooks the MQTT source relies on (gateway/mqtt/connection.py).

aiomqtt acknowledges QoS 1 messages on receipt; the gateway must acknowledge after COMMIT. It reaches
into aiomqtt 2.5.1 for the paho client (manual acks, its on_message) and the disconnect future. If an
aiomqtt upgrade changes any of that, these tests fail before the gateway silently acks early.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from gateway.config import MqttSection
from gateway.mqtt.connection import V5, V311, build_client, disconnected, paho_client
from tests.services import Mosquitto


def test_pinned_version() -> None:
    assert version("aiomqtt") == "2.5.1", "re-check gateway/mqtt/connection.py's private hooks, then move the pin"
    assert int(version("paho-mqtt").split(".")[0]) == 2


async def test_private_attributes_exist(mosquitto: Mosquitto) -> None:
    cfg = MqttSection(enabled=True, tls=False, host=mosquitto.host, port=mosquitto.port, client_id="conf-attrs")
    client = build_client(cfg, V5, None, lambda *_: None)
    inner = paho_client(client)
    assert isinstance(inner, paho.Client)
    assert callable(inner.manual_ack_set) and callable(inner.ack)
    assert isinstance(disconnected(client), asyncio.Future)
    async with client:
        assert not disconnected(client).done()


def test_paho_private_read_path_exists() -> None:
    """gateway.mqtt.connection.batch_reads drives paho's reader itself."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    for name in ("_sock_recv", "_packet_read", "_loop_rc_handle"):
        assert callable(getattr(c, name)), name
    assert paho.MQTT_ERR_AGAIN != paho.MQTT_ERR_SUCCESS
    # the lean PUBLISH reader checks paho is at a packet boundary and keeps paho's keepalive informed
    assert c._in_packet["command"] == 0
    assert c._protocol == paho.MQTTv5
    with c._msgtime_mutex:
        assert isinstance(c._last_bytes_received, float)


async def _collect(cfg: MqttSection, protocol: aiomqtt.ProtocolVersion, ack: bool, wait_s: float) -> list[bytes]:
    """Connect with the gateway's settings, collect messages for ``wait_s``, ack them or not."""
    got: list[tuple[int, bytes]] = []

    def on_message(_c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        got.append((m.mid, m.payload))

    client = build_client(cfg, protocol, None, on_message)
    async with client:
        await client.subscribe("conf/+/readings", qos=1, timeout=5)
        await asyncio.sleep(wait_s)
        if ack:
            for mid, _ in got:
                paho_client(client).ack(mid, 1)
            await asyncio.sleep(0.3)  # let the PUBACKs go out before DISCONNECT
    return [p for _, p in got]


async def _check_manual_ack(mosquitto: Mosquitto, protocol: aiomqtt.ProtocolVersion, client_id: str) -> None:
    cfg = MqttSection(enabled=True, tls=False, host=mosquitto.host, port=mosquitto.port, client_id=client_id)
    await _collect(cfg, protocol, ack=True, wait_s=0.2)  # creates the persistent session
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"{client_id}-pub") as pub:
        for i in range(5):
            await pub.publish(f"conf/{client_id}/readings", f"m{i}".encode(), qos=1)
    first = await _collect(cfg, protocol, ack=False, wait_s=0.5)
    assert sorted(first) == [f"m{i}".encode() for i in range(5)]
    again = await _collect(cfg, protocol, ack=True, wait_s=0.5)  # not acked → the broker redelivers
    assert sorted(again) == sorted(first)
    after = await _collect(cfg, protocol, ack=False, wait_s=0.5)  # acked → gone
    assert after == []


async def test_unacked_messages_are_redelivered_v5(mosquitto: Mosquitto) -> None:
    await _check_manual_ack(mosquitto, V5, "conf-v5")


async def test_unacked_messages_are_redelivered_v311(mosquitto: Mosquitto) -> None:
    await _check_manual_ack(mosquitto, V311, "conf-v311")
