"""Hostile and odd input must be refused cleanly, and never stop the gateway (found in review)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp

from gateway.model import Batch, Priority, Reading, SourceKey
from gateway.outbox.store import OutboxStore, open_outbox
from tests.gw import hr_batch, make_config, post, running, wait_until


async def _still_works(gw: object, seq: int) -> None:
    status, body = await post(gw, [hr_batch("hr-1", seq)])  # type: ignore[arg-type]
    assert status == 200 and body["results"][0]["status"] == "committed"


async def test_out_of_range_integers_are_refused_not_fatal(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        huge = 2**70
        batches = [
            hr_batch("hr-1", 1, t_ns=huge),
            {**hr_batch("hr-1", 2), "readings": [{"metric": "heart_rate", "v": 1, "u": "/min", "seq": huge}]},
            {**hr_batch("hr-1", 3), "readings": [{"metric": "heart_rate", "v": 1, "u": "/min", "t": -5}]},
            {"device": "ecg-1", "key": ["b", 1],
             "waveforms": [{"metric": "ecg", "u": "uV", "t0": 2**63 - 10, "period": 4_000_000,
                            "i32le": b"\x00" * 40}]},
            hr_batch("hr-1", 5),
        ]  # fmt: skip
        status, body = await post(gw, batches)
        assert status == 200
        assert [r["status"] for r in body["results"]] == ["quarantined"] * 4 + ["committed"]
        status, body = await post(gw, [hr_batch("hr-1", 6)], clock=2**80)
        assert status == 400 and "clock" in body["error"]
        await wait_until(lambda: gw.local.count()[0] == 1, what="the good reading in history")
        await asyncio.sleep(1.2)  # a forwarding round and a housekeeping pass later …
        await _still_works(gw, 7)  # … the gateway is alive


async def test_wrong_types_and_lone_surrogates_are_quarantined(tmp_state_dir: Path) -> None:
    async with running(make_config(tmp_state_dir)) as gw:
        headers = {"Authorization": f"Bearer {gw.token}", "Content-Type": "application/json"}
        body = (
            '{"batches": ['
            '{"device": "\\ud800", "key": ["b", 1], "readings": []},'
            '{"device": "hr-1", "key": ["b", 2], "readings": [{"metric": ["heart_rate"], "v": 1}]},'
            '{"device": "hr-1", "key": ["b", 3], "readings": [{"metric": "heart_rate", "v": 1, "u": {"x": 1}}]},'
            '{"device": "hr-1", "key": ["b", 4], "readings": [{"metric": "heart_rate", "v": 1, "absent": [1]}]},'
            '{"device": "hr-1", "key": ["b", 5], "readings": [{"metric": "heart_rate", "v": 61, "u": "/min",'
            ' "t": 1780000000000000000}]}'
            "]}"
        )
        async with aiohttp.ClientSession() as s, s.post(f"{gw.url}/api/v1/ingest", data=body, headers=headers) as r:
            assert r.status == 200
            results = (await r.json())["results"]
        assert [x["status"] for x in results] == ["quarantined"] * 4 + ["committed"]
        # the quarantine rows were stored (the surrogate made storable), and the committer lives on
        await wait_until(lambda: gw.stats().get("quarantine", {}).get("malformed") == 4, what="quarantine rows")
        await _still_works(gw, 6)
    conn = sqlite3.connect(tmp_state_dir / "outbox.db")
    hashes = {r[0] for r in conn.execute("SELECT payload_sha256 FROM quarantine")}
    conn.close()
    assert len(hashes) == 1  # one request, hashed once


async def test_old_device_times_stay_in_local_history(tmp_state_dir: Path) -> None:
    forty_days_ago = time.time_ns() - 40 * 86400 * 10**9
    cfg = make_config(tmp_state_dir, sinks={"local": {"retention_days": 30}})
    async with running(cfg) as gw:
        await post(gw, [hr_batch("hr-1", 1, t_ns=forty_days_ago)])
        await wait_until(lambda: gw.local.count()[0] == 1, what="stored")
        await asyncio.sleep(2.5)  # two housekeeping passes with retention pruning
        assert gw.local.count()[0] == 1  # retention counts from when it was stored


async def test_a_long_run_of_batches_sent_ahead_is_skipped_without_recursion(tmp_state_dir: Path) -> None:
    from gateway.metrics import GatewayMetrics
    from gateway.outbox.committer import Committer
    from gateway.provenance.identity import GatewayIdentity

    ident = GatewayIdentity.generate()
    conn = open_outbox(tmp_state_dir)
    c = Committer(conn, ident, GatewayMetrics(), max_batches=5000)
    task = asyncio.create_task(c.run())
    urgent = [
        Batch(SourceKey("hr-1", ("u", i)), 1, (Reading("heart_rate", 30.0, "/min", 10**18 + i),), (), Priority.URGENT)
        for i in range(1500)
    ]
    await c.submit_many(urgent)
    await c.submit_many([Batch(SourceKey("hr-1", ("b", 1)), 1, (Reading("heart_rate", 70.0, "/min", 10**18),))])
    await c.stop()
    await task
    store = OutboxStore(open_outbox(tmp_state_dir), ident.did)
    store.ensure_sink("s")
    while (work := store.next_work("s", 1000))[0].lane == "urgent":
        store.record("s", work, [])
    # the bulk pass now meets 1,500 batches already sent ahead, one per window of 1
    tail = store.next_work("s", 1)
    assert [p.lane for p in tail] == ["bulk"] and store.load(tail)[0].key.parts == ("b", 1)
