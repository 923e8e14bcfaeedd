"""Archive and disk budget: what moves to the provenance archive, what is pruned, when to back-pressure.

- An envelope is *delivered* once every active sink's cursor is past all of its batches and none of
  them sits in a dead-letter table; it then stays in the provenance archive for
  ``provenance.archive_retention_days`` so exports can be verified later.
- Disk budget (outbox + archive + local history): over budget, the oldest delivered envelopes are
  pruned first, then the oldest local history; if that is not enough, ingest is back-pressured
  (sources are not acknowledged) until space is free again. Every step is logged and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.metrics import GatewayMetrics
from gateway.state.db import used_bytes, write_transaction

log = logging.getLogger(__name__)

_PRUNE_CHUNK = 200
_TRUNCATE_WAL_PAGES = 16_384  # 64 MiB of 4 KiB pages


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    used_bytes: int
    budget_bytes: int
    backpressure: str | None


class HistoryPruner:
    """What housekeeping needs from the local history: its size and a way to drop its oldest rows."""

    def __init__(self, used: Callable[[], int], prune_oldest: Callable[[int], int]) -> None:
        self.used = used
        self.prune_oldest = prune_oldest


class Housekeeper:
    def __init__(
        self,
        conn: sqlite3.Connection,
        metrics: GatewayMetrics,
        *,
        sinks: Sequence[str],
        retention_s: float,
        budget_bytes: int,
        history: HistoryPruner | None = None,
    ) -> None:
        self._conn = conn
        self._metrics = metrics
        self._sinks = list(sinks)
        self._retention_ns = int(retention_s * 1e9)
        self._budget = budget_bytes
        self._history = history
        metrics.disk_budget.set(budget_bytes)

    def mark_delivered(self) -> int:
        c = self._conn
        if not self._sinks:
            return 0
        placeholders = ",".join("?" * len(self._sinks))
        row = c.execute(f"SELECT MIN(last_id) FROM sink_cursors WHERE sink IN ({placeholders})", self._sinks).fetchone()
        known = c.execute(f"SELECT COUNT(*) FROM sink_cursors WHERE sink IN ({placeholders})", self._sinks).fetchone()
        if row[0] is None or known[0] < len(self._sinks):
            return 0
        min_cursor = int(row[0])
        nxt = c.execute("SELECT envelope_n FROM batches WHERE id > ? ORDER BY id LIMIT 1", (min_cursor,)).fetchone()
        limit = int(nxt[0]) if nxt else 1 << 62
        cur = c.execute(
            "UPDATE envelopes SET delivered_ns = ? WHERE delivered_ns IS NULL AND n < ?"
            " AND n NOT IN (SELECT envelope_n FROM dead_letters)",
            (time.time_ns(), limit),
        )
        return cur.rowcount

    def prune_expired(self) -> int:
        cutoff = time.time_ns() - self._retention_ns
        n = self._prune("delivered_ns < ?", (cutoff,), limit=None)
        if n:
            self._metrics.pruned_envelopes.labels(why="retention").inc(n)
        return n

    def _prune(self, where: str, args: tuple[int, ...], limit: int | None) -> int:
        # the newest envelope always stays: the chain (and the key history's envelope numbers) continue from it
        # a dead letter keeps its envelope (a batch queued again after delivery may become one)
        q = (
            "SELECT n FROM envelopes WHERE delivered_ns IS NOT NULL AND n < (SELECT MAX(n) FROM envelopes)"
            f" AND n NOT IN (SELECT envelope_n FROM dead_letters) AND {where} ORDER BY n"
        )
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        ns = [r[0] for r in self._conn.execute(q, args)]
        if not ns:
            return 0
        c = self._conn
        with write_transaction(c):
            again = c.executemany(
                "DELETE FROM sink_again WHERE batch_id IN (SELECT id FROM batches WHERE envelope_n = ?)",
                [(n,) for n in ns],
            ).rowcount
            c.executemany("DELETE FROM batches WHERE envelope_n = ?", [(n,) for n in ns])
            c.executemany("DELETE FROM envelopes WHERE n = ?", [(n,) for n in ns])
        if again > 0:
            log.warning("%d batch(es) queued again for a sink were pruned with their envelopes first", again)
        return len(ns)

    def used(self) -> int:
        """Bytes in use by the outbox (its pages and its write-ahead log) and the local history."""
        total = used_bytes(self._conn)
        db_file = self._conn.execute("PRAGMA database_list").fetchone()[2]
        with contextlib.suppress(OSError):
            total += os.path.getsize(f"{db_file}-wal")
        if self._history is not None:
            total += self._history.used()
        return total

    def enforce_budget(self) -> BudgetVerdict:
        used = self.used()
        pruned_env = pruned_hist = 0
        while used > self._budget:
            n = self._prune("1", (), limit=_PRUNE_CHUNK)
            if n:
                pruned_env += n
            elif self._history is not None and (k := self._history.prune_oldest(5000)):
                pruned_hist += k
            else:
                break
            used = self.used()
        if pruned_env:
            self._metrics.pruned_envelopes.labels(why="disk_budget").inc(pruned_env)
            log.warning("disk budget: pruned %d delivered envelopes from the provenance archive", pruned_env)
        if pruned_hist:
            self._metrics.pruned_history.labels(why="disk_budget").inc(pruned_hist)
            log.warning("disk budget: pruned %d rows of local history", pruned_hist)
        if used > self._budget:
            # the WAL file keeps its size after a passive checkpoint: once delivery has freed pages, truncate it
            # before deciding on back-pressure, or a WAL grown under load would hold back-pressure on for good
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            used = self.used()
        self._metrics.disk_used.set(used)
        reason = None
        if used > self._budget:
            reason = f"disk budget reached: {used} of {self._budget} bytes used by undelivered data"
        return BudgetVerdict(used, self._budget, reason)

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking writers; truncate it when it grew large."""
        busy, wal_pages, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not busy and wal_pages == done and wal_pages > _TRUNCATE_WAL_PAGES:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def run_once(self) -> BudgetVerdict:
        self.mark_delivered()
        self.prune_expired()
        self.checkpoint()
        return self.enforce_budget()
