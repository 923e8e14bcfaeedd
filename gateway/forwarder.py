"""Forwarding: one loop per sink that moves committed batches from the outbox into the sink.

At-least-once delivery plus idempotent sink writes gives exactly-once results. A failed write is
retried with backoff (honouring a server's Retry-After); a batch the sink rejects is isolated by
bisection and moved to the dead-letter table (counted, inspectable, re-drivable) so it never blocks
the ones behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.backoff import backoff_delay
from gateway.errors import (
    PayloadError,
    ProvenanceError,
    RejectedSinkError,
    RetryableSinkError,
    SinkError,
    ThrottledSinkError,
    TooLargeSinkError,
)
from gateway.metrics import GatewayMetrics
from gateway.model import Batch
from gateway.outbox.store import OutboxStore, Pending
from gateway.sinks.base import Sink

log = logging.getLogger(__name__)
T = TypeVar("T")

_Dead = list[tuple[Pending, str]]


class Forwarder:
    def __init__(
        self,
        store: OutboxStore,
        sink: Sink,
        metrics: GatewayMetrics,
        *,
        max_batches: int = 5000,
        max_points: int = 50_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 60.0,
        linger_s: float = 0.0,
    ) -> None:
        self._store = store
        self.sink = sink
        self._metrics = metrics
        self._max_batches = max_batches
        self._max_points = max_points
        self._linger_s = linger_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fwd-{sink.name}")
        self.wake = asyncio.Event()
        self._stopping = False
        self.idle = asyncio.Event()
        self.last_error: str | None = None
        store.ensure_sink(sink.name)

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Close the forwarder's outbox connection (after :meth:`run` has returned)."""
        self._store.conn.close()

    def finish_when_idle(self) -> None:
        """Shutdown: return from :meth:`run` as soon as nothing is left to deliver."""
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        name = self.sink.name
        attempt = 0
        round_: tuple[list[Pending], list[Batch], _Dead] | None = None
        try:
            while True:
                try:
                    # a retried bulk round must not hold back urgent batches that arrived meanwhile
                    if (
                        round_ is not None
                        and round_[0][0].lane == "bulk"
                        and await self._in_thread(self._store.has_priority_work, name)
                    ):
                        round_ = None
                    if round_ is None:
                        work = await self._in_thread(self._store.next_work, name, self._max_batches, self._max_points)
                        if not work:
                            self.idle.set()
                            if self._stopping:
                                return
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                            self.wake.clear()
                            continue
                        self.idle.clear()
                        if self._linger_s and work[0].lane == "bulk" and len(work) < self._max_batches // 4:
                            # a small bulk round: let a few more commits join it (fewer, larger writes)
                            await asyncio.sleep(self._linger_s)
                            work = await self._in_thread(
                                self._store.next_work, name, self._max_batches, self._max_points
                            )
                        batches, load_dead = await self._in_thread(self._load, work)
                        round_ = (work, batches, load_dead)
                    # a failed round is retried as it is: not fetched and decoded again
                    work, batches, load_dead = round_
                    failed = {d.id for d, _ in load_dead}
                    live = [p for p in work if p.id not in failed]
                    try:
                        dead = load_dead + await self._write_isolating(live, batches)
                    except (RetryableSinkError, ThrottledSinkError) as e:
                        kind = "throttled" if isinstance(e, ThrottledSinkError) else "retryable"
                        self._metrics.sink_errors.labels(sink=name, kind=kind).inc()
                        delay = backoff_delay(attempt, e, initial_s=self._retry_initial_s, max_s=self._retry_max_s)
                        attempt += 1
                        self.last_error = str(e)
                        log.warning("sink %s: %s; retrying in %.1f s (attempt %d)", name, e.summary, delay, attempt)
                        await asyncio.sleep(delay)
                        continue
                    round_ = None
                    attempt = 0
                    self.last_error = None
                    dead_ids = {p.id for p, _ in dead}
                    delivered = [p for p in work if p.id not in dead_ids]
                    await self._in_thread(self._store.record, name, delivered, dead)
                    points = sum(p.n_points for p in delivered)
                    self._metrics.readings_forwarded.labels(sink=name).inc(points)
                    self._metrics.batches_forwarded.labels(sink=name).inc(len(delivered))
                    if dead:
                        self._metrics.dead_lettered.labels(sink=name).inc(len(dead))
                        for p, _reason in dead:  # the reason may quote the data: it is in the (encrypted) dead letters
                            log.error(
                                "sink %s rejected batch %d (dead letter; 'ds4h-gateway outbox dead-letters' says why)",
                                name,
                                p.id,
                            )
                except sqlite3.Error as e:  # the outbox itself failed (locked, disk full): retry, never die
                    self._metrics.sink_errors.labels(sink=name, kind="outbox").inc()
                    delay = backoff_delay(attempt, None, initial_s=self._retry_initial_s, max_s=self._retry_max_s)
                    attempt += 1
                    self.last_error = f"outbox: {e}"
                    log.warning("sink %s: outbox access failed: %s; retrying in %.1f s", name, e, delay)
                    round_ = None
                    await asyncio.sleep(delay)
        finally:
            self._executor.shutdown(wait=True)  # no store call may outlive run(): close() follows

    def _load(self, work: Sequence[Pending]) -> tuple[list[Batch], _Dead]:
        """Decode batches; an envelope that fails verification dead-letters its batches, loudly."""
        try:
            return self._store.load(work), []
        except (ProvenanceError, PayloadError, LookupError):
            pass
        batches: list[Batch] = []
        dead: _Dead = []
        for p in work:
            try:
                batches.extend(self._store.load([p]))
            except (ProvenanceError, PayloadError, LookupError) as e:
                log.error("outbox batch %d cannot be forwarded: %s", p.id, e)
                dead.append((p, f"integrity: {e}"))
        return batches, dead

    async def _write_isolating(self, work: Sequence[Pending], batches: Sequence[Batch]) -> _Dead:
        if not batches:
            return []
        try:
            await self.sink.write(batches)
            return []
        except (RejectedSinkError, TooLargeSinkError) as e:
            self._metrics.sink_errors.labels(sink=self.sink.name, kind="rejected").inc()
            if len(batches) == 1:
                return [(work[0], str(e))]
        except (RetryableSinkError, ThrottledSinkError):
            raise
        except SinkError as e:  # an unclassified sink error is treated as transient
            raise RetryableSinkError(str(e)) from e
        except Exception as e:  # a sink bug must not stop the gateway: isolate the batch like a rejection
            log.exception("sink %s failed unexpectedly on %d batch(es)", self.sink.name, len(batches))
            if len(batches) == 1:
                return [(work[0], f"unexpected sink failure: {type(e).__name__}: {e}")]
        mid = len(batches) // 2
        left = await self._write_isolating(work[:mid], batches[:mid])
        right = await self._write_isolating(work[mid:], batches[mid:])
        return left + right
