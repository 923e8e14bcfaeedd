"""A simulated 5G medical device: SenML frames over MQTT (mutual TLS), buffered until the gateway acks them.

Delivery rule (docs/mqtt.md): every frame gets (boot id, seq) and stays in the device's buffer until the
gateway's retained ack message on ``ds4h/v1/devices/{id}/ack`` says its boot's watermark covers it.
MQTT's PUBACK only means the *broker* has it: a broker that crashes before saving it loses it, so a
frame not covered within ``resend_after_s`` is published again (with backoff), and every buffered frame
is published again after a reconnect. Redeliveries are refused by the gateway as already committed.

Each frame the watermark covers is appended to the optional :class:`AckLog` (``device/boot/seq`` per
line, fsync'd), which crash tests compare with what the gateway stored.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.device_signing import COSE_CONTENT_TYPE
from firmware_sim.senml import CBOR, Header, Record, encode, frame_records

if TYPE_CHECKING:
    from firmware_sim.mqtt_loop import LoopNetwork

log = logging.getLogger(__name__)

TOPIC_PREFIX = "ds4h/v1/devices/"
RESEND_BATCH = 2000
"""Frames re-published per :meth:`MqttDevice.resend_due` call at most."""


def readings_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}{device_id}/readings"


@dataclass(frozen=True, slots=True)
class DeviceTls:
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


class AckLog:
    """Append-only log of acknowledged source keys, shared by the devices of one process."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()

    def write(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        data = ("\n".join(keys) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


@dataclass(slots=True)
class _Frame:
    t_s: float
    measurements: Sequence[Record]
    sent_at: float
    tries: int = 1


@dataclass(slots=True)
class DeviceStats:
    frames: int = 0
    published: int = 0
    resent: int = 0
    acked: int = 0
    reconnects: int = 0
    refused_full: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class _Boot:
    frames: dict[int, _Frame] = field(default_factory=dict)
    next_seq: int = 0


class MqttDevice:
    """One device: a paho client and the frame buffer. The client runs on its own network thread, or on
    an asyncio loop shared with many other devices when a :class:`~firmware_sim.mqtt_loop.LoopNetwork`
    is given (then every method must be called from that loop)."""

    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        tls: DeviceTls | None,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        content_type: str = CBOR,
        ack_log: AckLog | None = None,
        resend_after_s: float = 5.0,
        max_buffer: int = 50_000,
        keepalive_s: int = 30,
        network: LoopNetwork | None = None,
        signer: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``signer``: wraps each SenML CBOR frame in COSE_Sign1 (:mod:`firmware_sim.device_signing`)."""
        self.device_id = device_id
        self._network = network
        self._signer = signer
        self.content_type = CBOR if signer is not None else content_type
        self.stats = DeviceStats()
        self._ack_log = ack_log
        self._resend_after = resend_after_s
        self._max_buffer = max_buffer
        self._lock = threading.Lock()
        self._boots: dict[str, _Boot] = {}
        self.boot = ""
        self.reboot()
        self._resend_all = False
        self._v5 = protocol == MQTTProtocolVersion.MQTTv5
        self.connected = threading.Event()
        self.settled = threading.Condition(self._lock)
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-{device_id}",
            protocol=protocol,
            clean_session=None if self._v5 else True,
        )
        self._client.max_inflight_messages_set(200)
        self._client.max_queued_messages_set(0)
        if tls is not None:
            self._client.tls_set_context(tls.context())
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        will = b'{"state":"offline"}'
        self._client.will_set(f"{TOPIC_PREFIX}{device_id}/status", will, qos=1, retain=True)
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._props: Properties | None = None
        if self._v5:
            self._props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            self._props.ContentType = COSE_CONTENT_TYPE if signer is not None else content_type

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._network is not None:
            self._network.attach(self._client, self._host, self._port, self._keepalive)
            return
        self._client.reconnect_delay_set(1, 5)
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        self._client.loop_start()

    def close(self) -> None:
        if self.connected.is_set():
            self._client.publish(f"{TOPIC_PREFIX}{self.device_id}/status", b'{"state":"offline"}', qos=1, retain=True)
        self.disconnect()

    def disconnect(self) -> None:
        """Leave the broker (cleanly) and stop reconnecting until :meth:`reconnect`."""
        if self._network is not None:
            self._network.detach(self._client)
        else:
            self._client.disconnect()
            self._client.loop_stop()
        self.connected.clear()

    def reconnect(self) -> None:
        """Connect again after :meth:`disconnect`."""
        if self._network is not None:
            self._network.reattach(self._client)
        else:
            self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
            self._client.loop_start()

    def reboot(self) -> None:
        """A new boot id and seq 0; frames of earlier boots stay buffered (as in the device's flash)."""
        with self._lock:
            self.boot = secrets.token_hex(6)
            self._boots[self.boot] = _Boot()

    # --- paho callbacks (network thread) -----------------------------------------------------------
    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("%s: connection refused: %s", self.device_id, rc)
            return
        client.subscribe(f"{TOPIC_PREFIX}{self.device_id}/ack", qos=1)
        client.publish(f"{TOPIC_PREFIX}{self.device_id}/status", b'{"state":"online"}', qos=1, retain=True)
        with self._lock:
            self._resend_all = True
        if self.stats.published:
            self.stats.reconnects += 1
        self.connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
        self.connected.clear()

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        try:
            entries = cbor2.loads(m.payload)
        except (ValueError, cbor2.CBORDecodeError):
            log.warning("%s: unreadable ack message", self.device_id)
            return
        if not isinstance(entries, list):
            return
        acked: list[str] = []
        with self._lock:
            for e in entries:
                if not isinstance(e, dict):
                    continue
                boot, seq = e.get("boot"), e.get("seq")
                if not isinstance(boot, str) or not isinstance(seq, int) or boot not in self._boots:
                    continue
                b = self._boots[boot]
                done: list[int] = []
                for s in b.frames:  # insertion order is seq order
                    if s > seq:
                        break
                    done.append(s)
                for s in done:
                    del b.frames[s]
                acked += [f"{self.device_id}/{boot}/{s}" for s in done]
                if not b.frames and boot != self.boot:
                    del self._boots[boot]
            self.stats.acked += len(acked)
            if acked:
                self.settled.notify_all()
        if self._ack_log is not None:
            self._ack_log.write(acked)

    # --- producing ---------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:
            return sum(len(b.frames) for b in self._boots.values())

    def send(self, t_s: float, measurements: Sequence[Record]) -> bool:
        """Build, buffer and publish one frame; False (nothing sent) when the buffer is full."""
        with self._lock:
            if sum(len(b.frames) for b in self._boots.values()) >= self._max_buffer:
                self.stats.refused_full += 1
                return False
            b = self._boots[self.boot]
            seq = b.next_seq
            b.next_seq += 1
            b.frames[seq] = _Frame(t_s, measurements, time.monotonic())
            payload = self._encode(self.boot, b, seq)
            self.stats.frames += 1
        self._publish(payload)
        return True

    def _encode(self, boot: str, b: _Boot, seq: int) -> bytes:
        """The frame as sent now: ``unacked`` is the lowest seq of its boot still held *at this moment*, so
        a gateway that lost its memory (restart) learns where the device stands from any resend."""
        f = b.frames[seq]
        unacked = next(iter(b.frames))  # insertion order is seq order
        payload = encode(
            frame_records(self.device_id, Header(boot, seq, unacked), f.t_s, f.measurements), self.content_type
        )
        return payload if self._signer is None else self._signer(payload)

    def _publish(self, payload: bytes) -> None:
        self._client.publish(readings_topic(self.device_id), payload, qos=1, properties=self._props)
        self.stats.published += 1

    def resend_due(self, limit: int = RESEND_BATCH) -> int:
        """Publish again what the watermark has not covered in time (all of it after a reconnect), at most
        ``limit`` frames per call: paho numbers messages with 16-bit ids, so its queue must stay far below
        65,535 messages."""
        if not self.connected.is_set():
            return 0
        now = time.monotonic()
        due: list[bytes] = []
        with self._lock:
            if self._resend_all:
                self._resend_all = False
                for b in self._boots.values():
                    for f in b.frames.values():
                        f.sent_at = -math.inf
            for boot, b in self._boots.items():
                for seq, f in b.frames.items():
                    if len(due) >= limit:
                        break
                    if now - f.sent_at >= self._resend_after * min(8, 2 ** (f.tries - 1)):
                        f.sent_at = now
                        f.tries += 1
                        due.append(self._encode(boot, b, seq))
        for p in due:
            self._publish(p)
        self.stats.resent += len(due)
        return len(due)

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the watermark covers every buffered frame (resending as needed)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pending == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.resend_due()
            with self._lock:
                self.settled.wait(timeout=min(0.2, left))
