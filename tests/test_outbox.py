"""Outbox internals: durability pragmas, migrations, dedup, lanes, dead letters, archive and budget."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.errors import BackpressureError, StateError
from gateway.metrics import GatewayMetrics
from gateway.model import Batch, Priority, Reading, SourceKey
from gateway.outbox.committer import CommitResult, Committer
from gateway.outbox.housekeeping import Housekeeper
from gateway.outbox.schema import MIGRATIONS
from gateway.outbox.store import BatchRef, OutboxStore, open_outbox
from gateway.provenance.identity import GatewayIdentity
from gateway.state.db import connect


def batch(seq: int, priority: Priority = Priority.BULK, device: str = "hr-1") -> Batch:
    r = Reading("heart_rate", 60.0 + seq % 50, "/min", 1_780_000_000_000_000_000 + seq * 10**9, seq=seq)
    return Batch(SourceKey(device, ("b", seq)), time.time_ns(), (r,), (), priority, "heart_rate")


def test_synchronous_full_by_default(tmp_state_dir: Path) -> None:
    conn = open_outbox(tmp_state_dir)
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_migrations_upgrade_keeps_data_and_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    v1 = ("CREATE TABLE t (a INTEGER)",)
    conn = connect(db, v1)
    conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    v2 = (*v1, "ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x'")
    conn = connect(db, v2)
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(42, "x")]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    with pytest.raises(StateError, match="newer than this gateway"):
        connect(db, v1)


def test_outbox_schema_is_versioned(tmp_state_dir: Path) -> None:
    conn = open_outbox(tmp_state_dir)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


async def _commit(state_dir: Path, batches: Sequence[Batch], identity: GatewayIdentity) -> list[CommitResult]:
    conn = open_outbox(state_dir)
    c = Committer(conn, identity, GatewayMetrics(), max_delay_s=0.001)
    task = asyncio.create_task(c.run())
    try:
        return await c.submit_many(batches)
    finally:
        await c.stop()
        await task
        conn.close()


async def test_dedup_survives_restart(tmp_state_dir: Path) -> None:
    ident = GatewayIdentity.generate()
    assert await _commit(tmp_state_dir, [batch(1), batch(2)], ident) == [CommitResult.COMMITTED] * 2
    again = await _commit(tmp_state_dir, [batch(2), batch(3)], ident)
    assert again == [CommitResult.DUPLICATE, CommitResult.COMMITTED]


async def test_urgent_lane_goes_first_and_cursor_skips_it(tmp_state_dir: Path) -> None:
    ident = GatewayIdentity.generate()
    batches = [batch(i) for i in range(100)] + [batch(100, Priority.URGENT)] + [batch(i) for i in range(101, 120)]
    await _commit(tmp_state_dir, batches, ident)
    store = OutboxStore(open_outbox(tmp_state_dir), ident.did)
    store.ensure_sink("s")
    first = store.next_work("s", 10)
    assert [p.lane for p in first] == ["urgent"]
    assert store.load(first)[0].key.parts == ("b", 100)
    store.record("s", first, [])
    seen = []
    while work := store.next_work("s", 30):
        assert all(p.lane == "bulk" for p in work)
        seen += [b.key.parts[1] for b in store.load(work)]
        store.record("s", work, [])
    assert seen == [i for i in range(120) if i != 100]
    assert store.pending_stats("s")[0] == 0


async def test_dead_letters_and_redrive(tmp_state_dir: Path) -> None:
    ident = GatewayIdentity.generate()
    await _commit(tmp_state_dir, [batch(i) for i in range(5)], ident)
    store = OutboxStore(open_outbox(tmp_state_dir), ident.did)
    store.ensure_sink("s")
    work = store.next_work("s", 10)
    store.record("s", [p for p in work if p.idx != 2], [(work[2], "400 bad field")])
    assert store.next_work("s", 10) == []
    dl = store.dead_letters("s")
    assert [(d["source_key"], d["reason"], d["state"]) for d in dl] == [("hr-1/b/2", "400 bad field", "dead")]
    assert store.redrive("s") == 1
    again = store.next_work("s", 10)
    assert [p.lane for p in again] == ["redrive"]
    store.record("s", again, [])
    assert store.dead_letters("s") == []


async def test_batches_queued_again_go_first_once_and_vanish_with_their_envelope(tmp_state_dir: Path) -> None:
    ident = GatewayIdentity.generate()
    await _commit(tmp_state_dir, [batch(i) for i in range(50)], ident)
    await _commit(tmp_state_dir, [batch(i) for i in range(50, 60)], ident)
    conn = open_outbox(tmp_state_dir)
    store = OutboxStore(conn, ident.did)
    store.ensure_sink("s")
    store.ensure_sink("other")
    while work := store.next_work("s", 100):
        store.record("s", work, [])
    refs = [BatchRef(*r) for r in conn.execute("SELECT id, envelope_n, device_id FROM batches ORDER BY id")]
    # an id not in the outbox, or one that names another batch (a recreated outbox reuses ids), is gone
    unknown, other_envelope = BatchRef(10**9, 1, "hr-1"), refs[4]._replace(envelope_n=99)
    assert store.queue_again("s", [refs[3], refs[55], unknown, other_envelope]) == (2, 2)
    assert store.queue_again("s", [refs[3]]) == (1, 0)  # already queued: queued anew, still once
    assert store.has_priority_work("s") and store.queued_again("s") == 2
    await _commit(tmp_state_dir, [batch(i) for i in range(60, 65)], ident)
    again = store.next_work("s", 100)
    assert [(p.lane, store.load([p])[0].key.parts[1]) for p in again] == [("again", 3), ("again", 55)]
    assert store.next_work("other", 100)[0].lane == "bulk"  # the other sink is not affected
    store.queue_again("s", [refs[55]])  # queued again while that delivery is under way: it must happen once more
    store.record("s", again, [])
    assert store.queued_again("s") == 1
    (once_more,) = store.next_work("s", 100)
    assert once_more.lane == "again" and once_more.id == refs[55].id
    store.record("s", [once_more], [])
    rest = store.next_work("s", 100)
    assert [p.lane for p in rest] == ["bulk"] * 5 and store.pending_stats("s")[0] == 5
    store.record("s", rest, [])
    for w in iter(lambda: store.next_work("other", 100), []):
        store.record("other", w, [])
    # a queued batch pruned with its (delivered) envelope leaves nothing behind
    assert store.queue_again("s", [refs[10]]) == (1, 0)
    hk = Housekeeper(conn, GatewayMetrics(), sinks=["s", "other"], retention_s=0, budget_bytes=10**9)
    assert hk.mark_delivered() == 3
    assert hk.prune_expired() == 2  # the newest envelope always stays
    assert store.queued_again("s") == 0 and store.next_work("s", 100) == []
    conn.close()


async def test_a_dead_letter_of_a_batch_queued_again_keeps_its_envelope(tmp_state_dir: Path) -> None:
    ident = GatewayIdentity.generate()
    await _commit(tmp_state_dir, [batch(i) for i in range(5)], ident)
    await _commit(tmp_state_dir, [batch(i) for i in range(5, 10)], ident)
    conn = open_outbox(tmp_state_dir)
    store = OutboxStore(conn, ident.did)
    store.ensure_sink("s")
    for w in iter(lambda: store.next_work("s", 100), []):
        store.record("s", w, [])
    hk = Housekeeper(conn, GatewayMetrics(), sinks=["s"], retention_s=3600, budget_bytes=10**9)
    assert hk.mark_delivered() == 2
    first = BatchRef(*conn.execute("SELECT id, envelope_n, device_id FROM batches ORDER BY id LIMIT 1").fetchone())
    store.queue_again("s", [first])
    (p,) = store.next_work("s", 100)
    store.record("s", [], [(p, "400 rejected")])  # the store rejects it this time
    assert [d["state"] for d in store.dead_letters("s")] == ["dead"]
    expired = Housekeeper(conn, GatewayMetrics(), sinks=["s"], retention_s=0, budget_bytes=10**9)
    assert expired.prune_expired() == 0  # its envelope stays while the dead letter needs it
    assert store.redrive("s") == 1
    (p,) = store.next_work("s", 100)
    assert p.lane == "redrive"
    store.record("s", [p], [])
    assert store.dead_letters("s") == [] and expired.prune_expired() == 1
    # delivered through the again lane, an older dead letter of the batch is done with too
    second = BatchRef(*conn.execute("SELECT id, envelope_n, device_id FROM batches ORDER BY id LIMIT 1").fetchone())
    assert second.envelope_n == 2
    store.queue_again("s", [second])
    (p,) = store.next_work("s", 100)
    store.record("s", [], [(p, "503 then 400")])
    store.queue_again("s", [second])
    (p,) = store.next_work("s", 100)
    assert p.lane == "again"
    store.record("s", [p], [])
    assert store.dead_letters("s") == []
    conn.close()


async def test_archive_retention_and_budget_backpressure(tmp_state_dir: Path) -> None:
    ident = GatewayIdentity.generate()
    await _commit(tmp_state_dir, [batch(i) for i in range(50)], ident)
    await _commit(tmp_state_dir, [batch(i) for i in range(50, 100)], ident)
    conn = open_outbox(tmp_state_dir)
    store = OutboxStore(conn, ident.did)
    store.ensure_sink("s")
    metrics = GatewayMetrics()
    hk = Housekeeper(conn, metrics, sinks=["s"], retention_s=3600, budget_bytes=10**9)
    assert hk.mark_delivered() == 0  # nothing delivered yet
    work = store.next_work("s", 50)  # exactly the first envelope
    store.record("s", work, [])
    assert hk.mark_delivered() == 1
    assert hk.prune_expired() == 0  # within retention
    # over budget: the delivered envelope is pruned first, then back-pressure for the undelivered one
    tight = Housekeeper(conn, metrics, sinks=["s"], retention_s=3600, budget_bytes=1)
    verdict = tight.enforce_budget()
    assert store.totals()["envelopes"] == 1
    assert verdict.backpressure is not None
    assert metrics.registry.get_sample_value("ds4h_pruned_envelopes_total", {"why": "disk_budget"}) == 1
    c = Committer(open_outbox(tmp_state_dir), ident, metrics)
    c.set_backpressure(verdict.backpressure)
    with pytest.raises(BackpressureError):
        await c.submit(batch(500))
    assert metrics.registry.get_sample_value("ds4h_backpressure_refusals_total") == 1
    conn.close()


def test_outbox_db_integrity(tmp_state_dir: Path) -> None:
    conn = open_outbox(tmp_state_dir)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{tmp_state_dir / 'nope.db'}?mode=ro", uri=True).execute("SELECT 1")


def test_registry_from_an_older_schema_is_upgraded_in_place(tmp_state_dir: Path) -> None:
    """A registry.db written before the clock-offset table existed (schema 1) opens without loss."""
    from gateway.devices import MIGRATIONS as REGISTRY_MIGRATIONS
    from gateway.devices import DeviceRegistry

    old = connect(tmp_state_dir / "registry.db", REGISTRY_MIGRATIONS[:1])
    old.execute("INSERT INTO devices (id, kind, enabled, created_ns, updated_ns) VALUES ('cgm-1', 'cgm', 0, 1, 1)")
    old.execute("INSERT INTO identities (kind, value, device_id) VALUES ('serial', 'SN-1', 'cgm-1')")
    old.close()
    reg = DeviceRegistry.open(tmp_state_dir)
    try:
        d = reg.get("cgm-1")
        assert d is not None and not d.enabled and d.identities == {"serial": "SN-1"}
        reg.set_clock_skew("cgm-1", 1234)
        assert reg.clock_skews() == {"cgm-1": 1234}
    finally:
        reg.close()


def test_write_transaction_rolls_back_and_leaves_the_connection_usable(tmp_path: Path) -> None:
    from gateway.state.db import write_transaction

    conn = connect(tmp_path / "t.db", ("CREATE TABLE t (a INTEGER)",))
    with pytest.raises(ZeroDivisionError), write_transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        _ = 1 / 0
    assert not conn.in_transaction
    with write_transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT a FROM t").fetchall() == [(2,)]
    conn.close()
