"""The MQTT source against a real Mosquitto: commit then PUBACK, ack watermarks, duplicates, bad input.

These run on a private loopback broker without TLS (the gateway allows that only on loopback); mutual
TLS, ACLs and the crash tests are in test_mqtt_site.py / test_mqtt_crash.py.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest

from gateway.outbox.housekeeping import BudgetVerdict
from gateway.pipeline import Gateway
from tests.gw import make_config, running, wait_until
from tests.mqttgw import (
    T0,
    cbor_pack,
    committed_keys,
    device_client,
    hr_frame,
    json_pack,
    mqtt_count,
    publish,
    quarantine_counts,
)
from tests.services import Mosquitto

DEVICES = {"g5-a": {"kind": "cardiac_monitor"}, "g5-b": {"kind": "cgm"}, "plain-1": {"kind": "senml"}}


def _config(state: Path, broker: Mosquitto, **mqtt: Any) -> Any:
    return make_config(
        state,
        devices=DEVICES,
        mqtt={"enabled": True, "tls": False, "host": broker.host, "port": broker.port, "ack_interval_ms": 20, **mqtt},
    )


async def _acks(broker: Mosquitto, device: str, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """The retained ack message of ``device`` as a fresh subscriber sees it."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"ackreader-{device}") as c:
        await c.subscribe(f"ds4h/v1/devices/{device}/ack", qos=1, timeout=5)
        async with asyncio.timeout(wait_s):
            async for m in c.messages:
                doc: list[dict[str, Any]] = cbor2.loads(m.payload)
                return doc
    raise AssertionError("no ack message")


async def _wait_watermark(broker: Mosquitto, device: str, boot: str, seq: int, wait_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        acks = await _acks(broker, device)
        if any(a["boot"] == boot and a["seq"] >= seq for a in acks):
            return
        assert asyncio.get_running_loop().time() < deadline, f"watermark for {device}/{boot} stuck at {acks}"
        await asyncio.sleep(0.1)


async def _connected(gw: Gateway) -> None:
    assert gw.mqtt is not None
    await asyncio.wait_for(gw.mqtt.connected.wait(), 20)


async def test_frames_are_committed_then_acked_and_watermarked(tmp_path: Path, mosquitto_private: Mosquitto) -> None:
    state = tmp_path / "state"
    async with running(_config(state, mosquitto_private)) as gw:
        await _connected(gw)
        async with device_client(mosquitto_private, "dev-g5-a") as dev:
            for seq in range(50):
                await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b1", seq)))
            # the same frame again (a device resending): refused as already committed, acked all the same
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b1", 7)))
        await wait_until(lambda: mqtt_count(gw, "committed") == 50 and mqtt_count(gw, "duplicate") == 1)
        await _wait_watermark(mosquitto_private, "g5-a", "b1", 49)
        keys = committed_keys(state)
        assert sorted(keys) == sorted(f"g5-a/b1/{s}" for s in range(50))
        stats = gw.stats()["mqtt"]
        assert stats["connected"] and stats["messages"]["committed"] == 50
    # every message was acknowledged: a new session of the same client id gets nothing redelivered
    async with running(_config(state, mosquitto_private)) as gw:
        await _connected(gw)
        await asyncio.sleep(1.0)
        assert mqtt_count(gw, "committed") == 0 and mqtt_count(gw, "duplicate") == 0


async def test_messages_wait_in_the_broker_while_the_gateway_is_down(
    tmp_path: Path, mosquitto_private: Mosquitto
) -> None:
    state = tmp_path / "state"
    async with running(_config(state, mosquitto_private)) as gw:  # creates the persistent session
        await _connected(gw)
    async with device_client(mosquitto_private, "dev-g5-a") as dev:
        for seq in range(30):
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b2", seq)))
    async with running(_config(state, mosquitto_private)) as gw:
        await wait_until(lambda: mqtt_count(gw, "committed") == 30)
    assert len(committed_keys(state)) == 30


async def test_watermark_skips_gaps_the_device_has_released(tmp_path: Path, mosquitto_private: Mosquitto) -> None:
    """A restarted gateway knows nothing of earlier frames: ``unacked`` tells it where the device stands."""
    state = tmp_path / "state"
    async with running(_config(state, mosquitto_private)) as gw:
        await _connected(gw)
        async with device_client(mosquitto_private, "dev-g5-a") as dev:
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b3", 100, unacked=100)))
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b3", 102, unacked=100)))
            await _wait_watermark(mosquitto_private, "g5-a", "b3", 100)
            assert {"boot": "b3", "seq": 100} in await _acks(mosquitto_private, "g5-a")
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b3", 101, unacked=100)))
            await _wait_watermark(mosquitto_private, "g5-a", "b3", 102)
            # a reboot: a new boot id starts at 0 — never mistaken for a replay of the old boot
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "b4", 0)))
            await _wait_watermark(mosquitto_private, "g5-a", "b4", 0)
        acks = await _acks(mosquitto_private, "g5-a")
        assert acks[0] == {"boot": "b4", "seq": 0} and {"boot": "b3", "seq": 102} in acks
    assert len(committed_keys(state)) == 4


