"""Group commit: many batches, one signed envelope, one SQLite transaction, one fsync.

Sources call :meth:`Committer.submit_many` and are answered only after COMMIT returned: with
``COMMITTED`` (stored now) or ``DUPLICATE`` (this source key was committed before — the source may ack
again). Back-pressure (disk budget, full queue on shutdown) raises :class:`BackpressureError` and
nothing of the request is acknowledged.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.activity import ActivityBoard
from gateway.batchcodec import encode_batch
from gateway.errors import BackpressureError, OutboxError, ShuttingDownError
from gateway.metrics import GatewayMetrics
from gateway.model import Batch
from gateway.outbox.hotcache import HotBatches
from gateway.outbox.store import seal_envelope, seal_text
from gateway.provenance.envelope import build_envelope, envelope_hash
from gateway.provenance.identity import GatewayIdentity
from gateway.state.db import write_transaction

log = logging.getLogger(__name__)

GENESIS_PREV = bytes(32)
_QUARANTINE_BUFFER = 10_000


class CommitResult(enum.Enum):
    COMMITTED = "committed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A rejected input. The payload itself is never stored: only its SHA-256 and size."""

    reason: str
    detail: str
    device_id: str | None = None
    payload_sha256: bytes | None = None
    payload_size: int = 0

    def __post_init__(self) -> None:
        # input text can hold anything (e.g. lone surrogates from JSON): keep it storable
        object.__setattr__(self, "detail", _storable(self.detail)[:500])
        if self.device_id is not None:
            object.__setattr__(self, "device_id", _storable(self.device_id)[:64])

    @classmethod
    def of(cls, reason: str, detail: str, device_id: str | None, payload: bytes) -> QuarantineRecord:
        digest = hashlib.sha256(payload).digest() if payload else None
        return cls(reason, detail, device_id, digest, len(payload))


def _storable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(slots=True)
class _Group:
    """The batches of one submission (one request, one notification …): answered together."""

    batches: Sequence[Batch]
    future: asyncio.Future[list[CommitResult]]


