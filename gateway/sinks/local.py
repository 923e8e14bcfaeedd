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
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from gateway.errors import RejectedSinkError, RetryableSinkError
from gateway.model import Batch, Reading
from gateway.state.db import connect, used_bytes, write_transaction
from gateway.state.sealing import MIGRATION as SEALING_MIGRATION
from gateway.state.sealing import SealedColumn, cipher_of, reseal_some

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
    # retention counts from when a row was stored, not from its device time: a meter uploading
    # month-old records must not see them deleted the second they arrive
    """
    ALTER TABLE readings ADD COLUMN stored_ns INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE waveforms ADD COLUMN stored_ns INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX readings_stored ON readings(stored_ns);
    CREATE INDEX waveforms_stored ON waveforms(stored_ns)
    """,
    # spectra of research sensors: one row per spectrum, values as float32 little-endian
    """
    CREATE TABLE spectra (
        device TEXT NOT NULL,
        metric TEXT NOT NULL,
        t_ns INTEGER NOT NULL,
        unit TEXT NOT NULL,
        axis_start REAL NOT NULL,
        axis_step REAL NOT NULL,
        axis_unit TEXT NOT NULL,
        n INTEGER NOT NULL,
        "values" BLOB NOT NULL,
        tq INTEGER NOT NULL,
        stored_ns INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (device, metric, t_ns)
    ) WITHOUT ROWID;
    CREATE INDEX spectra_time ON spectra(t_ns);
    CREATE INDEX spectra_stored ON spectra(stored_ns)
    """,
    # encryption at rest (gateway/state/sealing.py)
    SEALING_MIGRATION,
)

SEALED: tuple[SealedColumn, ...] = (
    SealedColumn("readings", "value", ("device", "metric", "t_ns"), "float"),
    SealedColumn("waveforms", "samples", ("device", "metric", "start_ns"), "blob"),
    SealedColumn("spectra", "values", ("device", "metric", "t_ns"), "blob"),
)
"""The clinical columns, encrypted at rest (the row's identity stays readable for time-range queries)."""
_VALUE, _SAMPLES, _SPECTRUM = SEALED


_READING_COLUMNS = ("device", *Reading._fields, "stored_ns")
_COLUMN_NAMES = {"device_time_ns": "t_ns", "time_quality": "tq"}
_INSERT_READINGS = (
    f"INSERT OR REPLACE INTO readings ({', '.join(_COLUMN_NAMES.get(c, c) for c in _READING_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(_READING_COLUMNS))})"
)