def _bad_inputs() -> list[tuple[str, str, bytes, str | None]]:
    """(expected reason, device, payload, content type) — one per class of bad input."""
    good = hr_frame("g5-a", "bad", 0)
    nan = [dict(r) for r in good]
    nan[3]["v"] = math.nan
    return [
        ("too_large", "g5-a", b"[" + b" " * 70_000 + b"]", "application/senml+json"),
        ("malformed", "g5-a", b'[{"n": ', "application/senml+json"),
        ("malformed", "g5-a", b"\xff\x00garbage", "application/senml+cbor"),
        ("non_finite", "g5-a", cbor_pack(nan), "application/senml+cbor"),
        ("unknown_name", "g5-a", cbor_pack([*good[:3], {"n": "blood-alcohol", "u": "/", "v": 0.1}]), None),
        ("bad_unit", "g5-a", cbor_pack([*good[:3], {"n": "heart-rate", "u": "Pa", "v": 1.2}]), None),
        ("wrong_type", "g5-a", json_pack([*good[:3], {"n": "heart-rate", "u": "1/s", "vs": "fast"}]), None),
        ("bad_time", "g5-a", cbor_pack([{**good[0], "bt": T0 + 10 * 86400 * 365}, *good[1:]]), None),
        ("wrong_device", "g5-a", cbor_pack(hr_frame("g5-b", "bad", 1)), None),
        ("unknown_device", "nobody-1", cbor_pack(hr_frame("nobody-1", "bad", 0)), None),
        (
            "missing_sequence",
            "g5-a",
            cbor_pack([{"bn": "urn:dev:ds4h:g5-a:", "bt": T0, "n": "heart-rate", "u": "1/s", "v": 1.2}]),
            None,
        ),
        ("bad_time", "plain-1", cbor_pack([{"n": "heart-rate", "u": "1/s", "v": 1.2, "t": -5}]), None),
        ("unsupported_content_type", "g5-a", cbor_pack(good), "text/plain"),
    ]


async def test_every_bad_input_is_quarantined_counted_and_acked(tmp_path: Path, mosquitto_private: Mosquitto) -> None:
    state = tmp_path / "state"
    cases = _bad_inputs()
    async with running(_config(state, mosquitto_private)) as gw:
        await _connected(gw)
        async with device_client(mosquitto_private, "dev-bad") as dev:
            for _, device, payload, ctype in cases:
                await publish(dev, device, payload, ctype)
            # a plain SenML device (kind "senml") with absolute times is accepted without boot/seq
            plain = cbor_pack([{"bn": "urn:dev:ds4h:plain-1:", "bt": T0, "n": "heart-rate", "u": "beat/min", "v": 61}])
            await publish(dev, "plain-1", plain, None)
            await publish(dev, "plain-1", plain, None)  # the same payload again: a duplicate
            # after all that the session still works
            await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "ok", 0)))
        await wait_until(lambda: mqtt_count(gw, "quarantined") == len(cases), what="quarantine")
        await wait_until(lambda: mqtt_count(gw, "committed") == 2 and mqtt_count(gw, "duplicate") == 1)
        expected: dict[str, int] = {}
        for reason, *_ in cases:
            expected[reason] = expected.get(reason, 0) + 1
        for reason, n in expected.items():
            v = gw.metrics.registry.get_sample_value("ds4h_rejected_total", {"reason": reason})
            assert v == n, (reason, v)
        # a poison frame (bad unit, seq 0 of boot "bad") is settled: the watermark moves past it
        await _wait_watermark(mosquitto_private, "g5-a", "bad", 0)
    assert quarantine_counts(state) == expected
    assert sorted(committed_keys(state))[0].startswith("g5-a/ok/0")


