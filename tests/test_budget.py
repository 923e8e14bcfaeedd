"""Disk budget end to end: with the store unreachable, ingest is back-pressured (503), never dropped."""

from __future__ import annotations

from pathlib import Path

from tests.gw import get, hr_batch, make_config, post, running, wait_until
from tests.services import free_port


async def test_backpressure_when_budget_is_full(tmp_state_dir: Path) -> None:
    token = tmp_state_dir.parent / "budget.token"
    token.write_text("t")
    token.chmod(0o600)
    dead_store = f"http://127.0.0.1:{free_port()}"  # nothing listens: nothing is ever delivered there
    cfg = make_config(
        tmp_state_dir,
        outbox={"disk_budget_mb": 0.5},
        sinks={"influx": {"url": dead_store, "token_file": str(token), "timeout_s": 1}},
    )
    async with running(cfg) as gw:
        seq = 0
        refused = None
        for _ in range(200):
            status, body = await post(gw, [hr_batch("hr-1", seq + i) for i in range(200)])
            if status == 503:
                refused = body
                break
            assert status == 200
            assert all(r["status"] == "committed" for r in body["results"])
            seq += 200
            # housekeeping runs every second: give it a chance to notice
            if gw.committer.backpressure is None and seq % 2000 == 0:
                await wait_until(lambda: gw.stats().get("disk") is not None, what="housekeeping")
        assert refused is not None, "the budget never applied back-pressure"
        assert "disk budget" in refused["error"]
        c = gw.counters()
        assert c["readings_committed"] == seq  # everything acknowledged is kept
        assert c["backpressure_refusals"] >= 200
        assert c["readings_lost"] == 0
        _, text = await get(gw, "/metrics", auth=False)
        assert "ds4h_backpressure 1.0" in text
