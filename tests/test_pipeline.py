"""The spine end to end on the local sink: ingest → sign → commit → forward, over the real control API."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cbor2

from gateway.outbox.store import OutboxStore, open_outbox
from gateway.provenance.chain import verify_chain
from gateway.sinks.local import History
from tests.gw import get, hr_batch, make_config, post, running, wait_until


async def test_commit_duplicate_and_forward(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        status, body = await post(gw, [hr_batch("hr-1", 1), hr_batch("hr-1", 2)])
        assert status == 200
        assert [r["status"] for r in body["results"]] == ["committed", "committed"]
        # a redelivered batch is refused as already committed (the source acks again)
        status, body = await post(gw, [hr_batch("hr-1", 2), hr_batch("hr-1", 3)])
        assert [r["status"] for r in body["results"]] == ["duplicate", "committed"]
        # in one request too
        status, body = await post(gw, [hr_batch("hr-1", 4), hr_batch("hr-1", 4)])
        assert [r["status"] for r in body["results"]] == ["committed", "duplicate"]
        await wait_until(lambda: gw.counters()["readings_forwarded"]["local"] == 4, what="local sink")
        assert gw.local.count() == (4, 0)
        c = gw.counters()
        assert c["readings_committed"] == 4
        assert c["batches_duplicate"] == 2
        assert c["readings_lost"] == 0


async def test_unknown_disabled_and_malformed_are_quarantined(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        gw.registry.set_enabled("cgm-1", False, "lost by patient")
        batches = [
            hr_batch("nobody-9", 1),
            {**hr_batch("cgm-1", 1), "readings": [{"metric": "glucose_isf", "v": 99, "u": "mg/dL", "t": 1}]},
            {"device": "hr-1", "key": ["b", 1], "readings": [{"metric": "heart_rate", "v": "fast", "u": "/min"}]},
            {"device": "hr-1", "key": ["b", 2], "readings": [{"metric": "no_such_metric", "v": 1}]},
            {"device": "hr-1", "key": ["b", 3], "readings": [{"metric": "heart_rate", "v": 60, "u": "mmol/L"}]},
            {"device": "Not Canonical", "key": ["b", 1], "readings": []},
            "not a map",
            hr_batch("hr-1", 9),
        ]
        status, body = await post(gw, batches)
        assert status == 200
        results = body["results"]
        assert [r["status"] for r in results] == ["quarantined"] * 7 + ["committed"]
        assert results[0]["reason"].startswith("unknown_device")
        assert results[1]["reason"].startswith("disabled_device")
        assert all(r["reason"].startswith("malformed") for r in results[2:7])
        await wait_until(lambda: gw.stats().get("quarantine", {}).get("malformed") == 5, what="quarantine rows")
        q = gw.stats()["quarantine"]
        assert q == {"unknown_device": 1, "disabled_device": 1, "malformed": 5}
        # payload bodies are not kept in plaintext: only a hash and a size
        conn = sqlite3.connect(tmp_state_dir / "outbox.db")
        rows = conn.execute("SELECT detail, payload_sha256, payload_size FROM quarantine").fetchall()
        conn.close()
        assert all(len(r[1]) == 32 and r[2] > 0 for r in rows)
        assert not any(b"nobody-9" in r[1] for r in rows)


async def test_bad_requests_get_clear_errors(tmp_state_dir: Path) -> None:
    import aiohttp

    async with running(make_config(tmp_state_dir, web={"max_body_bytes": 4096})) as gw:
        status, _ = await post(gw, [hr_batch("hr-1", 1)], token="wrong")
        assert status == 401
        async with aiohttp.ClientSession() as s:
            h = {"Authorization": f"Bearer {gw.token}", "Content-Type": "application/cbor"}
            async with s.post(f"{gw.url}/api/v1/ingest", data=b"\xff\x00garbage", headers=h) as r:
                assert r.status == 400
                assert "CBOR" in (await r.json())["error"]
            async with s.post(f"{gw.url}/api/v1/ingest", data=cbor2.dumps([1, 2]), headers=h) as r:
                assert r.status == 400
            async with s.post(f"{gw.url}/api/v1/ingest", data=b"x" * 10_000, headers=h) as r:
                assert r.status == 413
            h["Content-Type"] = "application/json"
            async with s.post(f"{gw.url}/api/v1/ingest", data=b"{not json", headers=h) as r:
                assert r.status == 400
        # the gateway still works afterwards
        status, body = await post(gw, [hr_batch("hr-1", 1)])
        assert body["results"][0]["status"] == "committed"


async def test_health_metrics_stats(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        await post(gw, [hr_batch("hr-1", 1)])
        status, text = await get(gw, "/healthz", auth=False)
        assert status == 200 and json.loads(text)["status"] == "ok"
        status, text = await get(gw, "/metrics", auth=False)
        assert status == 200
        for name in (
            "ds4h_readings_ingested_total",
            "ds4h_readings_committed_total",
            "ds4h_readings_forwarded_total",
            "ds4h_rejected_total",
            "ds4h_readings_lost_total 0.0",
            "ds4h_outbox_depth",
            "ds4h_outbox_oldest_age_seconds",
            "ds4h_commit_latency_seconds_bucket",
        ):
            assert name in text, name
        status, _ = await get(gw, "/api/v1/stats", auth=False)
        assert status == 401
        status, text = await get(gw, "/api/v1/stats")
        stats = json.loads(text)
        assert stats["did"].startswith("did:key:z6Mk")
        assert stats["counters"]["readings_committed"] == 1
        control = json.loads((tmp_state_dir / "control.json").read_text())
        assert control["url"] == gw.url
    assert not (tmp_state_dir / "control.json").exists()


async def test_waveform_and_time_correction(tmp_state_dir: Path) -> None:
    import numpy as np

    samples = (np.sin(np.arange(250) / 10) * 1000).astype("<i4")
    device_clock_behind_ns = 3_000_000_000
    import time

    now = time.time_ns()
    batch = {
        "device": "ecg-1",
        "key": ["boot", 1],
        "waveforms": [
            {"metric": "ecg", "u": "uV", "t0": now - device_clock_behind_ns - 10**9, "period": 4_000_000,
             "i32le": samples.tobytes()}
        ],
    }  # fmt: skip
    async with running(make_config(tmp_state_dir)) as gw:
        _status, body = await post(gw, [batch], clock=now - device_clock_behind_ns)
        assert body["results"][0]["status"] == "committed"
        await wait_until(lambda: gw.local.count() == (0, 250), what="waveform in history")
        (w,) = gw.local.waveforms()
        start, period, tq = w.start_ns, w.period_ns, w.tq
        assert period == 4_000_000
        assert np.array_equal(w.samples, samples)
        # corrected by the measured skew: about one second before the receive time
        assert abs(start - (now - 10**9)) < 2 * 10**9
        assert tq == 0


async def test_group_commit_one_signature_per_commit_and_chain(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        _status, body = await post(gw, [hr_batch("hr-1", i) for i in range(500)])
        assert all(r["status"] == "committed" for r in body["results"])
        for i in range(500, 510):
            await post(gw, [hr_batch("hr-1", i)])
        did = gw.identity.did
    conn = open_outbox(tmp_state_dir)
    store = OutboxStore(conn, did)
    n_env = store.totals()["envelopes"]
    assert n_env <= 20, "500 batches in one request must share few envelopes"
    assert store.totals()["batches"] == 510
    report = verify_chain(store.envelopes(), expected_did=did)
    assert report.ok, report.problems
    assert report.count == n_env
    conn.close()


async def test_unsynchronised_clock_and_missing_times_are_flagged(tmp_state_dir: Path) -> None:
    from gateway.model import TimeQuality

    cfg = make_config(tmp_state_dir, gateway={"clock": "unsynced"})
    no_time = {"device": "hr-1", "key": ["b", 1], "readings": [{"metric": "heart_rate", "v": 70, "u": "/min"}]}
    no_time_2 = {"device": "hr-1", "key": ["b", 2], "readings": [{"metric": "heart_rate", "v": 71, "u": "/min"}]}
    async with running(cfg) as gw:
        _status, body = await post(gw, [no_time, no_time_2, hr_batch("hr-1", 3)])
        assert [r["status"] for r in body["results"]] == ["committed"] * 3
        await wait_until(lambda: gw.local.count() == (3, 0), what="history rows")
    with History(tmp_state_dir) as h:
        rows = sorted((r.value, r.t_ns, r.tq) for r in h.readings())
    flags = [TimeQuality(r[2]) for r in rows]
    # receive time stood in (and two such readings in one request still got distinct times)
    assert rows[0][1] != rows[1][1]
    assert all(TimeQuality.GATEWAY_UNSYNCED in f for f in flags)
    assert TimeQuality.RECEIVE_TIME in flags[0] and TimeQuality.RECEIVE_TIME in flags[1]
    assert TimeQuality.DEVICE_UNCORRECTED in flags[2]  # no clock sent with the request
