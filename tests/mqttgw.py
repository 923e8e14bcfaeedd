"""Helpers for MQTT tests: SenML frames as a device sends them, raw publishing, reading the outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.senml import CBOR, JSON, encode
from gateway.outbox.store import OutboxStore, open_outbox
from gateway.pipeline import Gateway
from tests.services import Mosquitto

T0 = 1_780_000_000.0
"""An absolute SenML time (s) in the past of any test run, after 2026-05."""


def hr_frame(
    device: str, boot: str, seq: int, *, bpm: float = 72.0, unacked: int | None = None
) -> list[dict[str, Any]]:
    return [
        {"bn": f"urn:dev:ds4h:{device}:", "bt": T0 + seq, "n": "boot", "vs": boot},
        {"n": "seq", "v": seq},
        {"n": "unacked", "v": seq if unacked is None else unacked},
        {"n": "heart-rate", "u": "1/s", "v": bpm / 60},
    ]


def cbor_pack(records: list[dict[str, Any]]) -> bytes:
    return encode(records, CBOR)


def json_pack(records: list[dict[str, Any]]) -> bytes:
    return encode(records, JSON)


def props(content_type: str | None) -> Properties | None:
    if content_type is None:
        return None
    p = Properties(PacketTypes.PUBLISH)
    p.ContentType = content_type
    return p


def device_client(broker: Mosquitto, client_id: str, *, v5: bool = True) -> aiomqtt.Client:
    """A plain (loopback, no TLS) client standing in for a device."""
    version = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    return aiomqtt.Client(broker.host, broker.port, identifier=client_id, protocol=version)


async def publish(
    client: aiomqtt.Client, device: str, payload: bytes, content_type: str | None = "application/senml+cbor"
) -> None:
    await client.publish(
        f"ds4h/v1/devices/{device}/readings", payload, qos=1, properties=props(content_type), timeout=10
    )


def committed_keys(state_dir: Path) -> list[str]:
    conn = open_outbox(state_dir, readonly=True)
    try:
        return [r[0] for r in conn.execute("SELECT source_key FROM batches ORDER BY id")]
    finally:
        conn.close()


def quarantine_counts(state_dir: Path) -> dict[str, int]:
    conn = open_outbox(state_dir, readonly=True)
    try:
        return OutboxStore(conn).quarantine_counts()
    finally:
        conn.close()


def mqtt_count(gw: Gateway, outcome: str) -> int:
    v = gw.metrics.registry.get_sample_value("ds4h_mqtt_messages_total", {"outcome": outcome})
    return int(v or 0)