def open_history(state_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    return connect(state_dir / "history.db", MIGRATIONS, check_same_thread=False, readonly=readonly, sealed=SEALED)


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
            except (OverflowError, ValueError, TypeError, sqlite3.DataError) as e:  # the data cannot be stored
                raise RejectedSinkError(f"local history cannot store it: {e}") from e

    def _write(self, batches: Sequence[Batch]) -> None:
        rows: list[tuple[Any, ...]] = []
        waves: list[tuple[Any, ...]] = []
        spectra: list[tuple[Any, ...]] = []
        stored = (time.time_ns(),)
        cipher = cipher_of(self._conn)
        for b in batches:
            d = (b.device_id,)
            if cipher is None:
                rows.extend([d + r + stored for r in b.readings])  # column order of _READING_COLUMNS
            else:
                for r in b.readings:
                    key = f"{b.device_id}\x00{r.metric}\x00{r.device_time_ns}"
                    rows.append((*d, r.metric, _VALUE.seal(cipher, key, r.value), *r[2:], *stored))
            for w in b.waveforms:
                samples = w.samples.astype("<i4").tobytes()
                if cipher is not None:
                    samples = cipher.seal(
                        "waveforms", "samples", f"{b.device_id}\x00{w.metric}\x00{w.start_ns}", samples
                    )
                waves.append(
                    (
                        b.device_id,
                        w.metric,
                        w.start_ns,
                        w.period_ns,
                        w.unit,
                        int(w.samples.size),
                        samples,
                        int(w.time_quality),
                        stored[0],
                    )
                )
            for s in b.spectra:
                values = s.values.astype("<f4").tobytes()
                if cipher is not None:
                    values = cipher.seal("spectra", "values", f"{b.device_id}\x00{s.metric}\x00{s.time_ns}", values)
                spectra.append(
                    (
                        b.device_id,
                        s.metric,
                        s.time_ns,
                        s.unit,
                        float(s.axis_start),
                        float(s.axis_step),
                        s.axis_unit,
                        int(s.values.size),
                        values,
                        int(s.time_quality),
                        stored[0],
                    )
                )
        with self._tlock:
            self._commit_rows(rows, waves, spectra)

    def _commit_rows(
        self, rows: list[tuple[Any, ...]], waves: list[tuple[Any, ...]], spectra: list[tuple[Any, ...]]
    ) -> None:
        c = self._conn
        with write_transaction(c):
            if rows:
                c.executemany(_INSERT_READINGS, rows)
            if waves:
                c.executemany(
                    "INSERT OR REPLACE INTO waveforms (device, metric, start_ns, period_ns, unit, n, samples, tq,"
                    " stored_ns) VALUES (?,?,?,?,?,?,?,?,?)",
                    waves,
                )
            if spectra:
                c.executemany(
                    "INSERT OR REPLACE INTO spectra (device, metric, t_ns, unit, axis_start, axis_step, axis_unit, n,"
                    ' "values", tq, stored_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)',
                    spectra,
                )

    # --- housekeeping (called from the housekeeper's thread) ---------------------------------------
    def used_bytes(self) -> int:
        with self._tlock:
            return used_bytes(self._conn)

    def reseal(self, limit: int) -> int:
        """Re-encrypt up to ``limit`` values still under a previous state key (housekeeping's thread)."""
        with self._tlock:
            return reseal_some(self._conn, SEALED, limit)

    def prune_expired(self) -> int:
        return self._delete_before(time.time_ns() - self._retention_ns)

    def prune_oldest(self, rows: int) -> int:
        """Drop about ``rows`` of the longest-stored history rows (disk budget); returns rows deleted."""
        with self._tlock:
            row = self._conn.execute(
                "SELECT MIN(s) FROM (SELECT MIN(stored_ns) AS s FROM readings UNION ALL"
                " SELECT MIN(stored_ns) FROM waveforms UNION ALL SELECT MIN(stored_ns) FROM spectra)"
            ).fetchone()
            if row[0] is None:
                return 0
            nth = self._conn.execute(
                "SELECT stored_ns FROM readings ORDER BY stored_ns LIMIT 1 OFFSET ?", (max(0, rows - 1),)
            ).fetchone()
            cutoff = (nth[0] if nth else row[0]) + 1
            return self._delete_locked(cutoff)

    def _delete_before(self, cutoff_ns: int) -> int:
        with self._tlock:
            return self._delete_locked(cutoff_ns)

    def _delete_locked(self, cutoff_ns: int) -> int:
        c = self._conn
        with write_transaction(c):
            n = c.execute("DELETE FROM readings WHERE stored_ns < ?", (cutoff_ns,)).rowcount
            n += c.execute("DELETE FROM waveforms WHERE stored_ns < ?", (cutoff_ns,)).rowcount
            n += c.execute("DELETE FROM spectra WHERE stored_ns < ?", (cutoff_ns,)).rowcount
        return int(n)

    # --- reads (status, tests, the dataspace endpoint later) ----------------------------------------
    def readings(
        self, device: str | None = None, metric: str | None = None, since_ns: int = 0, until_ns: int = (1 << 63) - 1
    ) -> list[HistoryReading]:
        """Readings held in [since, until] (device time), optionally of one device / metric, oldest first."""
        with self._tlock:
            return read_readings(self._conn, device, metric, since_ns, until_ns)

    def waveforms(
        self, device: str | None = None, metric: str | None = None, since_ns: int = 0, until_ns: int = (1 << 63) - 1
    ) -> list[HistoryWaveform]:
        with self._tlock:
            return read_waveforms(self._conn, device, metric, since_ns, until_ns)

    def count(self) -> tuple[int, int]:
        """(readings, waveform samples + spectrum bins) held, as :attr:`Batch.n_samples` counts them."""
        with self._tlock:
            r = self._conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            s = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM waveforms").fetchone()[0]
            b = self._conn.execute("SELECT COALESCE(SUM(n), 0) FROM spectra").fetchone()[0]
        return int(r), int(s) + int(b)

    def count_spectra(self) -> tuple[int, int]:
        """(spectra, spectrum bins) held."""
        with self._tlock:
            n, bins = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM spectra").fetchone()
        return int(n), int(bins)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()


class HistoryReading(NamedTuple):
    device: str
    metric: str
    t_ns: int
    value: float | None
    unit: str
    absent: str | None
    status: int
    seq: int | None
    tq: int


class HistoryWaveform(NamedTuple):
    device: str
    metric: str
    start_ns: int
    period_ns: int
    unit: str
    samples: npt.NDArray[np.int32]
    tq: int


class HistorySpectrum(NamedTuple):
    device: str
    metric: str
    t_ns: int
    unit: str
    axis_start: float
    axis_step: float
    axis_unit: str
    values: npt.NDArray[np.float32]
    tq: int


def _filters(
    device: str | None, metric: str | None, time_col: str, since_ns: int, until_ns: int
) -> tuple[str, list[Any]]:
    where: list[str] = [f"{time_col} >= ? AND {time_col} <= ?"]
    args: list[Any] = [since_ns, until_ns]
    if device is not None:
        where.append("device = ?")
        args.append(device)
    if metric is not None:
        where.append("metric = ?")
        args.append(metric)
    return " AND ".join(where), args


def read_readings(
    conn: sqlite3.Connection, device: str | None, metric: str | None, since_ns: int, until_ns: int
) -> list[HistoryReading]:
    """Readings of a history connection (decrypted when it is encrypted); :class:`StateError` on a value
    that does not decrypt."""
    where, args = _filters(device, metric, "t_ns", since_ns, until_ns)
    cipher = cipher_of(conn)
    q = (
        "SELECT device, metric, t_ns, value, unit, absent, status, seq, tq FROM readings"
        f" WHERE {where} ORDER BY t_ns, device, metric"
    )
    return [
        HistoryReading(d, m, t, _VALUE.open(cipher, f"{d}\x00{m}\x00{t}", v), u, a, s, q_, tq)
        for d, m, t, v, u, a, s, q_, tq in conn.execute(q, args)
    ]


def read_waveforms(
    conn: sqlite3.Connection, device: str | None, metric: str | None, since_ns: int, until_ns: int
) -> list[HistoryWaveform]:
    where, args = _filters(device, metric, "start_ns", since_ns, until_ns)
    cipher = cipher_of(conn)
    q = f"SELECT device, metric, start_ns, period_ns, unit, samples, tq FROM waveforms WHERE {where} ORDER BY start_ns"
    out = []
    for d, m, t, p, u, blob, tq in conn.execute(q, args):
        raw = _SAMPLES.open(cipher, f"{d}\x00{m}\x00{t}", blob)
        out.append(HistoryWaveform(d, m, t, p, u, np.frombuffer(raw, dtype="<i4").astype(np.int32), tq))
    return out


def read_spectra(
    conn: sqlite3.Connection, device: str | None, metric: str | None, since_ns: int, until_ns: int
) -> list[HistorySpectrum]:
    where, args = _filters(device, metric, "t_ns", since_ns, until_ns)
    cipher = cipher_of(conn)
    q = (
        'SELECT device, metric, t_ns, unit, axis_start, axis_step, axis_unit, "values", tq FROM spectra'
        f" WHERE {where} ORDER BY t_ns, metric"
    )
    out = []
    for d, m, t, u, a0, step, au, blob, tq in conn.execute(q, args):
        raw = _SPECTRUM.open(cipher, f"{d}\x00{m}\x00{t}", blob)
        out.append(HistorySpectrum(d, m, t, u, a0, step, au, np.frombuffer(raw, dtype="<f4").astype(np.float32), tq))
    return out


class History:
    """Reading a state directory's local history outside a running gateway (CLI, tests, exports): read-only,
    decrypted with the state directory's key (``gateway.state.statekey``)."""

    def __init__(self, state_dir: Path) -> None:
        self._conn = open_history(state_dir, readonly=True)

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._conn.close()

    def readings(
        self, device: str | None = None, metric: str | None = None, since_ns: int = 0, until_ns: int = (1 << 63) - 1
    ) -> list[HistoryReading]:
        return read_readings(self._conn, device, metric, since_ns, until_ns)

    def waveforms(
        self, device: str | None = None, metric: str | None = None, since_ns: int = 0, until_ns: int = (1 << 63) - 1
    ) -> list[HistoryWaveform]:
        return read_waveforms(self._conn, device, metric, since_ns, until_ns)

    def spectra(
        self, device: str | None = None, metric: str | None = None, since_ns: int = 0, until_ns: int = (1 << 63) - 1
    ) -> list[HistorySpectrum]:
        return read_spectra(self._conn, device, metric, since_ns, until_ns)
