"""The MQTT topic tree (docs/mqtt.md): one subtree per device, one for the gateway's own status."""

from __future__ import annotations

from typing import Literal

from gateway.model import DEVICE_ID_RE

PREFIX = "ds4h/v1/devices/"
READINGS_FILTER = PREFIX + "+/readings"
STATUS_FILTER = PREFIX + "+/status"

Leaf = Literal["readings", "status"]


def readings_topic(device_id: str) -> str:
    return f"{PREFIX}{device_id}/readings"


def ack_topic(device_id: str) -> str:
    return f"{PREFIX}{device_id}/ack"


def status_topic(device_id: str) -> str:
    return f"{PREFIX}{device_id}/status"


def gateway_status_topic(name: str) -> str:
    return f"ds4h/v1/gateway/{name}/status"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """``ds4h/v1/devices/{id}/{leaf}`` → (device id, leaf); ``None`` for anything else (or a bad id)."""
    if not topic.startswith(PREFIX):
        return None
    rest = topic[len(PREFIX) :]
    device_id, sep, leaf = rest.partition("/")
    if not sep or "/" in leaf or not DEVICE_ID_RE.fullmatch(device_id):
        return None
    return device_id, leaf