class Committer:
    """Owns the outbox's write connection; every write goes through its single writer thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        identity: GatewayIdentity,
        metrics: GatewayMetrics,
        *,
        max_delay_s: float = 0.005,
        max_batches: int = 2000,
        max_points: int = 50_000,
        queue_size: int = 20_000,
        hot: HotBatches | None = None,
    ) -> None:
        self._conn = conn
        self._identity = identity
        self._metrics = metrics
        self._max_delay_s = max_delay_s
        self._max_batches = max_batches
        self._max_points = max_points
        self._capacity = queue_size
        self._queued = 0
        self._groups: deque[_Group] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._quarantine: deque[QuarantineRecord] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-writer")
        row = conn.execute("SELECT n, hash FROM envelopes ORDER BY n DESC LIMIT 1").fetchone()
        self._last_n: int = row[0] if row else 0
        self._prev_hash: bytes = row[1] if row else GENESIS_PREV
        self._accepting = True
        self._backpressure: str | None = None
        self._hot = hot
        self.activity = ActivityBoard()
        self.on_commit: list[Callable[[], None]] = []
        """Called after every commit that stored something new (forwarders wake up)."""

    # --- the source side -------------------------------------------------------------------------
    def set_backpressure(self, reason: str | None) -> None:
        if reason and not self._backpressure:
            log.warning("outbox back-pressure on: %s — sources are not acknowledged", reason)
        elif not reason and self._backpressure:
            log.info("outbox back-pressure off")
        self._backpressure = reason
        self._metrics.backpressure.set(1 if reason else 0)

    @property
    def backpressure(self) -> str | None:
        return self._backpressure

    async def submit_many(
        self, batches: Sequence[Batch], quarantined: Sequence[QuarantineRecord] = ()
    ) -> list[CommitResult]:
        """Commit ``batches``; returns one result per batch, in order, once all are durable.

        ``quarantined`` records are durable too when this returns (a source that acknowledges a rejected
        message must first have recorded the rejection). Waits while more than ``queue_size`` batches are
        queued (a slow disk slows its sources).
        """
        if not self._accepting:
            raise ShuttingDownError("the gateway is stopping")
        if self._backpressure:
            self._metrics.backpressure_refusals.inc(len(batches))
            raise BackpressureError(self._backpressure)
        for q in quarantined:
            self.quarantine(q)
        if not batches and not quarantined:
            return []
        n = len(batches)
        while self._queued and self._queued + n > self._capacity:
            self._room.clear()
            await self._room.wait()
        if not self._accepting:
            raise ShuttingDownError("the gateway is stopping")
        fut: asyncio.Future[list[CommitResult]] = asyncio.get_running_loop().create_future()
        self._groups.append(_Group(batches, fut))
        self._queued += n
        self._wakeup.set()
        self._metrics.readings_ingested.inc(sum(b.n_points for b in batches))
        return await fut

    async def submit(self, batch: Batch) -> CommitResult:
        return (await self.submit_many([batch]))[0]

    def quarantine(self, record: QuarantineRecord) -> None:
        """Record a rejected input; written with the next commit. Never blocks the caller."""
        self._metrics.rejected.labels(reason=record.reason).inc()
        if len(self._quarantine) >= _QUARANTINE_BUFFER:
            self._metrics.quarantine_overflow.inc()
            return
        self._quarantine.append(record)

    # --- the writer ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Commit loop; returns when :meth:`stop` was called and everything queued is committed."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                groups = await self._gather(loop)
                if groups is None:
                    break
                await self._commit_groups(loop, groups)
            if self._quarantine:
                await self._write_quarantine(loop)
        finally:
            self._executor.shutdown(wait=True)

    async def _write_quarantine(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write pending quarantine records on their own; a failure is logged and counted, never fatal."""
        records = self._take_quarantine()
        try:
            await loop.run_in_executor(self._executor, self._write, [], records)
        except Exception as e:  # the records are lost, loudly: the gateway keeps running
            log.error("could not store %d quarantine record(s): %s", len(records), e)
            self._metrics.commit_failures.inc()

    def _take_quarantine(self) -> list[QuarantineRecord]:
        q = list(self._quarantine)
        self._quarantine.clear()
        return q

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> list[_Group] | None:
        while not self._groups:
            if not self._accepting:
                return None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=0.5)
            except TimeoutError:
                if self._quarantine:
                    await self._write_quarantine(loop)
        # group commit: if the first submission is small, give others a moment to join it
        if self._queued < self._max_batches and self._max_delay_s > 0:
            deadline = loop.time() + self._max_delay_s
            while self._queued < self._max_batches and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
                except TimeoutError:
                    break
        groups: list[_Group] = []
        taken = points = 0
        while self._groups:
            nxt = self._groups[0]
            more = sum(b.n_points for b in nxt.batches)
            if groups and (taken + len(nxt.batches) > self._max_batches or points + more > self._max_points):
                break
            groups.append(self._groups.popleft())
            taken += len(nxt.batches)
            points += more
        return groups

    async def _commit_groups(self, loop: asyncio.AbstractEventLoop, groups: list[_Group]) -> None:
        live = [g for g in groups if not g.future.done()]  # a cancelled submission is not committed
        batches = [b for g in live for b in g.batches]
        try:
            results, first_id = await loop.run_in_executor(
                self._executor, self._write, batches, self._take_quarantine()
            )
        except Exception as e:  # the sources must learn that nothing was committed
            err = e if isinstance(e, OutboxError) else OutboxError(f"commit failed: {e}")
            log.error("outbox commit failed: %s", e)
            self._metrics.commit_failures.inc()
            for g in live:
                if not g.future.done():
                    g.future.set_exception(err)
            return
        finally:
            self._queued -= sum(len(g.batches) for g in groups)
            self._room.set()
        now = time.time_ns()
        new_points = 0
        fresh: list[tuple[int, Batch]] = []
        next_id = first_id
        for b, r in zip(batches, results, strict=True):
            if r is CommitResult.COMMITTED:
                new_points += b.n_points
                self.activity.record(b, now)
                fresh.append((next_id, b))
                next_id += 1
        for g in live:  # one observation per submission: its batches were received together
            if g.batches:
                self._metrics.commit_latency.observe(max(0, now - g.batches[0].received_ns) / 1e9)
        if self._hot is not None and fresh and first_id > 0:
            self._hot.add(fresh)
        pos = 0
        for g in live:
            k = len(g.batches)
            if not g.future.done():
                g.future.set_result(results[pos : pos + k])
            pos += k
        n_dup = len(results) - len(fresh)
        self._metrics.readings_committed.inc(new_points)
        self._metrics.batches_committed.inc(len(fresh))
        self._metrics.batches_duplicate.inc(n_dup)
        if fresh:
            for notify in self.on_commit:
                notify()

    def _write(self, batches: list[Batch], quarantined: list[QuarantineRecord]) -> tuple[list[CommitResult], int]:
        """Runs on the writer thread: dedup, sign, insert, COMMIT. Returns the results and the id of the
        first new batch (ids of new batches are consecutive; 0 when unknown)."""
        results: list[CommitResult] = []
        fresh: list[tuple[Batch, str]] = []
        seen: set[str] = set()
        keys = [b.key.text() for b in batches]
        existing = self._existing(keys)
        for b, k in zip(batches, keys, strict=True):
            if k in existing or k in seen:
                results.append(CommitResult.DUPLICATE)
            else:
                seen.add(k)
                fresh.append((b, k))
                results.append(CommitResult.COMMITTED)
        now = time.time_ns()
        conn = self._conn
        first_id = 0
        with write_transaction(conn):
            if fresh:
                n = self._last_n + 1
                self._check_key_current(conn)
                bodies = [encode_batch(b) for b, _ in fresh]
                cose = build_envelope(self._identity, n, self._prev_hash, now, bodies)
                h = envelope_hash(cose)
                conn.execute(
                    "INSERT INTO envelopes (n, created_ns, hash, cose) VALUES (?, ?, ?, ?)",
                    (n, now, h, seal_envelope(conn, n, cose)),
                )
                row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
                before = int(row[0]) if row else 0
                conn.executemany(
                    "INSERT INTO batches (source_key, envelope_n, idx, device_id, priority, n_points, committed_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(k, n, i, b.device_id, int(b.priority), b.n_points, now) for i, (b, k) in enumerate(fresh)],
                )
                last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()[0]
                if last - before == len(fresh):  # AUTOINCREMENT under our single writer: consecutive ids
                    first_id = before + 1
            if quarantined:
                # explicit ids (under the write lock): an encrypted detail is bound to its row id
                top = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM quarantine").fetchone()[0])
                conn.executemany(
                    "INSERT INTO quarantine (id, time_ns, device_id, reason, detail, payload_sha256, payload_size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (i, now, q.device_id, q.reason, seal_text(conn, "detail", str(i), q.detail), q.payload_sha256,
                         q.payload_size)
                        for i, q in enumerate(quarantined, top + 1)
                    ],
                )  # fmt: skip
        if fresh:
            self._last_n, self._prev_hash = n, h
        return results, first_id

    def _check_key_current(self, conn: sqlite3.Connection) -> None:
        """Sign only with the key history's current key (it changes only by ``keys rotate``, under this
        database's write lock): a gateway left running through a rotation stops committing, loudly."""
        row = conn.execute("SELECT did FROM key_history ORDER BY k DESC LIMIT 1").fetchone()
        if row is not None and row[0] != self._identity.did:
            raise OutboxError(
                f"the gateway key was rotated to {row[0]} while this gateway runs with {self._identity.did}: "
                "nothing more is signed or acknowledged; restart the gateway"
            )

    def _existing(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT source_key FROM batches WHERE source_key IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self._conn.execute(q, chunk))
        return found

    async def stop(self) -> None:
        """Stop accepting new batches; :meth:`run` returns once the queue is committed."""
        self._accepting = False
        self._wakeup.set()
        self._room.set()

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        return self._queued
