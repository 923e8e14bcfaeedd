"""InfluxSink against a real VictoriaMetrics (``/api/v2/write``) and a fault-injecting proxy."""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from gateway.errors import RejectedSinkError, RetryableSinkError, ThrottledSinkError
from gateway.model import AbsentReason, Batch, Reading, SourceKey, TimeQuality, Waveform
from gateway.sinks.influx import InfluxSink, pack_bodies, parse_retry_after, split_body
from gateway.sinks.lineproto import encode_batches
from tests.faultproxy import FaultProxy
from tests.services import VictoriaMetrics

TOKEN = "test-token-3f9a0c"
T0_MS = 1_700_000_000_000
T0 = T0_MS * 1_000_000
ECG_PERIOD_NS = 4_000_000  # 250 Hz


# --------------------------------------------------------------------------------------------------
# pure helpers


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("garbage") == 1.0
    assert parse_retry_after("nan") == 1.0
    assert parse_retry_after("-3") == 0.0
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=1_699_999_999.0) == pytest.approx(31.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_pack_bodies() -> None:
    chunks = [b"a1\na2\na3", b"", b"b1", b"c" * 50, b"d1\nd2"]
    bodies = list(pack_bodies(chunks, 7))
    assert all(len(b) <= 7 or b"\n" not in b for b in bodies)
    assert b"\n".join(bodies).split(b"\n") == b"\n".join(c for c in chunks if c).split(b"\n")
    assert bodies == [b"a1\na2", b"a3\nb1", b"c" * 50, b"d1\nd2"]
    assert list(pack_bodies(chunks, 1 << 20)) == [b"a1\na2\na3\nb1\n" + b"c" * 50 + b"\nd1\nd2"]
    assert list(pack_bodies([b"", b""], 10)) == []


def test_split_body() -> None:
    assert split_body(b"one line") is None
    assert split_body(b"a\nb") == (b"a", b"b")
    assert split_body(b"aaaa\nb\nc") == (b"aaaa", b"b\nc")
    assert split_body(b"a\nb\ncccc") == (b"a\nb", b"cccc")


def test_repr_hides_token() -> None:
    sink = InfluxSink("influx", "http://user:pw@127.0.0.1:1", "org", "bucket", TOKEN)
    assert TOKEN not in repr(sink) and "pw" not in repr(sink)


# --------------------------------------------------------------------------------------------------
# fixtures


def unique_device() -> str:
    return f"dev-{uuid.uuid4().hex[:12]}"


def sample_batches(device: str, ecg_seconds: int = 2) -> list[Batch]:
    n = 250 * ecg_seconds
    ecg = np.round(1000 * np.sin(np.arange(n) * 2 * np.pi / 250)).astype(np.int32)
    b1 = Batch(
        SourceKey(device, ("boot", 1)),
        received_ns=T0,
        readings=(
            Reading("heart_rate", 72.0, "/min", T0, precision=0, seq=1),
            Reading("heart_rate", 73.5, "/min", T0 + 1_000_000_000, precision=1, seq=2),
            Reading(
                "glucose_isf",
                None,
                "mg/dL",
                T0 + 2_000_000_000,
                absent=AbsentReason.NRES,
                status=4,
                alert=True,
                time_quality=TimeQuality.DEVICE_UNCORRECTED,
            ),
        ),
    )
    b2 = Batch(
        SourceKey(device, ("boot", 2)),
        received_ns=T0,
        waveforms=(Waveform("ecg", "uV", T0, ECG_PERIOD_NS, ecg),),
    )
    return [b1, b2]


def series(vm: VictoriaMetrics, device: str) -> dict[str, dict[str, Any]]:
    return {s["metric"]["__name__"]: s for s in vm.export(f'{{device="{device}"}}')}


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., InfluxSink]]:
    sinks: list[InfluxSink] = []

    def make(url: str, **kwargs: Any) -> InfluxSink:
        sink = InfluxSink("influx", url, "ds4h", "ds4h", TOKEN, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


# --------------------------------------------------------------------------------------------------
# against VictoriaMetrics


async def test_readings_and_ecg_land(victoria_metrics: VictoriaMetrics, make_sink: Callable[..., InfluxSink]) -> None:
    device = unique_device()
    sink = make_sink(victoria_metrics.url)
    assert await sink.ping()
    batches = sample_batches(device, ecg_seconds=10)  # 2500 samples: the numpy formatter path
    await sink.write(batches)

    got = series(victoria_metrics, device)
    hr = got["heart_rate_value"]
    assert hr["metric"] == {"__name__": "heart_rate_value", "device": device, "unit": "/min"}
    assert hr["timestamps"] == [T0_MS, T0_MS + 1000]
    assert hr["values"] == [72.0, 73.5]
    assert got["heart_rate_seq"]["values"] == [1, 2]
    assert got["heart_rate_precision"]["values"] == [0, 1]
    assert got["glucose_isf_status"]["values"] == [4]
    assert got["glucose_isf_alert"]["values"] == [1]
    assert got["glucose_isf_tq"]["values"] == [2]
    assert got["glucose_isf_tq"]["timestamps"] == [T0_MS + 2000]
    assert "glucose_isf_value" not in got

    ecg = got["ecg_value"]
    assert ecg["metric"]["unit"] == "uV"
    expected = batches[1].waveforms[0]
    assert ecg["timestamps"] == [T0_MS + 4 * k for k in range(expected.samples.size)]
    assert ecg["values"] == expected.samples.tolist()


async def test_replay_gives_the_same_unique_points(
    victoria_metrics: VictoriaMetrics, make_sink: Callable[..., InfluxSink]
) -> None:
    device = unique_device()
    sink = make_sink(victoria_metrics.url)
    batches = sample_batches(device)
    await sink.write(batches)
    match = f'{{device="{device}"}}'
    first = victoria_metrics.unique_points(match)
    # 2 heart-rate readings x (value, precision, seq) + glucose (absent, status, alert, tq) + 500 ECG
    assert len(first) == 6 + 4 + 500
    await sink.write(batches)
    await sink.write(sample_batches(device))  # rebuilt from scratch: same bytes
    assert victoria_metrics.unique_points(match) == first
    assert encode_batches(batches) == encode_batches(sample_batches(device))


async def test_too_large_bodies_are_split(
    victoria_metrics: VictoriaMetrics, fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]
) -> None:
    device = unique_device()
    sink = make_sink(fault_proxy.url)
    fault_proxy.max_body(4000)
    batches = sample_batches(device)
    await sink.write(batches)
    statuses = [r.status for r in fault_proxy.requests if r.path == "/api/v2/write"]
    assert 413 in statuses and statuses[-1] == 204
    assert all(r.body_size <= 4000 for r in fault_proxy.requests if r.status == 204)
    assert victoria_metrics.count_unique_points(f'{{device="{device}"}}') == 6 + 4 + 500


