"""Building the gateway's MQTT client: TLS context, persistent session, protocol version.

The gateway acknowledges a QoS 1 message only after its batch is committed. aiomqtt acks on receipt;
the paho client inside it supports manual acks. Private attributes of aiomqtt 2.5.1 are used
(``_client``, ``_disconnected``; paho's ``on_message`` replaced) and, for batched reads, paho 2.x's
``_sock_recv``/``_packet_read``/``_loop_rc_handle``: aiomqtt and paho are pinned in pyproject.toml and
``tests/test_mqtt_conformance.py`` fails loudly if a new version changes them (field-notes.md).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import MqttSection
from gateway.errors import ConfigError
from gateway.mqtt.fastpublish import parse_publish
from gateway.mqtt.topics import gateway_status_topic

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311

OnMessage = Callable[[paho.Client, Any, Any], None]
"""paho's ``on_message`` signature; the message is a ``paho.MQTTMessage`` or a
:class:`~gateway.mqtt.fastpublish.Publish` (the same attributes)."""


PENDING_PUBLISH_WARNING = 60_000
"""Publishes awaiting their PUBACK above which aiomqtt logs a warning (its default, 10, is far below a
site's device count)."""


def tls_context(cfg: MqttSection, state_dir: Path) -> ssl.SSLContext | None:
    """Verify the broker against the site CA and present the gateway's certificate (mutual TLS)."""
    if not cfg.tls:
        return None
    pki = state_dir / "pki"
    ca = cfg.ca_file or pki / "ca.crt"
    cert = cfg.cert_file or pki / "gateway.crt"
    key = cfg.key_file or pki / "gateway.key"
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"mqtt.ca_file: cannot load {ca}: {e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert.exists() or cfg.cert_file is not None:
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"mqtt.cert_file/mqtt.key_file: cannot load {cert} / {key}: {e}") from None
    return ctx


def password(cfg: MqttSection) -> str | None:
    if cfg.password_file is None:
        return None
    try:
        return cfg.password_file.read_text().strip()
    except OSError as e:
        raise ConfigError(f"mqtt.password_file: cannot read {cfg.password_file}: {e.strerror}") from None


def build_client(
    cfg: MqttSection,
    protocol: aiomqtt.ProtocolVersion,
    tls: ssl.SSLContext | None,
    on_message: OnMessage,
    *,
    batched_reads: bool = True,
) -> aiomqtt.Client:
    """A client with a persistent session and manual acknowledgements; messages go to ``on_message``."""
    props: Properties | None = None
    if protocol == V5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.ReceiveMaximum = cfg.receive_maximum
    will = aiomqtt.Will(gateway_status_topic(cfg.client_id), b'{"state":"offline"}', qos=1, retain=True)
    client = aiomqtt.Client(
        cfg.host,
        cfg.port,
        identifier=cfg.client_id,
        protocol=protocol,
        clean_session=False if protocol != V5 else None,
        clean_start=False if protocol == V5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties=props,
        tls_context=tls,
        keepalive=cfg.keepalive_s,
        timeout=cfg.connect_timeout_s,
        username=cfg.username,
        password=password(cfg),
        will=will,
    )
    # aiomqtt warns once per publish when more than 10 are awaiting their PUBACK; the gateway publishes one
    # retained ack watermark per device per ack interval, so a site of 1,000 devices has that many in
    # flight by design (it logged ~300 warnings a second). Warn only near paho's 16-bit message-id space.
    client.pending_calls_threshold = PENDING_PUBLISH_WARNING
    inner = paho_client(client)
    inner.manual_ack_set(True)
    inner.on_message = on_message
    if batched_reads:
        batch_reads(client, asyncio.get_running_loop(), on_message)
    return client


READ_CHUNK = 64 * 1024
MAX_PACKETS_PER_WAKEUP = 1000


def batch_reads(
    client: aiomqtt.Client, loop: asyncio.AbstractEventLoop, on_message: OnMessage, *, fast_publish: bool = True
) -> None:
    """Read many packets per wake-up from a 64 KiB buffer (paho reads one packet per call, and the header
    byte by byte with one ``recv`` each): the receive path's main cost at tens of thousands of messages/s.
    With ``fast_publish`` a whole QoS 0/1 PUBLISH in the buffer is parsed by
    :func:`~gateway.mqtt.fastpublish.parse_publish` and handed to ``on_message`` directly; every other
    packet goes through paho.

    Replaces the socket reader aiomqtt registers; uses paho's private ``_sock_recv``, ``_packet_read``,
    ``_loop_rc_handle``, ``_in_packet``, ``_protocol``, ``_msgtime_mutex`` and ``_last_bytes_received``
    (checked by tests/test_mqtt_conformance.py).
    """
    inner = paho_client(client)
    buf = bytearray()
    raw_recv = inner._sock_recv  # private: pinned paho/aiomqtt, see module docstring

    def recv(n: int) -> bytes:
        if not buf:
            data = raw_recv(READ_CHUNK)  # BlockingIOError when the socket (and TLS) has nothing
            if not data:
                return data  # EOF
            buf.extend(data)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def fill() -> bool:
        """At a packet boundary: make sure something is buffered (False: the socket has nothing now)."""
        if buf:
            return True
        try:
            data = raw_recv(READ_CHUNK)
        except BlockingIOError:
            return False
        if not data:
            return True  # EOF: paho's read below reports the lost connection
        buf.extend(data)
        return True

    def on_readable() -> None:
        try:
            fast = 0
            v5 = inner._protocol == paho.MQTTv5
            for _ in range(MAX_PACKETS_PER_WAKEUP):
                if fast_publish and inner._in_packet["command"] == 0:  # at a packet boundary
                    if not fill():
                        break
                    got = parse_publish(buf, v5)
                    if got is not None:  # the common case: a whole QoS 0/1 PUBLISH is buffered
                        msg, size = got
                        del buf[:size]
                        fast += 1
                        on_message(inner, None, msg)
                        continue
                rc = inner._packet_read()
                if rc == paho.MQTT_ERR_AGAIN:
                    break
                if rc != paho.MQTT_ERR_SUCCESS:
                    inner._loop_rc_handle(rc)
                    return
            else:
                if buf:  # more is buffered but the socket may not wake us: come back next iteration
                    loop.call_soon(on_readable)
            if fast:
                with inner._msgtime_mutex:  # paho's keepalive watches received bytes
                    inner._last_bytes_received = time.monotonic()
        except Exception as exc:  # as aiomqtt's own reader does: the connection is broken
            lost = disconnected(client)
            if not lost.done():
                lost.set_exception(exc)

    def swap_reader(fd: int) -> None:
        loop.remove_reader(fd)
        loop.add_reader(fd, on_readable)

    aiomqtt_open = inner.on_socket_open

    def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
        buf.clear()
        if aiomqtt_open is not None:
            aiomqtt_open(c, userdata, sock)  # schedules aiomqtt's reader (from the connect thread) …
        loop.call_soon_threadsafe(swap_reader, sock.fileno())  # … which this replaces right after

    inner._sock_recv = recv  # type: ignore[method-assign,assignment]
    inner.on_socket_open = on_socket_open


def paho_client(client: aiomqtt.Client) -> paho.Client:
    inner: paho.Client = client._client  # private: pinned aiomqtt, see module docstring
    return inner


def disconnected(client: aiomqtt.Client) -> asyncio.Future[None]:
    """Resolves (or fails) when the connection is lost."""
    fut: asyncio.Future[None] = client._disconnected  # private: pinned aiomqtt
    return fut
