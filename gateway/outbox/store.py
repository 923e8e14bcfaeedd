"""Read side of the outbox: what a sink still has to get, cursors, dead letters, archive, stats.

Each forwarder owns one :class:`OutboxStore` (its own SQLite connection, used from one thread at a
time). Delivery order for a sink: dead letters released for re-drive, then batches queued again for it
(``sink_again``: delivered before, to be delivered once more), then urgent batches ahead of the cursor,
then everything after the cursor in commit order. A batch delivered ahead of the cursor is remembered in
``sink_ahead`` so the bulk pass skips it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gateway.batchcodec import decode_batch
from gateway.model import Batch
from gateway.outbox.hotcache import HotBatches
from gateway.outbox.schema import MIGRATIONS, SEALED
from gateway.provenance.envelope import Envelope, open_envelope
from gateway.state.db import Synchronous, connect, write_transaction
from gateway.state.sealing import cipher_of

Lane = Literal["redrive", "again", "urgent", "bulk"]


class Pending(NamedTuple):
    """One batch a sink still has to get (a named tuple: there are thousands per round)."""

    id: int
    envelope_n: int
    idx: int
    lane: Lane
    n_points: int


class EnvelopeCache:
    """Verified envelopes shared by the forwarders (each envelope is verified once, not once per sink)."""

    def __init__(self, gateway_did: str | Callable[[int], str | None] | None, size: int = 8) -> None:
        """``gateway_did``: the signer of every envelope, or a key history's ``signer_for`` (number → did)."""
        self._did = gateway_did
        self._items: OrderedDict[int, Envelope] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, conn: sqlite3.Connection, n: int) -> Envelope:
        with self._lock:
            env = self._items.get(n)
            if env is not None:
                self._items.move_to_end(n)
                return env
        row = conn.execute("SELECT cose FROM envelopes WHERE n = ?", (n,)).fetchone()
        if row is None:
            raise LookupError(f"envelope {n} is not in the outbox")
        env = open_envelope(envelope_bytes(conn, n, row[0]), self._did(n) if callable(self._did) else self._did)
        with self._lock:
            self._items[n] = env
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return env


_COSE, _DETAIL, _REASON = SEALED


def envelope_bytes(conn: sqlite3.Connection, n: int, stored: bytes) -> bytes:
    """Envelope ``n``'s COSE bytes as stored in ``envelopes.cose`` (decrypted when the outbox is encrypted)."""
    return _COSE.open(cipher_of(conn), str(n), stored)  # type: ignore[no-any-return]


def seal_envelope(conn: sqlite3.Connection, n: int, cose: bytes) -> bytes:
    """What goes into ``envelopes.cose`` for envelope ``n``."""
    cipher = cipher_of(conn)
    return cose if cipher is None else cipher.seal("envelopes", "cose", str(n), cose)


def seal_text(conn: sqlite3.Connection, column: str, row: str, text: str) -> str | bytes:
    """What goes into a text column listed in :data:`SEALED` (``quarantine.detail``, ``dead_letters.reason``)."""
    cipher = cipher_of(conn)
    table = "quarantine" if column == "detail" else "dead_letters"
    return text if cipher is None else cipher.seal_text(table, column, row, text)


def open_outbox(
    state_dir: Path,
    synchronous: Synchronous = "FULL",
    *,
    check_same_thread: bool = False,
    readonly: bool = False,
) -> sqlite3.Connection:
    conn = connect(
        state_dir / "outbox.db",
        MIGRATIONS,
        synchronous=synchronous,
        check_same_thread=check_same_thread,
        readonly=readonly,
        sealed=SEALED,
    )
    # No checkpoint on COMMIT (that would stall a commit for tens of ms now and then):
    # housekeeping checkpoints the WAL in the background instead (Housekeeper.checkpoint).
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


class BatchRef(NamedTuple):
    """A batch as other state names it: its id, and what must match for the id to mean the same batch (an
    outbox recreated from scratch reuses ids)."""

    id: int
    envelope_n: int
    device_id: str