async def test_a_single_line_too_large_is_rejected(
    fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]
) -> None:
    sink = make_sink(fault_proxy.url)
    fault_proxy.max_body(10)
    with pytest.raises(RejectedSinkError, match="single line") as info:
        await sink.write(sample_batches(unique_device())[:1])
    assert TOKEN not in str(info.value)


async def test_client_side_packing_respects_max_body(
    victoria_metrics: VictoriaMetrics, fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]
) -> None:
    device = unique_device()
    sink = make_sink(fault_proxy.url, max_body_bytes=3000)
    await sink.write(sample_batches(device))
    writes = [r for r in fault_proxy.requests if r.path == "/api/v2/write"]
    assert len(writes) > 1 and all(r.body_size <= 3000 and r.status == 204 for r in writes)
    assert "precision=ns" in writes[0].query
    assert victoria_metrics.count_unique_points(f'{{device="{device}"}}') == 6 + 4 + 500


@pytest.mark.parametrize(
    ("status", "headers", "expected_delay"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (429, {}, 1.0),
        (503, {"Retry-After": "3"}, 3.0),
        (503, {}, 1.0),
    ],
)
async def test_throttling(
    fault_proxy: FaultProxy,
    make_sink: Callable[..., InfluxSink],
    status: int,
    headers: dict[str, str],
    expected_delay: float,
) -> None:
    sink = make_sink(fault_proxy.url)
    fault_proxy.fail_next(1, status, headers=headers)
    with pytest.raises(ThrottledSinkError) as info:
        await sink.write(sample_batches(unique_device()))
    assert info.value.retry_after_s == expected_delay
    assert str(status) in str(info.value) and TOKEN not in str(info.value)


