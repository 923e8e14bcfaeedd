"""Which columns of a state database are encrypted, and bringing a database to its encryption state.

Each database lists its :class:`SealedColumn` s (the patient-identifying or clinical ones) and carries an
``encryption`` table (one row: ``plain``, ``sealing`` or ``sealed``, and a check value sealed with the
current key). When a database is opened for writing with a cipher:

- a wrong key is refused at once (the check value does not open);
- a plaintext database — encryption just turned on — is sealed in place: ``PRAGMA secure_delete = ON``,
  every listed column encrypted in chunks (resumable: state ``sealing``), then ``VACUUM`` and a
  ``wal_checkpoint(TRUNCATE)``, so neither free pages nor the WAL keep a plaintext copy;
- after a key rotation, :func:`reseal_some` re-encrypts rows still under a previous key, a bounded number
  per housekeeping pass (lazily).

A sealed database opened without a cipher is refused (:class:`StateError`), never read as plaintext.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import StateError
from gateway.state.cipher import MAGIC, StateCipher

log = logging.getLogger(__name__)

MIGRATION = """
    CREATE TABLE encryption (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL CHECK (state IN ('plain', 'sealing', 'sealed')),
        check_value BLOB,
        updated_ns INTEGER NOT NULL
    )
"""
"""Append to a database's migrations to give it the encryption marker."""

CHECK_PLAINTEXT = b"ds4h-gateway state key check"
CHUNK = 2000


@dataclass(frozen=True, slots=True)
class SealedColumn:
    table: str
    column: str
    key: tuple[str, ...]
    """The columns that identify a row (its primary key): bound into the associated data."""
    kind: Literal["blob", "text", "float"]

    def row(self, values: Sequence[Any]) -> str:
        return "\x00".join(str(v) for v in values)

    @property
    def _col(self) -> str:
        return f'"{self.column}"'

    def seal(self, cipher: StateCipher, row: str, value: Any) -> bytes | None:
        if value is None:
            return None
        if self.kind == "float":
            return cipher.seal_float(self.table, self.column, row, float(value))
        if self.kind == "text":
            return cipher.seal_text(self.table, self.column, row, str(value))
        return cipher.seal(self.table, self.column, row, bytes(value))

    def open(self, cipher: StateCipher | None, row: str, value: Any) -> Any:
        """The plaintext of a stored value (``value`` itself when the database is not encrypted)."""
        if cipher is None or value is None:
            return value
        if self.kind == "float":
            return cipher.open_float(self.table, self.column, row, value)
        if self.kind == "text":
            return cipher.open_text(self.table, self.column, row, value)
        return cipher.open(self.table, self.column, row, value)


class StateConnection(sqlite3.Connection):
    """A connection that knows its database's cipher (None: not encrypted)."""

    cipher: StateCipher | None = None


def cipher_of(conn: sqlite3.Connection) -> StateCipher | None:
    return getattr(conn, "cipher", None)


def _state(conn: sqlite3.Connection) -> tuple[str, bytes | None]:
    row = conn.execute("SELECT state, check_value FROM encryption WHERE id = 1").fetchone()
    return ("plain", None) if row is None else (str(row[0]), row[1])


def _set_state(conn: sqlite3.Connection, cipher: StateCipher, state: str) -> None:
    check = cipher.seal("encryption", "check_value", "1", CHECK_PLAINTEXT)
    conn.execute(
        "INSERT OR REPLACE INTO encryption (id, state, check_value, updated_ns) VALUES (1, ?, ?, ?)",
        (state, check, time.time_ns()),
    )


def prepare(
    conn: sqlite3.Connection, path: Path, cipher: StateCipher | None, columns: Sequence[SealedColumn], *, readonly: bool
) -> None:
    state, check = _state(conn)
    if cipher is None:
        if state != "plain":
            raise StateError(
                f"{path}: encrypted at rest, and no key is configured for it: give the command --config, or "
                "configure [encryption] with the key source it was encrypted with (docs/security.md)"
            )
        return
    if check is not None:
        try:
            ok = cipher.open("encryption", "check_value", "1", check) == CHECK_PLAINTEXT
        except StateError:
            ok = False
        if not ok:
            raise StateError(f"{path}: the configured state encryption key is not the key this database uses")
    if readonly:
        return
    from gateway.state.db import write_transaction

    conn.execute("PRAGMA secure_delete = ON")
    if state != "sealed":
        started = time.monotonic()
        with write_transaction(conn):
            _set_state(conn, cipher, "sealing")
        n = sum(_seal_existing(conn, cipher, c) for c in columns)
        with write_transaction(conn):
            _set_state(conn, cipher, "sealed")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("%s: encrypted at rest (%d values sealed in %.1f s)", path.name, n, time.monotonic() - started)
    elif check is not None and not cipher.is_current(check):
        with write_transaction(conn):
            _set_state(conn, cipher, "sealed")


