"""Opening SQLite databases of the state directory, with versioned migrations.

Every table the gateway keeps is created by a migration. A database records the number of migrations
applied in ``PRAGMA user_version``; opening it applies the missing ones in one transaction, so an
upgraded gateway opens an older state directory without losing data. A database written by a newer
gateway (more migrations than this code knows) is refused rather than silently misread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from gateway.errors import StateError
from gateway.state.sealing import SealedColumn, StateConnection, prepare

Synchronous = Literal["FULL", "NORMAL"]


def connect(
    path: Path,
    migrations: Sequence[str],
    *,
    synchronous: Synchronous = "FULL",
    check_same_thread: bool = True,
    readonly: bool = False,
    sealed: Sequence[SealedColumn] = (),
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with the given ``synchronous`` level and bring its schema up to date.

    ``sealed``: the database's encrypted columns; its state directory's cipher (``gateway.state.statekey``)
    is attached to the connection (``gateway.state.sealing.cipher_of``), and a plaintext database is
    encrypted in place when opened for writing with a cipher.
    """
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=check_same_thread,
                factory=StateConnection,
            )
        else:
            _private(path)
            conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=check_same_thread, factory=StateConnection
            )
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StateError(f"{path}: cannot open database: {e}") from e
    if version > len(migrations):
        conn.close()
        raise StateError(
            f"{path}: schema version {version} is newer than this gateway knows ({len(migrations)}); "
            "upgrade the gateway"
        )
    if version < len(migrations):
        if readonly:
            conn.close()
            raise StateError(
                f"{path}: schema version {version} is older than {len(migrations)}; start the gateway once to migrate"
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            # re-read under the write lock: another process may have migrated meanwhile
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for i in range(version, len(migrations)):
                for stmt in _statements(migrations[i]):
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {len(migrations)}")
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            conn.execute("ROLLBACK")
            conn.close()
            raise StateError(f"{path}: migration failed: {e}") from e
    if sealed:
        from gateway.state.statekey import cached_cipher

        try:
            cipher = cached_cipher(path.parent)
            assert isinstance(conn, StateConnection)
            conn.cipher = cipher
            prepare(conn, path, cipher, sealed, readonly=readonly)
        except BaseException:
            conn.close()
            raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` when the block raises (the connection is in
    autocommit mode: ``isolation_level=None``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")  # inside: a failed COMMIT (disk full …) must roll back too
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _private(path: Path) -> None:
    """Create the database file 0600 (patient data); its -wal/-shm files inherit the mode."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        if path.stat().st_uid == os.geteuid():
            os.chmod(path, 0o600)
    except OSError as e:
        raise StateError(f"{path}: cannot create: {e.strerror}") from e


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database actually in use (file pages minus free pages)."""
    page_size, page_count, free = (
        conn.execute("PRAGMA page_size").fetchone()[0],
        conn.execute("PRAGMA page_count").fetchone()[0],
        conn.execute("PRAGMA freelist_count").fetchone()[0],
    )
    return int(page_size) * (int(page_count) - int(free))
