"""The gateway's keys over time: where the current key comes from, its history, and rotation.

- The current private key is ``<state_dir>/gateway.key`` (0600), or, when ``provenance.key_credential``
  names one, the systemd credential ``$CREDENTIALS_DIRECTORY/<name>`` (read only).
- The key history (one signed record per key, :mod:`gateway.provenance.keyhistory`) is the
  ``key_history`` table of ``outbox.db``: written in the same database, under the same write lock, as
  the envelopes, so the envelope number a new key starts at is exact.
- Rotation needs the gateway stopped (:func:`rotate` refuses while one runs on the state directory;
  a gateway that nevertheless finds a newer key in the history refuses to commit, see the committer).
  Order on disk: the new key is written to ``gateway.key.next``, the record committed, then
  ``gateway.key.next`` renamed over ``gateway.key`` — which deletes the old private key. A crash
  between the last two steps is completed on the next load (roll forward).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ProvenanceError, StateError
from gateway.provenance.envelope import GENESIS_PREV
from gateway.provenance.identity import (
    KEY_FILE_NAME,
    GatewayIdentity,
    _fsync_dir,
    load_key_file,
    load_or_create,
    write_key_file,
)
from gateway.provenance.keyhistory import KeyHistory, KeyRecord, build_key_record

log = logging.getLogger(__name__)

NEXT_KEY_FILE_NAME = "gateway.key.next"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """The current key (verified to be the history's current key) and the verified history."""

    identity: GatewayIdentity
    history: KeyHistory
    key_path: Path
    credential: str | None
    """The systemd credential name the key came from, ``None`` for the state directory's key file."""


def key_path(state_dir: Path, credential: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """Where the current private key is read from."""
    if credential is None:
        return Path(state_dir) / KEY_FILE_NAME
    env = os.environ if environ is None else environ
    directory = env.get(CREDENTIALS_ENV)
    if not directory:
        raise StateError(
            f"provenance.key_credential = {credential!r} but ${CREDENTIALS_ENV} is not set: run under systemd with "
            f"LoadCredential={credential}:… or LoadCredentialEncrypted={credential}:… (docs/provenance.md)"
        )
    return Path(directory) / credential


def _open(state_dir: Path) -> sqlite3.Connection:
    from gateway.outbox.store import open_outbox  # provenance is imported by the outbox, not the other way

    return open_outbox(Path(state_dir))


def read_history(conn: sqlite3.Connection) -> KeyHistory:
    """The verified key history of an outbox; :class:`StateError` when a stored record does not verify."""
    history = KeyHistory()
    for (cose,) in conn.execute("SELECT cose FROM key_history ORDER BY k"):
        try:
            history.add(cose)
        except ProvenanceError as e:
            raise StateError(f"the key history in outbox.db does not verify: {e}") from e
    return history


def last_envelope_number(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(n), 0) FROM envelopes").fetchone()[0])


def _append(conn: sqlite3.Connection, history: KeyHistory, cose: bytes) -> KeyRecord:
    rec = history.add(cose)
    conn.execute(
        "INSERT INTO key_history (k, did, from_n, created_ns, hash, cose) VALUES (?, ?, ?, ?, ?, ?)",
        (rec.k, rec.did, rec.from_n, rec.created_ns, rec.hash, cose),
    )
    return rec


def _write_inception(conn: sqlite3.Connection, history: KeyHistory, identity: GatewayIdentity, from_n: int) -> None:
    from gateway.state.db import write_transaction

    with write_transaction(conn):
        if conn.execute("SELECT COUNT(*) FROM key_history").fetchone()[0]:
            raise StateError("another process wrote the key history meanwhile; try again")
        cose = build_key_record(identity, identity, 1, GENESIS_PREV, from_n, time.time_ns())
        _append(conn, history, cose)
    log.info("key history started for %s (signs from envelope %d)", identity.did, from_n)


def _finish_rotation(state_dir: Path, history: KeyHistory) -> None:
    """Roll a rotation interrupted after its record was committed forward: install ``gateway.key.next``."""
    nxt = Path(state_dir) / NEXT_KEY_FILE_NAME
    if not nxt.exists() or history.current is None:
        return
    pending = load_key_file(nxt)
    if pending.did == history.current.did:
        os.replace(nxt, Path(state_dir) / KEY_FILE_NAME)
        _fsync_dir(Path(state_dir))
        log.warning("completed an interrupted key rotation: %s is now the gateway key", pending.did)
    else:  # the rotation never committed its record: the half-made key was never used
        nxt.unlink()
        _fsync_dir(Path(state_dir))


def _check_current(identity: GatewayIdentity, history: KeyHistory, path: Path) -> None:
    current = history.current
    assert current is not None
    if identity.did == current.did:
        return
    for rec in history.records:
        if rec.did == identity.did:
            raise StateError(
                f"the key in {path} ({identity.did}) was retired by key record {rec.k + 1}; the current key is "
                f"{current.did}. Provision the current key (docs/provenance.md, key rotation)"
            )
    raise StateError(
        f"the key in {path} ({identity.did}) is not in the key history of this state directory (current key "
        f"{current.did}): restore the gateway's key from its backup"
    )


def load_gateway_keys(
    state_dir: Path,
    credential: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    create: bool = True,
) -> GatewayKeys:
    """The gateway's current key and its key history, started (inception record) when missing.

    With ``create`` and neither a key nor a history, a new key is made (first start / ``keys init``).
    A key the history does not name as current is refused, as is a missing key the history expects.
    """
    state_dir = Path(state_dir)
    path = key_path(state_dir, credential, environ)
    if credential is not None and not path.exists():
        raise StateError(f"systemd credential {credential!r} not found: {path} does not exist")
    conn = _open(state_dir)
    try:
        history = read_history(conn)
        if credential is None:
            _finish_rotation(state_dir, history)
            if not path.exists() and (history.records or not create):
                raise StateError(
                    f"{state_dir} holds no gateway key ({path} is missing)"
                    + (f"; the key history expects {history.current.did}: restore it" if history.current else "")
                )
            existed = path.exists()
            identity = load_or_create(state_dir)
        else:
            existed = True
            identity = load_key_file(path, systemd_credential=True)
        if history.current is None:
            # a key that existed before the history signed everything held; a new one starts after it
            _write_inception(conn, history, identity, 1 if existed else last_envelope_number(conn) + 1)
        _check_current(identity, history, path)
        return GatewayKeys(identity, history, path, credential)
    finally:
        conn.close()


def read_keys_public(state_dir: Path) -> KeyHistory:
    """The key history alone (no private key needed): for ``keys show`` and exports' readers."""
    conn = _open(Path(state_dir))
    try:
        return read_history(conn)
    finally:
        conn.close()


def running_gateway_pid(state_dir: Path) -> int | None:
    """The pid of a gateway running on ``state_dir`` (its ``control.json`` names a live process)."""
    try:
        info = json.loads((Path(state_dir) / "control.json").read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid


@dataclass(frozen=True, slots=True)
class Rotation:
    old_did: str
    new_did: str
    record: KeyRecord
    new_key_path: Path


def rotate(
    state_dir: Path,
    credential: str | None = None,
    *,
    new_key_out: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Rotation:
    """Replace the gateway key: a record signed by the old key announces the new one.

    State-directory key: the new key replaces ``gateway.key`` and the old private key is deleted.
    Credential key (read only): the new key is written to ``new_key_out`` for the operator to provision
    as the credential; until then the gateway refuses to start with the retired key.
    """
    state_dir = Path(state_dir)
    pid = running_gateway_pid(state_dir)
    if pid is not None:
        raise StateError(
            f"a gateway (pid {pid}) is running on {state_dir}: stop it first (systemctl stop ds4h-gateway), "
            "rotate, then start it again"
        )
    if credential is not None and new_key_out is None:
        raise StateError(
            f"the gateway key comes from the systemd credential {credential!r}, which is read only: pass "
            "--new-key-out FILE, then provision FILE as that credential (docs/provenance.md, key rotation)"
        )
    keys = load_gateway_keys(state_dir, credential, environ=environ, create=False)
    old = keys.identity
    new = GatewayIdentity.generate()
    target = new_key_out if credential is not None else state_dir / NEXT_KEY_FILE_NAME
    assert target is not None
    if not write_key_file(target, new.private_key_for_storage()):
        raise StateError(f"{target} already exists: refusing to overwrite a key file")
    from gateway.state.db import write_transaction

    conn = _open(state_dir)
    try:
        history = read_history(conn)
        with write_transaction(conn):
            current = history.current
            if current is None or current.did != old.did:
                raise StateError("the key history changed during rotation; try again")
            from_n = last_envelope_number(conn) + 1
            cose = build_key_record(old, new, current.k + 1, current.hash, from_n, time.time_ns())
            rec = _append(conn, history, cose)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    finally:
        conn.close()
    if credential is None:
        os.replace(target, state_dir / KEY_FILE_NAME)  # the old private key is gone from here on
        _fsync_dir(state_dir)
        target = state_dir / KEY_FILE_NAME
    log.info("rotated the gateway key %s → %s (from envelope %d)", old.did, new.did, rec.from_n)
    return Rotation(old.did, new.did, rec, target)