async def test_throttling_with_http_date(fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]) -> None:
    sink = make_sink(fault_proxy.url)
    fault_proxy.fail_next(1, 429, headers={"Retry-After": email.utils.formatdate(time.time() + 60, usegmt=True)})
    with pytest.raises(ThrottledSinkError) as info:
        await sink.write(sample_batches(unique_device()))
    assert 55.0 <= info.value.retry_after_s <= 60.0


async def test_bad_request_is_rejected(fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]) -> None:
    sink = make_sink(fault_proxy.url)
    long_text = "x" * 5000
    body = b'{"code":"invalid","message":"unable to parse line 3: ' + long_text.encode() + b'"}'
    fault_proxy.fail_next(1, 400, headers={"Content-Type": "application/json"}, body=body)
    with pytest.raises(RejectedSinkError) as info:
        await sink.write(sample_batches(unique_device()))
    text = str(info.value)
    assert "400" in text and "unable to parse line 3" in text
    assert len(text) < 600 and TOKEN not in text


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_server_errors_are_retryable(
    fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink], status: int
) -> None:
    sink = make_sink(fault_proxy.url)
    fault_proxy.fail_next(1, status, body=b"boom")
    with pytest.raises(RetryableSinkError) as info:
        await sink.write(sample_batches(unique_device()))
    assert str(status) in str(info.value) and TOKEN not in str(info.value)


async def test_auth_failure_is_retryable_not_rejected(
    fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]
) -> None:
    sink = make_sink(fault_proxy.url)
    fault_proxy.fail_next(1, 401, body=b'{"code":"unauthorized","message":"unauthorized access"}')
    with pytest.raises(RetryableSinkError, match="401") as info:
        await sink.write(sample_batches(unique_device()))
    assert TOKEN not in str(info.value)


async def test_timeout_is_retryable(fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]) -> None:
    sink = make_sink(fault_proxy.url, timeout_s=0.3)
    fault_proxy.delay(2.0)
    with pytest.raises(RetryableSinkError, match="timed out"):
        await sink.write(sample_batches(unique_device()))


async def test_dropped_connection_is_retryable(fault_proxy: FaultProxy, make_sink: Callable[..., InfluxSink]) -> None:
    sink = make_sink(fault_proxy.url)
    fault_proxy.drop_next(1)
    with pytest.raises(RetryableSinkError):
        await sink.write(sample_batches(unique_device()))


async def test_store_down_is_retryable_then_recovers(
    vm_private: VictoriaMetrics, make_sink: Callable[..., InfluxSink]
) -> None:
    device = unique_device()
    sink = make_sink(vm_private.url, timeout_s=5.0)
    await sink.write(sample_batches(device)[:1])
    vm_private.stop()
    assert not await sink.ping()
    with pytest.raises(RetryableSinkError) as info:
        await sink.write(sample_batches(device))
    assert TOKEN not in str(info.value)
    vm_private.start()
    assert await sink.ping()
    await sink.write(sample_batches(device))
    assert vm_private.count_unique_points(f'{{device="{device}"}}') == 6 + 4 + 500


async def test_unencodable_batch_is_rejected(
    victoria_metrics: VictoriaMetrics, make_sink: Callable[..., InfluxSink]
) -> None:
    sink = make_sink(victoria_metrics.url)
    bad = Batch(SourceKey(unique_device(), (1,)), T0, (Reading("heart_rate", float("nan"), "/min", T0),))
    with pytest.raises(RejectedSinkError, match="not finite"):
        await sink.write([bad])


async def test_close_then_write_reopens(
    victoria_metrics: VictoriaMetrics, make_sink: Callable[..., InfluxSink]
) -> None:
    device = unique_device()
    sink = make_sink(victoria_metrics.url)
    await sink.write(sample_batches(device)[:1])
    await sink.close()
    await sink.close()
    await sink.write(sample_batches(device)[1:])
    assert victoria_metrics.count_unique_points(f'{{device="{device}"}}') == 6 + 4 + 500
