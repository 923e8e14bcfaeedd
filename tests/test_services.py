"""The test infrastructure itself: real servers, the fault proxy, the helpers."""

from __future__ import annotations

import gzip
import threading
import urllib.error
import urllib.request
import uuid

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.faultproxy import FaultProxy
from tests.services import Mosquitto, ServiceError, VictoriaMetrics, free_port, require_binary

NS = 1_000_000_000
BASE_NS = 1_700_000_000 * NS


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def write_url(base: str) -> str:
    return f"{base}/api/v2/write?org=ds4h&bucket=ds4h&precision=ns"


def post(base: str, body: bytes) -> urllib.request.Request:
    return urllib.request.Request(write_url(base), data=body, method="POST")


# -- VictoriaMetrics ----------------------------------------------------------------------------


def test_vm_accepts_line_protocol_and_counts_points(victoria_metrics: VictoriaMetrics) -> None:
    m = unique("ds4h_test_hr")
    lines = "\n".join(f"{m},device=dev1 value={60 + i} {BASE_NS + i * NS}" for i in range(5))
    assert victoria_metrics.write_lines(lines) == 204
    assert victoria_metrics.count_points(f"{m}_value") == 5
    [series] = victoria_metrics.export(f"{m}_value")
    assert series["metric"] == {"__name__": f"{m}_value", "device": "dev1"}
    assert series["values"] == [60, 61, 62, 63, 64]
    assert series["timestamps"] == [BASE_NS // 1_000_000 + i * 1000 for i in range(5)]


def test_vm_truncates_to_ms_and_unique_count_dedups(victoria_metrics: VictoriaMetrics) -> None:
    m = unique("ds4h_test_dup")
    # same point twice, and two points 1 µs apart that fall on the same millisecond
    lines = "".join(f"{m},device=d value=1 {ts}\n" for ts in (BASE_NS, BASE_NS, BASE_NS + 1000))
    assert victoria_metrics.write_lines(lines) == 204
    assert victoria_metrics.count_unique_points(f"{m}_value") == 1
    assert victoria_metrics.count_points(f"{m}_value") >= 1


async def test_vm_accepts_influxdb_client_async(victoria_metrics: VictoriaMetrics) -> None:
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    m = unique("ds4h_test_client")
    async with InfluxDBClientAsync(url=victoria_metrics.url, token="unused", org="ds4h") as client:
        ok = await client.write_api().write(
            bucket="ds4h", record=[f"{m},device=a value=1.5 {BASE_NS}", f"{m},device=b value=2.5 {BASE_NS}"]
        )
    assert ok is True
    assert victoria_metrics.count_unique_points(f"{m}_value") == 2


def test_vm_restart_keeps_data_and_port(vm_private: VictoriaMetrics) -> None:
    m = unique("ds4h_test_restart")
    port, pid = vm_private.port, vm_private.pid
    assert vm_private.write_lines(f"{m},device=x value=7 {BASE_NS}") == 204
    vm_private.stop()
    assert not vm_private.running
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{vm_private.url}/health", timeout=2).close()
    vm_private.start()
    assert vm_private.port == port and vm_private.pid != pid
    assert vm_private.count_unique_points(f"{m}_value") == 1
    vm_private.restart()
    assert vm_private.count_unique_points(f"{m}_value") == 1


def test_vm_kill_then_start(vm_private: VictoriaMetrics) -> None:
    # Note: VictoriaMetrics 1.79 loses samples acknowledged in the last few seconds on SIGKILL,
    # even after /internal/force_flush; only a clean stop() is guaranteed to keep them.
    pid = vm_private.pid
    vm_private.kill()
    assert not vm_private.running
    vm_private.start()
    assert vm_private.running and vm_private.pid != pid
    m = unique("ds4h_test_kill")
    assert vm_private.write_lines(f"{m},device=x value=7 {BASE_NS}") == 204
    assert vm_private.count_unique_points(f"{m}_value") == 1


# -- fault proxy -----------------------------------------------------------------------------------


async def test_fault_proxy_429_with_retry_after_then_passes_through(
    fault_proxy: FaultProxy, victoria_metrics: VictoriaMetrics
) -> None:
    m = unique("ds4h_test_429")
    fault_proxy.fail_next(1, 429, headers={"Retry-After": "1"}, body=b"slow down")
    line = f"{m},device=x value=1 {BASE_NS}".encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(write_url(fault_proxy.url), data=line) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert await resp.read() == b"slow down"
        assert victoria_metrics.count_points(f"{m}_value") == 0
        async with session.post(write_url(fault_proxy.url), data=line) as resp:
            assert resp.status == 204
        async with session.get(f"{fault_proxy.url}/health") as resp:
            assert resp.status == 200
            assert await resp.text() == "OK"
    assert victoria_metrics.count_points(f"{m}_value") == 1
    log = fault_proxy.requests
    assert [(r.method, r.path, r.status, r.fault) for r in log] == [
        ("POST", "/api/v2/write", 429, "fail_next"),
        ("POST", "/api/v2/write", 204, None),
        ("GET", "/health", 200, None),
    ]
    assert log[0].body_size == len(line)
    assert "bucket=ds4h" in log[0].query


def test_fault_proxy_413_over_max_body(fault_proxy: FaultProxy, victoria_metrics: VictoriaMetrics) -> None:
    m = unique("ds4h_test_413")
    fault_proxy.max_body(100)
    small = f"{m},device=s value=1 {BASE_NS}".encode()
    big = "\n".join(f"{m},device=b value={i} {BASE_NS + i * NS}" for i in range(20)).encode()
    assert len(small) <= 100 < len(big)
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(post(fault_proxy.url, big), timeout=10)
    with excinfo.value as err:
        assert err.code == 413
    with urllib.request.urlopen(post(fault_proxy.url, small), timeout=10) as r:
        assert r.status == 204
    assert victoria_metrics.count_unique_points(f"{m}_value") == 1
    assert [(r.status, r.body_size) for r in fault_proxy.requests] == [(413, len(big)), (204, len(small))]
    fault_proxy.max_body(None)
    with urllib.request.urlopen(post(fault_proxy.url, big), timeout=10) as r:
        assert r.status == 204
    assert victoria_metrics.count_unique_points(f"{m}_value") == 21


async def test_fault_proxy_sequences_drop_and_reset(fault_proxy: FaultProxy, victoria_metrics: VictoriaMetrics) -> None:
    fault_proxy.fail_next(2, 503)
    fault_proxy.fail_next(1, 400, body=b"bad line")
    fault_proxy.fail_next(1, 500)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(5):
            async with session.get(f"{fault_proxy.url}/health") as resp:
                statuses.append(resp.status)
        assert statuses == [503, 503, 400, 500, 200]

    # aiohttp silently retries an idempotent request (GET) once when the connection drops; a POST
    # (like an influx write) is not retried, so the client sees the failure
    async with aiohttp.ClientSession() as session:
        fault_proxy.drop_next(1)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.post(f"{fault_proxy.url}/health", data=b"x") as resp:
                await resp.read()
        async with session.post(f"{fault_proxy.url}/health", data=b"x") as resp:
            assert resp.status == 200
    assert fault_proxy.requests[-2].fault == "dropped"
    fault_proxy.fail_next(3, 503)
    fault_proxy.max_body(0)
    fault_proxy.reset()
    assert fault_proxy.pending_faults == 0 and fault_proxy.requests == []


async def test_fault_proxy_relays_gzip_body_untouched(
    fault_proxy: FaultProxy, victoria_metrics: VictoriaMetrics
) -> None:
    m = unique("ds4h_test_gzip")
    raw = "\n".join(f"{m},device=g value={i} {BASE_NS + i * NS}" for i in range(50)).encode()
    packed = gzip.compress(raw)
    async with (
        aiohttp.ClientSession() as session,
        session.post(write_url(fault_proxy.url), data=packed, headers={"Content-Encoding": "gzip"}) as resp,
    ):
        assert resp.status == 204, await resp.text()
    assert fault_proxy.requests[0].body_size == len(packed)
    assert victoria_metrics.count_unique_points(f"{m}_value") == 50


async def test_fault_proxy_async_start_stop(victoria_metrics: VictoriaMetrics) -> None:
    async with (
        FaultProxy(victoria_metrics.url) as proxy,
        aiohttp.ClientSession() as session,
        session.get(f"{proxy.url}/health") as resp,
    ):
        assert resp.status == 200
    proxy2 = FaultProxy("http://127.0.0.1:1")  # nothing listens there
    url = await proxy2.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/x") as resp:
            assert resp.status == 502
    finally:
        await proxy2.stop()


# -- Mosquitto ------------------------------------------------------------------------------------


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )


def _connect(client: mqtt.Client, broker: Mosquitto, clean_start: bool = True, expiry: int = 0) -> None:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry
    connected = threading.Event()
    client.on_connect = lambda c, u, flags, rc, p: connected.set() if not rc.is_failure else None
    client.connect(broker.host, broker.port, keepalive=30, clean_start=clean_start, properties=props)
    client.loop_start()
    assert connected.wait(10), "no CONNACK"


def test_mosquitto_publish_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    topic = unique("ds4h/test")
    received: list[tuple[str, bytes, int]] = []
    got = threading.Event()
    subscribed = threading.Event()

    sub = _client(unique("sub"))
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        received.append((msg.topic, bytes(msg.payload), msg.qos))
        got.set()

    sub.on_message = on_message
    pub = _client(unique("pub"))
    try:
        _connect(sub, mosquitto)
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        _connect(pub, mosquitto)
        info = pub.publish(topic, b"\x00hello\xff", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
        assert got.wait(10)
        assert received == [(topic, b"\x00hello\xff", 1)]
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def test_mosquitto_restart_keeps_persistent_session(mosquitto_private: Mosquitto) -> None:
    topic = unique("ds4h/persist")
    sub_id = unique("sub")
    subscribed = threading.Event()
    sub = _client(sub_id)
    sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    # Mosquitto 2.0.11 restores a session across a restart only if it was created with
    # clean_start=False (a clean_start=True session with an expiry survives disconnects only)
    _connect(sub, mosquitto_private, clean_start=False, expiry=3600)
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(10)
    sub.disconnect()
    sub.loop_stop()

    pub = _client(unique("pub"))
    _connect(pub, mosquitto_private)
    info = pub.publish(topic, b"queued", qos=1)
    info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()

    port = mosquitto_private.port
    mosquitto_private.restart()
    assert mosquitto_private.port == port

    got = threading.Event()
    payloads: list[bytes] = []

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        payloads.append(bytes(msg.payload))
        got.set()

    sub2 = _client(sub_id)
    sub2.on_message = on_message
    try:
        _connect(sub2, mosquitto_private, clean_start=False, expiry=3600)
        assert got.wait(10), "queued QoS 1 message lost across broker restart"
        assert payloads == [b"queued"]
    finally:
        sub2.disconnect()
        sub2.loop_stop()


# -- helpers ----------------------------------------------------------------------------------------


def test_missing_binary_names_package() -> None:
    with pytest.raises(ServiceError, match=r"apt-get install -y no-such-pkg"):
        require_binary("/nonexistent/no-such-binary", "no-such-pkg")


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
