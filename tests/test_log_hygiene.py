"""Logging hygiene: sentinels planted in refused payloads, patient fields and values never reach the logs.

Every refusal path that logs is driven with payloads carrying the sentinels of tests/sentinels.py —
the ingest API (unknown metric and unit names, garbage JSON and CBOR bodies, an extra patient field),
MQTT (SenML with the sentinel as a name and a unit, garbage payloads, an impossible value) — and the
gateway's log records of the test are checked here; tests/conftest.py checks everything the whole
suite logged the same way at the end of the session.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import cbor2
import pytest

from tests import sentinels
from tests.gw import hr_batch, make_config, post, running, wait_until
from tests.mqttgw import T0, cbor_pack, device_client, json_pack, publish, quarantine_counts
from tests.services import Mosquitto

P, V, RAW = sentinels.PATIENT, sentinels.VALUE, sentinels.PAYLOAD


def _no_sentinel(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "the gateway logged nothing: the check would prove nothing"
    for rec in caplog.records:
        text = rec.getMessage() + (repr(rec.exc_info[1]) if rec.exc_info else "")
        for s in sentinels.TEXTS:
            assert s not in text, f"{rec.name}: {text}"


async def test_ingest_refusals_log_no_patient_data(tmp_state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running(make_config(tmp_state_dir)) as gw:
        status, body = await post(
            gw,
            [
                {"device": "hr-1", "key": ["s", 1], "readings": [{"metric": P, "v": V, "u": "/min"}]},
                {"device": "hr-1", "key": ["s", 2], "readings": [{"metric": "heart_rate", "v": V, "u": P}]},
                {"device": "hr-1", "key": ["s", 3], "patient": P, "readings": []},
                {"device": "hr-1", "key": ["s", 4], "readings": [{"metric": "heart_rate", "v": V * 1e6, "u": "/min"}]},
                hr_batch("hr-1", 5, value=V / 20),
            ],
        )
        assert status == 200
        assert [r["status"] for r in body["results"]][-1] == "committed"
        headers = {"Authorization": f"Bearer {gw.token}"}
        async with aiohttp.ClientSession() as s:
            for ctype, data in (
                ("application/json", f'{{"batches": [{{"device": "{P}", "x": "{RAW}"'.encode()),
                ("application/cbor", cbor2.dumps({"batches": RAW}) + RAW.encode()),
                ("text/plain", RAW.encode()),
            ):
                async with s.post(
                    f"{gw.url}/api/v1/ingest", data=data, headers={**headers, "Content-Type": ctype}
                ) as r:
                    assert 400 <= r.status < 500
        await wait_until(lambda: gw.local.count()[0] >= 1, what="the good reading")
    _no_sentinel(caplog)


async def test_mqtt_refusals_log_no_patient_data(
    tmp_state_dir: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    device = "g5-log"
    cfg = make_config(
        tmp_state_dir,
        devices={device: {"kind": "cardiac_monitor"}},
        mqtt={"enabled": True, "tls": False, "host": mosquitto.host, "port": mosquitto.port, "ack_interval_ms": 20},
    )
    head = [{"bn": f"urn:dev:ds4h:{device}:", "bt": T0, "n": "boot", "vs": "b1"}, {"n": "unacked", "v": 0}]
    frames = [
        cbor_pack([*head, {"n": "seq", "v": 1}, {"n": P, "v": V}]),
        json_pack([*head, {"n": "seq", "v": 2}, {"n": "heart-rate", "u": P, "v": V}]),
        cbor_pack([*head, {"n": "seq", "v": 3}, {"n": "heart-rate", "u": "1/s", "v": V}]),  # 74,074 /min
        RAW.encode() + b"\xff\x00",
        cbor2.dumps({"not": "senml", "x": RAW}),
    ]
    async with running(cfg) as gw:
        assert gw.mqtt is not None
        await asyncio.wait_for(gw.mqtt.connected.wait(), 20)  # frames before its subscription would be dropped
        async with device_client(mosquitto, f"dev-{device}") as dev:
            for f in frames:
                await publish(dev, device, f)
        await wait_until(lambda: sum(quarantine_counts(tmp_state_dir).values()) >= len(frames), what="quarantined")
        await asyncio.sleep(0.2)
        assert gw.counters()["readings_committed"] == 0
    _no_sentinel(caplog)