def _keys(c: SealedColumn) -> str:
    return ", ".join(f'"{k}"' for k in c.key)


def _where_key(c: SealedColumn) -> str:
    return " AND ".join(f'"{k}" = ?' for k in c.key)


def _seal_existing(conn: sqlite3.Connection, cipher: StateCipher, c: SealedColumn) -> int:
    """Encrypt every plaintext value of ``c``; resumable (values already sealed are recognised)."""
    from gateway.state.db import write_transaction

    total = 0
    if c.kind in ("float", "text"):
        plain = f"typeof({c._col}) = '{'real' if c.kind == 'float' else 'text'}'"
        if c.kind == "float":
            plain = f"typeof({c._col}) IN ('real', 'integer')"
        select = f"SELECT {_keys(c)}, {c._col} FROM {c.table} WHERE {plain} LIMIT {CHUNK}"
        while True:
            with write_transaction(conn):
                rows = conn.execute(select).fetchall()
                _update(conn, cipher, c, rows)
            total += len(rows)
            if len(rows) < CHUNK:
                return total
    # blobs: sealed and plaintext are both blobs; a plaintext one that happens to start with the magic is
    # recognised by not opening
    select = f"SELECT {_keys(c)}, {c._col} FROM {c.table} WHERE {c._col} IS NOT NULL AND substr({c._col}, 1, 2) != ?"
    while True:
        with write_transaction(conn):
            rows = conn.execute(select + f" LIMIT {CHUNK}", (MAGIC,)).fetchall()
            _update(conn, cipher, c, rows)
        total += len(rows)
        if len(rows) < CHUNK:
            break
    odd = [
        r
        for r in conn.execute(f"SELECT {_keys(c)}, {c._col} FROM {c.table} WHERE substr({c._col}, 1, 2) = ?", (MAGIC,))
        if cipher.try_open(c.table, c.column, c.row(r[:-1]), r[-1]) is None
    ]
    for i in range(0, len(odd), CHUNK):
        with write_transaction(conn):
            _update(conn, cipher, c, odd[i : i + CHUNK])
    return total + len(odd)


def _update(conn: sqlite3.Connection, cipher: StateCipher, c: SealedColumn, rows: Sequence[Sequence[Any]]) -> None:
    conn.executemany(
        f"UPDATE {c.table} SET {c._col} = ? WHERE {_where_key(c)}",
        [(c.seal(cipher, c.row(r[:-1]), r[-1]), *r[:-1]) for r in rows],
    )


def reseal_some(conn: sqlite3.Connection, columns: Sequence[SealedColumn], limit: int) -> int:
    """Re-encrypt up to ``limit`` values still sealed with a previous key (after a key rotation)."""
    from gateway.state.db import write_transaction

    cipher = cipher_of(conn)
    if cipher is None or limit <= 0:
        return 0
    done = 0
    for c in columns:
        if done >= limit:
            break
        q = (
            f"SELECT {_keys(c)}, {c._col} FROM {c.table} WHERE {c._col} IS NOT NULL"
            f" AND substr({c._col}, 3, 4) != ? LIMIT ?"
        )
        with write_transaction(conn):
            rows = conn.execute(q, (cipher.current_kid, limit - done)).fetchall()
            conn.executemany(
                f"UPDATE {c.table} SET {c._col} = ? WHERE {_where_key(c)}",
                [(c.seal(cipher, c.row(r[:-1]), c.open(cipher, c.row(r[:-1]), r[-1])), *r[:-1]) for r in rows],
            )
        done += len(rows)
    return done


def unsealed_counts(conn: sqlite3.Connection, columns: Sequence[SealedColumn]) -> dict[str, int]:
    """Per column: values not sealed with the current key (plaintext, or a previous key)."""
    cipher = cipher_of(conn)
    out: dict[str, int] = {}
    for c in columns:
        if cipher is None:
            n = conn.execute(f"SELECT COUNT(*) FROM {c.table} WHERE {c._col} IS NOT NULL").fetchone()[0]
        else:
            n = conn.execute(
                f"SELECT COUNT(*) FROM {c.table} WHERE {c._col} IS NOT NULL AND (typeof({c._col}) != 'blob'"
                f" OR substr({c._col}, 1, 2) != ? OR substr({c._col}, 3, 4) != ?)",
                (MAGIC, cipher.current_kid),
            ).fetchone()[0]
        out[f"{c.table}.{c.column}"] = int(n)
    return out