def queue_again(conn: sqlite3.Connection, sink: str, batches: Iterable[BatchRef]) -> tuple[int, int]:
    """Queue batches for one more delivery to ``sink`` (the ``sink_again`` lane, ahead of new data), in one
    transaction. A batch already queued is queued anew (a delivery fetched before this call does not clear it).
    Returns (queued, gone): ``gone`` are no longer in the outbox (pruned with their envelope) or not the batch
    named."""
    now = time.time_ns()
    queued = gone = 0
    with write_transaction(conn):
        for b in batches:
            row = conn.execute(
                "SELECT 1 FROM batches WHERE id = ? AND envelope_n = ? AND device_id = ?",
                (b.id, b.envelope_n, b.device_id),
            ).fetchone()
            if row is None:
                gone += 1
                continue
            conn.execute(
                "INSERT INTO sink_again (sink, batch_id, queued_ns) VALUES (?, ?, ?)"
                " ON CONFLICT (sink, batch_id) DO UPDATE SET queued_ns = max(queued_ns + 1, excluded.queued_ns)",
                (sink, b.id, now),
            )
            queued += 1
    return queued, gone


class OutboxStore:
    def __init__(
        self,
        conn: sqlite3.Connection,
        gateway_did: str | Callable[[int], str | None] | None = None,
        *,
        envelopes: EnvelopeCache | None = None,
        hot: HotBatches | None = None,
    ) -> None:
        self._conn = conn
        self._envelopes = envelopes or EnvelopeCache(gateway_did)
        self._hot = hot
        self._again_seen: dict[tuple[str, int], int] = {}
        """(sink, batch id) → the ``queued_ns`` of its ``sink_again`` row when it was fetched: a row queued again
        meanwhile (newer) survives the delivery of the older fetch."""

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    # --- cursors ---------------------------------------------------------------------------------
    def cursor(self, sink: str) -> int:
        row = self._conn.execute("SELECT last_id FROM sink_cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def ensure_sink(self, sink: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO sink_cursors (sink, last_id) VALUES (?, 0)", (sink,))

    # --- what to deliver -------------------------------------------------------------------------
    def next_work(self, sink: str, limit: int, max_points: int = 1 << 62) -> list[Pending]:
        """The next round for ``sink``: at most ``limit`` batches and about ``max_points`` points."""
        while True:
            work = self._next_work(sink, limit, max_points)
            if work is not None:
                return work

    def _next_work(self, sink: str, limit: int, max_points: int) -> list[Pending] | None:
        """One look; ``None`` when the window held only batches already sent ahead (cursor moved: look again)."""
        cur = self.cursor(sink)
        rows = self._bounded(
            "redrive",
            max_points,
            self._conn.execute(
                "SELECT b.id, b.envelope_n, b.idx, b.n_points FROM dead_letters d JOIN batches b"
                " ON b.id = d.batch_id WHERE d.sink = ? AND d.state = 'redrive' ORDER BY b.id LIMIT ?",
                (sink, limit),
            ),
        )
        if rows:
            return rows
        again = self._conn.execute(
            "SELECT b.id, b.envelope_n, b.idx, b.n_points, a.queued_ns FROM sink_again a JOIN batches b"
            " ON b.id = a.batch_id WHERE a.sink = ? ORDER BY b.id LIMIT ?",
            (sink, limit),
        ).fetchall()
        if again:
            rows = self._bounded("again", max_points, (r[:4] for r in again))
            for r in again[: len(rows)]:
                self._again_seen[(sink, r[0])] = r[4]
            return rows
        rows = self._bounded(
            "urgent",
            max_points,
            self._conn.execute(
                "SELECT id, envelope_n, idx, n_points FROM batches WHERE priority > 0 AND id > ?"
                " AND id NOT IN (SELECT batch_id FROM sink_ahead WHERE sink = ?) ORDER BY id LIMIT ?",
                (cur, sink, limit),
            ),
        )
        if rows:
            return rows
        ahead = {r[0] for r in self._conn.execute("SELECT batch_id FROM sink_ahead WHERE sink = ?", (sink,))}
        out = self._bounded(
            "bulk",
            max_points,
            self._conn.execute(
                "SELECT id, envelope_n, idx, n_points FROM batches WHERE id > ? ORDER BY id LIMIT ?", (cur, limit)
            ),
        )
        if ahead and out:
            # everything in this window is either to send or already sent ahead: advance past the latter
            todo = [p for p in out if p.id not in ahead]
            if not todo:
                self.record(sink, out, [])
                return None
            out = todo
        return out

    def has_priority_work(self, sink: str) -> bool:
        """Is there a released dead letter, a batch queued again or an urgent batch not yet delivered to ``sink``?"""
        cur = self.cursor(sink)
        row = self._conn.execute(
            "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE sink = ? AND state = 'redrive')"
            " OR EXISTS (SELECT 1 FROM sink_again WHERE sink = ?)"
            " OR EXISTS (SELECT 1 FROM batches WHERE priority > 0 AND id > ?"
            " AND id NOT IN (SELECT batch_id FROM sink_ahead WHERE sink = ?))",
            (sink, sink, cur, sink),
        ).fetchone()
        return bool(row[0])

    @staticmethod
    def _bounded(lane: Lane, max_points: int, rows: Iterable[tuple[int, int, int, int]]) -> list[Pending]:
        out: list[Pending] = []
        points = 0
        for r in rows:
            if out and points + r[3] > max_points:
                break
            out.append(Pending(r[0], r[1], r[2], lane, r[3]))
            points += r[3]
        return out

    def load(self, pending: Sequence[Pending]) -> list[Batch]:
        """The batches: from the in-memory cache when still there, else decoded from their envelopes
        (each envelope's signature verified once, shared between forwarders)."""
        hot = self._hot
        out = []
        for p in pending:
            b = hot.get(p.id) if hot is not None else None
            if b is None:
                env = self._envelopes.get(self._conn, p.envelope_n)
                b = decode_batch(env.batch_bodies[p.idx])
            out.append(b)
        return out

    # --- recording delivery ----------------------------------------------------------------------
    def record(self, sink: str, delivered: Sequence[Pending], dead: Sequence[tuple[Pending, str]]) -> None:
        """One transaction: advance the cursor / mark ahead / move to dead letters."""
        now = time.time_ns()
        conn = self._conn
        with write_transaction(conn):
            done = list(delivered) + [p for p, _ in dead]
            for p, reason in dead:
                conn.execute(
                    "INSERT INTO dead_letters (sink, batch_id, envelope_n, reason, state, first_ns, last_ns)"
                    " VALUES (?, ?, ?, ?, 'dead', ?, ?) ON CONFLICT (sink, batch_id) DO UPDATE SET"
                    " state = 'dead', reason = excluded.reason, last_ns = excluded.last_ns,"
                    " attempts = attempts + 1",
                    (sink, p.id, p.envelope_n, seal_text(conn, "reason", f"{sink}\x00{p.id}", reason[:500]), now, now),
                )
            redriven = [p.id for p in delivered if p.lane == "redrive"]
            if redriven:
                conn.executemany(
                    "DELETE FROM dead_letters WHERE sink = ? AND batch_id = ?", [(sink, i) for i in redriven]
                )
            again = [p.id for p in done if p.lane == "again"]
            if again:
                seen = self._again_seen
                conn.executemany(
                    "DELETE FROM sink_again WHERE sink = ? AND batch_id = ? AND queued_ns <= ?",
                    [(sink, i, seen.pop((sink, i), 1 << 62)) for i in again],
                )
                delivered_again = [(sink, p.id) for p in delivered if p.lane == "again"]
                if delivered_again:  # delivered now: an older dead letter of it is done with
                    conn.executemany("DELETE FROM dead_letters WHERE sink = ? AND batch_id = ?", delivered_again)
            urgent = [p.id for p in done if p.lane == "urgent"]
            if urgent:
                conn.executemany(
                    "INSERT OR IGNORE INTO sink_ahead (sink, batch_id) VALUES (?, ?)",
                    [(sink, i) for i in urgent],
                )
            bulk = [p.id for p in done if p.lane == "bulk"]
            if bulk:
                top = max(bulk)
                conn.execute(
                    "INSERT INTO sink_cursors (sink, last_id) VALUES (?, ?) ON CONFLICT (sink) DO UPDATE"
                    " SET last_id = max(last_id, excluded.last_id)",
                    (sink, top),
                )
                conn.execute("DELETE FROM sink_ahead WHERE sink = ? AND batch_id <= ?", (sink, top))
        if bulk and self._hot is not None:
            self._hot.delivered_upto(sink, max(bulk))

    def queue_again(self, sink: str, batches: Iterable[BatchRef]) -> tuple[int, int]:
        """Queue batches already delivered to ``sink`` for one more delivery (ahead of new data): see
        :func:`queue_again`."""
        return queue_again(self._conn, sink, batches)

    def queued_again(self, sink: str) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM sink_again WHERE sink = ?", (sink,)).fetchone()[0])

    def redrive(self, sink: str | None = None) -> int:
        """Release dead letters (of one sink, or all) for another delivery attempt."""
        q = "UPDATE dead_letters SET state = 'redrive' WHERE state = 'dead'"
        args: tuple[Any, ...] = ()
        if sink:
            q += " AND sink = ?"
            args = (sink,)
        return self._conn.execute(q, args).rowcount

    def dead_letters(self, sink: str | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT d.sink, d.batch_id, b.source_key, d.reason, d.state, d.attempts, d.first_ns, d.last_ns"
            " FROM dead_letters d JOIN batches b ON b.id = d.batch_id"
        )
        args: tuple[Any, ...] = ()
        if sink:
            q += " WHERE d.sink = ?"
            args = (sink,)
        cols = ("sink", "batch_id", "source_key", "reason", "state", "attempts", "first_ns", "last_ns")
        out = [dict(zip(cols, r, strict=True)) for r in self._conn.execute(q + " ORDER BY d.batch_id", args)]
        cipher = cipher_of(self._conn)
        for d in out:
            d["reason"] = _REASON.open(cipher, f"{d['sink']}\x00{d['batch_id']}", d["reason"])
        return out

    # --- stats -----------------------------------------------------------------------------------
    def pending_stats(self, sink: str) -> tuple[int, float]:
        """(batches not yet delivered to ``sink``, age in seconds of the oldest of them)."""
        cur = self.cursor(sink)
        count = self._conn.execute("SELECT COUNT(*) FROM batches WHERE id > ?", (cur,)).fetchone()[0]
        ahead = self._conn.execute("SELECT COUNT(*) FROM sink_ahead WHERE sink = ?", (sink,)).fetchone()[0]
        row = self._conn.execute(
            "SELECT committed_ns FROM batches WHERE id > ? AND id NOT IN"
            " (SELECT batch_id FROM sink_ahead WHERE sink = ?) ORDER BY id LIMIT 1",
            (cur, sink),
        ).fetchone()
        age = max(0.0, (time.time_ns() - row[0]) / 1e9) if row else 0.0
        return int(count) - int(ahead), age

    def sink_summary(self, sink: str) -> dict[str, Any]:
        """What ``outbox stats`` and ``/api/v1/stats`` show per sink."""
        depth, age = self.pending_stats(sink)
        return {
            "pending_batches": depth,
            "oldest_age_s": round(age, 3),
            "dead_letters": len(self.dead_letters(sink)),
            "queued_again": self.queued_again(sink),
        }

    def sinks(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT sink FROM sink_cursors ORDER BY sink")]

    def quarantine_counts(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self._conn.execute("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason")
        }

    def totals(self) -> dict[str, int]:
        c = self._conn
        return {
            "envelopes": int(c.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0]),
            "archived_envelopes": int(
                c.execute("SELECT COUNT(*) FROM envelopes WHERE delivered_ns IS NOT NULL").fetchone()[0]
            ),
            "batches": int(c.execute("SELECT COUNT(*) FROM batches").fetchone()[0]),
            "points": int(c.execute("SELECT COALESCE(SUM(n_points), 0) FROM batches").fetchone()[0]),
            "last_envelope": int(c.execute("SELECT COALESCE(MAX(n), 0) FROM envelopes").fetchone()[0]),
        }

    def envelopes(self, first: int = 1, last: int | None = None) -> list[bytes]:
        q = "SELECT n, cose FROM envelopes WHERE n >= ?"
        args: list[int] = [first]
        if last is not None:
            q += " AND n <= ?"
            args.append(last)
        return [envelope_bytes(self._conn, n, cose) for n, cose in self._conn.execute(q + " ORDER BY n", args)]

    def envelope_window(self, since_ns: int | None, until_ns: int | None) -> tuple[int, int] | None:
        """First and last number of the held envelopes created in [since, until] (``None``: none)."""
        row = self._conn.execute(
            "SELECT MIN(n), MAX(n) FROM envelopes WHERE created_ns >= ? AND created_ns <= ?",
            (since_ns if since_ns is not None else 0, until_ns if until_ns is not None else (1 << 63) - 1),
        ).fetchone()
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def iter_envelopes(self, first: int, last: int) -> Iterator[bytes]:
        """Envelopes ``first`` … ``last`` held now, in order, from one statement (one consistent snapshot)."""
        for n, cose in self._conn.execute(
            "SELECT n, cose FROM envelopes WHERE n >= ? AND n <= ? ORDER BY n", (first, last)
        ):
            yield envelope_bytes(self._conn, n, cose)
