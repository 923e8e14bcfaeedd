"""A site for MQTT tests: a state directory with its PKI, a real Mosquitto configured by the gateway's
own writer (mutual TLS + ACL), and a small synchronous paho-mqtt (MQTT v5) client for the tests.

    def test_x(mqtt_site: MqttSite) -> None:
        cert, key = mqtt_site.issue_device("ecg-1")
        with MqttClient.connected(mqtt_site, "ecg-1", cert, key) as dev:
            assert dev.publish("ds4h/v1/devices/ecg-1/readings", b"...") == 0

Every wait has a timeout; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import queue
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.cli_pki import enroll_device
from gateway.pki.ca import SitePki
from tests.services import MosquittoSite

TIMEOUT = 10.0

NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10
"""MQTT v5 reason code "Not authorized" (PUBACK, SUBACK, CONNACK, DISCONNECT)."""


@dataclass
class MqttSite:
    state_dir: Path
    """The gateway state directory holding pki/ and registry.db."""
    broker: MosquittoSite
    """Running; ``.host``, ``.port``; ``.stop()`` / ``.kill()`` then ``.start()`` keep its persistence."""
    ca_cert: Path
    gateway_name: str
    gateway_cert: Path
    gateway_key: Path

    @property
    def gateway_username(self) -> str:
        """The gateway's MQTT username: its certificate's CN."""
        return f"ds4h-gateway:{self.gateway_name}"

    @property
    def pki(self) -> SitePki:
        return SitePki(self.state_dir)

    def issue_device(self, device_id: str, kind: str = "ecg_patch") -> tuple[Path, Path]:
        """Issue a device certificate (CN = ``device_id``) and register the device; returns (cert, key)."""
        issued, _ = enroll_device(self.state_dir, device_id, kind)
        return issued.cert, issued.key


@contextlib.contextmanager
def make_site(root: Path, gateway_name: str = "gateway") -> Iterator[MqttSite]:
    """CA, gateway and broker certificates under ``root/state``; the broker runs in ``root/broker``."""
    state_dir = root / "state"
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = SitePki(state_dir)
    pki.init_ca("test site")
    pki.issue_server()
    gw = pki.issue_gateway(gateway_name)
    broker = MosquittoSite(state_dir, gateway_name, workdir=root / "broker", ready_cert=(gw.cert, gw.key))
    with broker:
        yield MqttSite(state_dir, broker, pki.ca_cert, gateway_name, gw.cert, gw.key)


def tls_context(ca_cert: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the broker against ``ca_cert`` and presents ``cert`` if given."""
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    result: Any = None


class MqttClient:
    """paho-mqtt 2.x, MQTT v5, over mutual TLS, with blocking calls that wait on events (with timeouts)."""

    def __init__(
        self,
        site: MqttSite,
        client_id: str,
        cert: Path | None,
        key: Path | None,
        *,
        ca_cert: Path | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> None:
        self.site = site
        self.client_id = client_id
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connack: _Pending = _Pending()
        self.disconnected: _Pending = _Pending()
        self.disconnect_packet_from_server = False
        """True when the broker sent a DISCONNECT packet (rather than just closing the connection)."""
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
        )
        self.client.tls_set_context(tls_context(ca_cert or site.ca_cert, cert, key))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # --- paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connack.result = rc
        self.connack.event.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnect_packet_from_server = bool(flags.is_disconnect_packet_from_server)
        self.disconnected.result = rc
        self.disconnected.event.set()
        self.connack.event.set()  # a connect that ends in a disconnect has no CONNACK to wait for

    def _pending_for(self, mid: int) -> _Pending:
        with self._lock:
            return self._pending.setdefault(mid, _Pending())

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        p = self._pending_for(mid)
        p.result = rc
        p.event.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        p = self._pending_for(mid)
        p.result = rcs
        p.event.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    # --- blocking API
    def connect(self, timeout: float = TIMEOUT) -> int:
        """Connect (TCP, TLS handshake, CONNECT); returns the CONNACK reason code value.

        Raises ``ssl.SSLError`` / ``OSError`` when the TLS handshake fails on the client side, and
        ``ConnectionError`` when the broker closes the connection before a CONNACK.
        """
        props = None
        if self.session_expiry_s:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
        self.client.connect(
            self.site.broker.host, self.site.broker.port, keepalive=30, clean_start=self.clean_start, properties=props
        )
        self.client.loop_start()
        if not self.connack.event.wait(timeout):
            raise TimeoutError(f"{self.client_id}: no CONNACK within {timeout}s")
        if self.connack.result is None:
            raise ConnectionError(f"{self.client_id}: disconnected before CONNACK ({self.disconnected.result})")
        return int(self.connack.result.value)

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = TIMEOUT) -> int:
        """Publish at QoS 1; returns the PUBACK reason code value (0 = success, 0x87 = not authorized)."""
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"{self.client_id}: publish failed: {mqtt.error_string(info.rc)}")
        p = self._pending_for(info.mid)
        if not p.event.wait(timeout):
            raise TimeoutError(f"{self.client_id}: no PUBACK for {topic} within {timeout}s")
        return int(p.result.value)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = TIMEOUT) -> int:
        """Subscribe; returns the SUBACK reason code value (granted QoS, or 0x87 = not authorized)."""
        rc, mid = self.client.subscribe(topic, qos=qos)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"{self.client_id}: subscribe failed: {mqtt.error_string(rc)}")
        p = self._pending_for(mid)
        if not p.event.wait(timeout):
            raise TimeoutError(f"{self.client_id}: no SUBACK for {topic} within {timeout}s")
        return int(p.result[0].value)

    def receive(self, timeout: float = TIMEOUT) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.client_id}: no message within {timeout}s") from None

    def wait_disconnected(self, timeout: float = TIMEOUT) -> int:
        """The DISCONNECT reason code value once the connection has closed (raises on timeout)."""
        if not self.disconnected.event.wait(timeout):
            raise TimeoutError(f"{self.client_id}: still connected after {timeout}s")
        return int(self.disconnected.result.value)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @classmethod
    @contextlib.contextmanager
    def connected(cls, site: MqttSite, client_id: str, cert: Path, key: Path, **kw: Any) -> Iterator[MqttClient]:
        c = cls(site, client_id, cert, key, **kw)
        try:
            rc = c.connect()
            if rc != 0:
                raise ConnectionError(f"{client_id}: CONNACK reason code {rc:#04x}")
            yield c
        finally:
            c.close()
