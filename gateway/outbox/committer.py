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
from gateway.provenance.envelope import build_envelope, envelope_hash
from gateway.provenance.identity import GatewayIdentity

log = logging.getLogger(__name__)

GENESIS_PREV = bytes(32)
_QUARANTINE_BUFFER = 10_000


class CommitResult(enum.Enum):
    COMMITTED = "committed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    reason: str
    detail: str
    device_id: str | None = None
    payload: bytes = b""


_Item = tuple[Batch, "asyncio.Future[CommitResult]"]


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
        queue_size: int = 20_000,
    ) -> None:
        self._conn = conn
        self._identity = identity
        self._metrics = metrics
        self._max_delay_s = max_delay_s
        self._max_batches = max_batches
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._quarantine: deque[QuarantineRecord] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-writer")
        row = conn.execute("SELECT n, hash FROM envelopes ORDER BY n DESC LIMIT 1").fetchone()
        self._last_n: int = row[0] if row else 0
        self._prev_hash: bytes = row[1] if row else GENESIS_PREV
        self._accepting = True
        self._backpressure: str | None = None
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

    async def submit_many(self, batches: Sequence[Batch]) -> list[CommitResult]:
        """Commit ``batches``; returns one result per batch, in order, once all are durable."""
        if not self._accepting:
            raise ShuttingDownError("the gateway is stopping")
        if self._backpressure:
            self._metrics.backpressure_refusals.inc(len(batches))
            raise BackpressureError(self._backpressure)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[CommitResult]] = []
        for b in batches:
            fut: asyncio.Future[CommitResult] = loop.create_future()
            await self._queue.put((b, fut))
            futures.append(fut)
        self._metrics.readings_ingested.inc(sum(b.n_points for b in batches))
        return list(await asyncio.gather(*futures))

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
                items = await self._gather(loop)
                if items is None:
                    break
                await self._commit_items(loop, items)
            if self._quarantine:
                await loop.run_in_executor(self._executor, self._write, [], [])
        finally:
            self._executor.shutdown(wait=True)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> list[_Item] | None:
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=0.5)
                break
            except TimeoutError:
                if not self._accepting and self._queue.empty():
                    return None
                if self._quarantine:
                    await loop.run_in_executor(self._executor, self._write, [], [])
        items = [first]
        deadline = loop.time() + self._max_delay_s
        while len(items) < self._max_batches:
            try:
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return items

    async def _commit_items(self, loop: asyncio.AbstractEventLoop, items: list[_Item]) -> None:
        live = [(b, f) for b, f in items if not f.done()]
        quarantined = list(self._quarantine)
        self._quarantine.clear()
        try:
            results = await loop.run_in_executor(self._executor, self._write, [b for b, _ in live], quarantined)
        except Exception as e:  # the sources must learn that nothing was committed
            err = e if isinstance(e, OutboxError) else OutboxError(f"commit failed: {e}")
            log.error("outbox commit failed: %s", e)
            self._metrics.commit_failures.inc()
            for _, f in live:
                if not f.done():
                    f.set_exception(err)
            return
        now = time.time_ns()
        new_points = 0
        for (b, f), r in zip(live, results, strict=True):
            if r is CommitResult.COMMITTED:
                new_points += b.n_points
                self.activity.record(b, now)
                self._metrics.commit_latency.observe(max(0, now - b.received_ns) / 1e9)
            if not f.done():
                f.set_result(r)
        n_dup = sum(1 for r in results if r is CommitResult.DUPLICATE)
        self._metrics.readings_committed.inc(new_points)
        self._metrics.batches_committed.inc(len(results) - n_dup)
        self._metrics.batches_duplicate.inc(n_dup)
        if len(results) > n_dup:
            for notify in self.on_commit:
                notify()

    def _write(self, batches: list[Batch], quarantined: list[QuarantineRecord]) -> list[CommitResult]:
        """Runs on the writer thread: dedup, sign, insert, COMMIT."""
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
        conn.execute("BEGIN IMMEDIATE")
        try:
            if fresh:
                n = self._last_n + 1
                bodies = [encode_batch(b) for b, _ in fresh]
                cose = build_envelope(self._identity, n, self._prev_hash, now, bodies)
                h = envelope_hash(cose)
                conn.execute("INSERT INTO envelopes (n, created_ns, hash, cose) VALUES (?, ?, ?, ?)", (n, now, h, cose))
                conn.executemany(
                    "INSERT INTO batches (source_key, envelope_n, idx, device_id, priority, n_points, committed_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(k, n, i, b.device_id, int(b.priority), b.n_points, now) for i, (b, k) in enumerate(fresh)],
                )
            if quarantined:
                conn.executemany(
                    "INSERT INTO quarantine (time_ns, device_id, reason, detail, payload_sha256, payload_size)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            now,
                            q.device_id,
                            q.reason,
                            q.detail[:500],
                            hashlib.sha256(q.payload).digest() if q.payload else None,
                            len(q.payload),
                        )
                        for q in quarantined
                    ],
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if fresh:
            self._last_n, self._prev_hash = n, h
        return results

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

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()
