"""``local`` sink: embedded SQLite history (``<state_dir>/history.db``) with a retention setting.

It is the sole sink when no store is configured, and the dataspace endpoint reads it. Writes are
idempotent (the primary key is the point identity: device, metric, time), so a replay rewrites the
same rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import RetryableSinkError
from gateway.model import Batch, Reading
from gateway.state.db import connect, used_bytes

MIGRATIONS = (
    """
    CREATE TABLE readings (
        device TEXT NOT NULL,
        metric TEXT NOT NULL,
        t_ns INTEGER NOT NULL,
        value REAL,
        unit TEXT NOT NULL,
        precision INTEGER,
        absent TEXT,
        seq INTEGER,
        tq INTEGER NOT NULL,
        status INTEGER NOT NULL,
        alert INTEGER NOT NULL,
        PRIMARY KEY (device, metric, t_ns)
    ) WITHOUT ROWID;
    CREATE INDEX readings_time ON readings(t_ns);
    CREATE TABLE waveforms (
        device TEXT NOT NULL,
        metric TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        period_ns INTEGER NOT NULL,
        unit TEXT NOT NULL,
        n INTEGER NOT NULL,
        samples BLOB NOT NULL,
        tq INTEGER NOT NULL,
        PRIMARY KEY (device, metric, start_ns)
    ) WITHOUT ROWID;
    CREATE INDEX waveforms_time ON waveforms(start_ns)
    """,
)


_READING_COLUMNS = ("device", *Reading._fields)
_COLUMN_NAMES = {"device_time_ns": "t_ns", "time_quality": "tq"}
_INSERT_READINGS = (
    f"INSERT OR REPLACE INTO readings ({', '.join(_COLUMN_NAMES.get(c, c) for c in _READING_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_READING_COLUMNS))})"
)


def open_history(state_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    return connect(state_dir / "history.db", MIGRATIONS, check_same_thread=False, readonly=readonly)


class LocalSink:
    name = "local"

    def __init__(self, state_dir: Path, retention_days: float = 30.0) -> None:
        self._conn = open_history(state_dir)
        self._retention_ns = int(retention_days * 86400e9)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-sink")
        self._lock = asyncio.Lock()
        self._tlock = threading.Lock()
        """Serialises transactions of the sink thread and the housekeeping thread on one connection."""

    async def write(self, batches: Sequence[Batch]) -> None:
        async with self._lock:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batches)
            except sqlite3.OperationalError as e:  # locked / disk I/O: the outbox still holds the data
                raise RetryableSinkError(f"local history: {e}") from e

    def _write(self, batches: Sequence[Batch]) -> None:
        rows: list[tuple[Any, ...]] = []
        waves: list[tuple[Any, ...]] = []
        for b in batches:
            d = (b.device_id,)
            rows.extend([d + r for r in b.readings])  # column order of _READING_COLUMNS = (device, *Reading)
            for w in b.waveforms:
                waves.append(
                    (
                        b.device_id,
                        w.metric,
                        w.start_ns,
                        w.period_ns,
                        w.unit,
                        int(w.samples.size),
                        w.samples.astype("<i4").tobytes(),
                        int(w.time_quality),
                    )
                )
        with self._tlock:
            self._commit_rows(rows, waves)

    def _commit_rows(self, rows: list[tuple[Any, ...]], waves: list[tuple[Any, ...]]) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                c.executemany(_INSERT_READINGS, rows)
            if waves:
                c.executemany("INSERT OR REPLACE INTO waveforms VALUES (?,?,?,?,?,?,?,?)", waves)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # --- housekeeping (called from the housekeeper's thread) ---------------------------------------
    def used_bytes(self) -> int:
        with self._tlock:
            return used_bytes(self._conn)

    def prune_expired(self) -> int:
        return self._delete_before(time.time_ns() - self._retention_ns)

    def prune_oldest(self, rows: int) -> int:
        """Drop about ``rows`` of the oldest history rows (disk budget); returns rows deleted."""
        row = self._conn.execute(
            "SELECT t_ns FROM readings ORDER BY t_ns LIMIT 1 OFFSET ?", (max(0, rows - 1),)
        ).fetchone()
        wrow = self._conn.execute(
            "SELECT start_ns FROM waveforms ORDER BY start_ns LIMIT 1 OFFSET ?", (max(0, rows // 50 - 1),)
        ).fetchone()
        candidates = [r[0] for r in (row, wrow) if r is not None]
        if not candidates:
            oldest = self._conn.execute(
                "SELECT MAX(t) FROM (SELECT MAX(t_ns) AS t FROM readings UNION ALL SELECT MAX(start_ns) FROM waveforms)"
            ).fetchone()
            if oldest[0] is None:
                return 0
            candidates = [oldest[0]]
        return self._delete_before(min(candidates) + 1)

    def _delete_before(self, cutoff_ns: int) -> int:
        with self._tlock:
            return self._delete_locked(cutoff_ns)

    def _delete_locked(self, cutoff_ns: int) -> int:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            n = c.execute("DELETE FROM readings WHERE t_ns < ?", (cutoff_ns,)).rowcount
            n += c.execute("DELETE FROM waveforms WHERE start_ns < ?", (cutoff_ns,)).rowcount
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return int(n)

    # --- reads (status, tests, the dataspace endpoint later) ----------------------------------------
    def count(self) -> tuple[int, int]:
        """(readings, waveform samples) held."""
        r = self._conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        s = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM waveforms").fetchone()[0]
        return int(r), int(s)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()


def waveform_samples(blob: bytes) -> np.ndarray[Any, np.dtype[np.int32]]:
    return np.frombuffer(blob, dtype="<i4").astype(np.int32)
