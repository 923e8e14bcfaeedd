"""Gateway → real VictoriaMetrics (InfluxDB v2 write API): outage, throttling, splitting, dead letters."""

from __future__ import annotations

from pathlib import Path

from gateway.pipeline import Gateway
from tests.faultproxy import FaultProxy
from tests.gw import hr_batch, make_config, post, running, wait_until
from tests.services import VictoriaMetrics

HR = '{__name__="heart_rate_value"}'


def influx_config(state_dir: Path, url: str, **extra: object) -> object:
    token = state_dir.parent / f"{state_dir.name}.token"
    token.write_text("test-token")
    token.chmod(0o600)
    sinks = {"influx": {"url": url, "token_file": str(token), "timeout_s": 5, **extra}}
    return make_config(state_dir, sinks=sinks)


def forwarded(gw: Gateway, sink: str = "influx") -> int:
    return int(gw.counters()["readings_forwarded"][sink])


async def test_points_land_once_even_when_replayed(tmp_state_dir: Path, vm_private: VictoriaMetrics) -> None:
    cfg = influx_config(tmp_state_dir, vm_private.url)
    async with running(cfg) as gw:  # type: ignore[arg-type]
        await post(gw, [hr_batch("hr-1", i, value=60 + i) for i in range(100)])
        await wait_until(lambda: forwarded(gw) == 100, what="forwarded to influx")
    # replay: rewind the sink's cursor, as after a crash between write and cursor update
    import sqlite3

    conn = sqlite3.connect(tmp_state_dir / "outbox.db")
    conn.execute("UPDATE sink_cursors SET last_id = 0 WHERE sink = 'influx'")
    conn.commit()
    conn.close()
    async with running(cfg) as gw:  # type: ignore[arg-type]
        await wait_until(lambda: forwarded(gw) == 100, what="replayed")
    vm_private.force_flush()
    assert vm_private.count_unique_points(HR) == 100
    series = vm_private.export(HR)
    values = sorted(v for s in series for v in s["values"])
    assert values == sorted(float(60 + i) for i in range(100))


async def test_store_outage_loses_nothing(tmp_state_dir: Path, vm_private: VictoriaMetrics) -> None:
    async with running(influx_config(tmp_state_dir, vm_private.url)) as gw:  # type: ignore[arg-type]
        await post(gw, [hr_batch("hr-1", i) for i in range(50)])
        await wait_until(lambda: forwarded(gw) == 50, what="first 50")
        vm_private.stop()
        for k in range(50, 250, 50):
            status, body = await post(gw, [hr_batch("hr-1", i) for i in range(k, k + 50)])
            assert status == 200 and all(r["status"] == "committed" for r in body["results"])
        await wait_until(
            lambda: (
                (
                    gw.metrics.registry.get_sample_value(
                        "ds4h_sink_errors_total", {"sink": "influx", "kind": "retryable"}
                    )
                    or 0
                )
                > 0
            ),
            what="a failed write",
        )
        await wait_until(lambda: forwarded(gw, "local") == 250, what="the other sink is not held up")
        assert forwarded(gw) == 50
        vm_private.start()
        await wait_until(lambda: forwarded(gw) == 250, timeout=30, what="drain after outage")
        assert gw.counters()["readings_lost"] == 0
    vm_private.force_flush()
    assert vm_private.count_unique_points(HR) == 250


async def test_throttle_split_and_dead_letter(tmp_state_dir: Path, vm_private: VictoriaMetrics) -> None:
    async with FaultProxy(vm_private.url) as proxy:
        cfg = influx_config(tmp_state_dir, proxy.url)
        async with running(cfg) as gw:  # type: ignore[arg-type]
            # 429 with Retry-After: the sink waits at least that long, then delivers
            proxy.fail_next(1, 429, headers={"Retry-After": "1"})
            import time

            t0 = time.monotonic()
            await post(gw, [hr_batch("hr-1", i) for i in range(10)])
            await wait_until(lambda: forwarded(gw) == 10, what="delivery after 429")
            assert time.monotonic() - t0 >= 0.9
            assert (
                gw.metrics.registry.get_sample_value("ds4h_sink_errors_total", {"sink": "influx", "kind": "throttled"})
                == 1
            )
            # 413: bodies over the proxy's limit are split by the sink until they pass
            proxy.max_body(400)
            await post(gw, [hr_batch("hr-1", i) for i in range(10, 40)])
            await wait_until(lambda: forwarded(gw) == 40, what="delivery after 413 splits")
            assert any(r.status == 413 for r in proxy.requests)
            proxy.max_body(None)
            # 400 for one request: the forwarder isolates the rejected batch into the dead-letter table
            proxy.fail_next(1, 400, body=b'{"error":"partial write: field type conflict"}')
            await post(gw, [hr_batch("hr-1", 40)])
            await wait_until(lambda: gw.stats().get("outbox", {}).get("influx", {}).get("dead_letters") == 1,
                             what="dead letter")  # fmt: skip
            await post(gw, [hr_batch("hr-1", i) for i in range(41, 45)])
            await wait_until(lambda: forwarded(gw) == 44, what="later batches not blocked")
            # re-drive the dead letter once the store accepts it again
            from gateway.outbox.store import OutboxStore, open_outbox

            conn = open_outbox(tmp_state_dir)
            assert [d["source_key"] for d in OutboxStore(conn).dead_letters("influx")] == ["hr-1/boot1/40"]
            assert OutboxStore(conn).redrive("influx") == 1
            conn.close()
            await wait_until(lambda: forwarded(gw) == 45, what="re-driven dead letter")
            await wait_until(lambda: gw.stats()["outbox"]["influx"]["dead_letters"] == 0, what="dead letter cleared")
    vm_private.force_flush()
    assert vm_private.count_unique_points(HR) == 45


async def test_urgent_batch_overtakes_a_backlog(tmp_state_dir: Path, vm_private: VictoriaMetrics) -> None:
    async with FaultProxy(vm_private.url) as proxy:
        cfg = influx_config(tmp_state_dir, proxy.url, max_batches_per_write=50)
        async with running(cfg) as gw:  # type: ignore[arg-type]
            proxy.fail_next(10_000, 503, headers={"Retry-After": "1"})  # store down: build a backlog
            await post(gw, [hr_batch("hr-1", i) for i in range(1000)])
            await wait_until(lambda: any(r.status == 503 for r in proxy.requests), what="the backlog's first try")
            hypo = {
                "device": "cgm-1",
                "key": ["boot1", 1],
                "readings": [{"metric": "glucose_isf", "v": 55, "u": "mg/dL", "t": 1_780_000_000_000_000_000}],
            }
            n = len(proxy.requests)
            await post(gw, [hypo])
            # the round in flight must be the urgent one before the store comes back (a bulk retry that had
            # already passed its priority check could otherwise be the first write after the outage)
            await wait_until(
                lambda: any(r.status == 503 and r.body_size < 400 for r in proxy.requests[n:]), what="urgent tried"
            )
            proxy.reset()
            await wait_until(lambda: forwarded(gw) == 1001, timeout=30, what="everything delivered")
            paths = [r for r in proxy.requests if r.status == 204]
            first_body_points = paths[0].body_size
            assert first_body_points < 400, "the first write after the outage carries only the urgent batch"