@pytest.mark.parametrize("fmt", ["json", "cbor"])
async def test_mqtt_311_payloads_are_sniffed(tmp_path: Path, mosquitto_private: Mosquitto, fmt: str) -> None:
    state = tmp_path / "state"
    pack = json_pack if fmt == "json" else cbor_pack
    async with running(_config(state, mosquitto_private, protocol="3.1.1")) as gw:
        await _connected(gw)
        async with device_client(mosquitto_private, "dev-311", v5=False) as dev:
            for seq in range(5):
                await publish(dev, "g5-b", pack(hr_frame("g5-b", "b1", seq)), None)
        await wait_until(lambda: mqtt_count(gw, "committed") == 5)
        await _wait_watermark(mosquitto_private, "g5-b", "b1", 4)


async def test_ecg_frames_become_waveforms(tmp_path: Path, mosquitto_private: Mosquitto) -> None:
    import numpy as np

    from firmware_sim.senml import Header, ecg_records, encode, frame_records

    state = tmp_path / "state"
    async with running(_config(state, mosquitto_private)) as gw:
        await _connected(gw)
        async with device_client(mosquitto_private, "dev-ecg") as dev:
            for seq in range(3):
                samples = (np.arange(250) * (seq + 1) - 40_000).astype(np.int32)  # needs int24
                pack = encode(frame_records("g5-a", Header("e1", seq, seq), T0 + seq, ecg_records(samples, 250)))
                await publish(dev, "g5-a", pack)
        await wait_until(lambda: mqtt_count(gw, "committed") == 3)
        points = gw.metrics.registry.get_sample_value("ds4h_readings_committed_total")
        assert points == 750


async def test_backpressure_holds_messages_unacknowledged(tmp_path: Path, mosquitto_private: Mosquitto) -> None:
    """Over the disk budget nothing is acked: the frames wait (in flight, then in the broker) until there is room."""
    state = tmp_path / "state"
    async with running(_config(state, mosquitto_private)) as gw:
        await _connected(gw)
        # keep housekeeping (every second, in a thread) from lifting the back-pressure while the test holds
        # it; a real pass already in flight would still lift it, so wait until a patched pass has run
        real_pass = gw.housekeeper.run_once
        patched_passes: list[int] = []

        def over_budget() -> BudgetVerdict:
            patched_passes.append(1)
            return BudgetVerdict(0, 1, "test: disk budget reached")

        gw.housekeeper.run_once = over_budget  # type: ignore[method-assign]
        await wait_until(lambda: len(patched_passes) >= 1, what="a housekeeping pass over budget")
        gw.committer.set_backpressure("test: disk budget reached")
        async with device_client(mosquitto_private, "dev-bp") as dev:
            for seq in range(10):
                await publish(dev, "g5-a", cbor_pack(hr_frame("g5-a", "bp", seq)))
        refusals = "ds4h_backpressure_refusals_total"
        await wait_until(lambda: (gw.metrics.registry.get_sample_value(refusals) or 0) > 0, what="a refusal")
        await asyncio.sleep(0.5)
        assert mqtt_count(gw, "committed") == 0 and committed_keys(state) == []
        assert "bp" not in {a["boot"] for a in await _acks_or_none(mosquitto_private, "g5-a")}
        gw.housekeeper.run_once = real_pass  # type: ignore[method-assign]
        gw.committer.set_backpressure(None)
        await wait_until(lambda: mqtt_count(gw, "committed") == 10, what="commit after back-pressure")
        await _wait_watermark(mosquitto_private, "g5-a", "bp", 9)


async def _acks_or_none(broker: Mosquitto, device: str) -> list[dict[str, Any]]:
    try:
        return await _acks(broker, device, wait_s=0.5)
    except TimeoutError:
        return []
