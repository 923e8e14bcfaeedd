"""The device registry: canonical device ids and the transport identities that map to them.

Kept in ``<state_dir>/registry.db``. Seeded from the config's ``[devices]`` tables — only devices not
yet in the registry, so a device disabled at run time stays disabled across restarts — and edited with
``ds4h-gateway devices add|list|disable|enable``. The patient binding is added by the dataspace issue.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import DeviceEntry
from gateway.errors import GatewayError, RegistryError
from gateway.model import check_device_id
from gateway.state.db import connect, write_transaction
from gateway.state.sealing import MIGRATION as SEALING_MIGRATION
from gateway.state.sealing import SealedColumn, cipher_of

IDENTITY_KINDS = ("mqtt_cn", "mqtt_username", "ble_address", "serial")

MIGRATIONS = (
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        public_key TEXT,
        note TEXT NOT NULL DEFAULT '',
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL
    );
    CREATE TABLE identities (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        PRIMARY KEY (kind, value)
    )
    """,
    """
    CREATE TABLE clock_skew (
        device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        skew_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE driver_state (
        device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ns INTEGER NOT NULL,
        PRIMARY KEY (device_id, key)
    )
    """,
    """
    ALTER TABLE devices ADD COLUMN require_signature INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN revoked_ns INTEGER
    """,
    # encryption at rest (gateway/state/sealing.py)
    SEALING_MIGRATION,
)

SEALED: tuple[SealedColumn, ...] = (SealedColumn("devices", "note", ("id",), "text"),)
"""Encrypted at rest: the operator's free-text note (it may name a patient). Ids, kinds and transport
identities stay readable: they are looked up on every message."""
_NOTE = SEALED[0]


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    enabled: bool = True
    public_key: str | None = None
    identities: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    require_signature: bool = False
    """Unsigned MQTT frames of this device are refused (``signature_missing``), docs/mqtt.md."""
    revoked_ns: int | None = None
    """When ``pki revoke`` revoked its certificate (the device is disabled from then on), docs/pki.md."""

    @property
    def revoked(self) -> bool:
        return self.revoked_ns is not None


def check_public_key(did: str | None) -> str | None:
    """``did`` if it is an Ed25519 did:key (the only device key the gateway verifies), else raise."""
    if did is None:
        return None
    from gateway.provenance.didkey import public_from_did_key

    try:
        public_from_did_key(did)
    except GatewayError as e:
        raise RegistryError(f"public key: {e}") from e
    return did


def _norm_identity(kind: str, value: str) -> str:
    if kind not in IDENTITY_KINDS:
        raise RegistryError(f"unknown identity kind {kind!r}; use one of {', '.join(IDENTITY_KINDS)}")
    if not value:
        raise RegistryError(f"empty {kind}")
    return value.upper() if kind == "ble_address" else value


class DeviceRegistry:
    """Registry backed by SQLite; lookups come from a cache reloaded when another connection writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path, MIGRATIONS, check_same_thread=False, sealed=SEALED)
        self._cache: dict[str, Device] = {}
        self._by_identity: dict[tuple[str, str], str] = {}
        self._data_version = -1
        self._checked = 0.0
        self.refresh(force=True)

    @classmethod
    def open(cls, state_dir: Path) -> DeviceRegistry:
        return cls(state_dir / "registry.db")

    def close(self) -> None:
        self._conn.close()

    def _note(self, device_id: str, note: str) -> str | bytes:
        cipher = cipher_of(self._conn)
        return note if cipher is None else cipher.seal_text("devices", "note", device_id, note)

    # --- reads -------------------------------------------------------------------------------
    def refresh(self, force: bool = False, max_age_s: float = 0.5) -> None:
        """Reload the cache if another connection changed the registry (checked at most every ``max_age_s``)."""
        now = time.monotonic()
        if not force and now - self._checked < max_age_s:
            return
        self._checked = now
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if not force and version == self._data_version:
            return
        self._data_version = version
        idents: dict[str, dict[str, str]] = {}
        by_identity: dict[tuple[str, str], str] = {}
        for kind, value, device_id in self._conn.execute("SELECT kind, value, device_id FROM identities"):
            idents.setdefault(device_id, {})[kind] = value
            by_identity[(kind, value)] = device_id
        cipher = cipher_of(self._conn)
        self._cache = {
            row[0]: Device(
                row[0],
                row[1],
                bool(row[2]),
                row[3],
                idents.get(row[0], {}),
                _NOTE.open(cipher, row[0], row[4]),
                bool(row[5]),
                row[6],
            )
            for row in self._conn.execute(
                "SELECT id, kind, enabled, public_key, note, require_signature, revoked_ns FROM devices"
            )
        }
        self._by_identity = by_identity

    def get(self, device_id: str) -> Device | None:
        self.refresh()
        return self._cache.get(device_id)

    def cached(self, device_id: str) -> Device | None:
        """Like :meth:`get` without checking for changes: for hot loops that called :meth:`refresh` first."""
        return self._cache.get(device_id)

    def resolve(self, kind: str, value: str) -> Device | None:
        """The device a transport identity (MQTT CN, BLE address, serial …) maps to."""
        self.refresh()
        device_id = self._by_identity.get((kind, _norm_identity(kind, value)))
        return None if device_id is None else self._cache.get(device_id)

    def all(self) -> list[Device]:
        self.refresh(force=True)
        return sorted(self._cache.values(), key=lambda d: d.id)

    def current(self) -> list[Device]:
        """Every device, re-read only when another connection changed the registry (for periodic polls)."""
        self.refresh(max_age_s=0.0)
        return list(self._cache.values())

    # --- writes ------------------------------------------------------------------------------
    def add(
        self,
        device_id: str,
        kind: str,
        *,
        identities: Mapping[str, str | None] | None = None,
        public_key: str | None = None,
        enabled: bool = True,
        require_signature: bool = False,
    ) -> Device:
        check_device_id(device_id)
        check_public_key(public_key)
        if not kind:
            raise RegistryError(f"device {device_id}: kind is required")
        now = time.time_ns()
        pairs = [(k, _norm_identity(k, v)) for k, v in (identities or {}).items() if v is not None]
        try:
            with write_transaction(self._conn):
                self._conn.execute(
                    "INSERT INTO devices (id, kind, enabled, public_key, require_signature, created_ns, updated_ns,"
                    " note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        device_id,
                        kind,
                        int(enabled),
                        public_key,
                        int(require_signature),
                        now,
                        now,
                        self._note(device_id, ""),
                    ),
                )
                self._conn.executemany(
                    "INSERT INTO identities (kind, value, device_id) VALUES (?, ?, ?)",
                    [(k, v, device_id) for k, v in pairs],
                )
        except sqlite3.IntegrityError as e:
            raise RegistryError(f"device {device_id}: already registered or identity taken ({e})") from e
        self.refresh(force=True)
        device = self._cache[device_id]
        return device

    def add_identity(self, device_id: str, kind: str, value: str) -> Device:
        """Map one more transport identity (e.g. an MQTT certificate CN) to a registered device."""
        value = _norm_identity(kind, value)
        try:
            with write_transaction(self._conn):
                if self._conn.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone() is None:
                    raise RegistryError(f"no device {device_id!r} in the registry")
                self._conn.execute(
                    "INSERT INTO identities (kind, value, device_id) VALUES (?, ?, ?)", (kind, value, device_id)
                )
        except sqlite3.IntegrityError as e:
            raise RegistryError(f"device {device_id}: identity {kind}={value} is taken ({e})") from e
        self.refresh(force=True)
        return self._cache[device_id]

    def set_enabled(self, device_id: str, enabled: bool, note: str = "") -> Device:
        """Enable or disable a device; a revoked device cannot be enabled (issue it a new certificate first)."""
        with write_transaction(self._conn):
            if enabled:
                row = self._conn.execute("SELECT revoked_ns FROM devices WHERE id = ?", (device_id,)).fetchone()
                if row is not None and row[0] is not None:
                    raise RegistryError(
                        f"device {device_id} is revoked: issue it a new certificate "
                        "(`ds4h-gateway pki issue-device`) before enabling it"
                    )
            cur = self._conn.execute(
                "UPDATE devices SET enabled = ?, note = ?, updated_ns = ? WHERE id = ?",
                (int(enabled), self._note(device_id, note), time.time_ns(), device_id),
            )
        return self._updated(cur.rowcount, device_id)

    def _updated(self, rowcount: int, device_id: str) -> Device:
        if rowcount == 0:
            raise RegistryError(f"no device {device_id!r} in the registry")
        self.refresh(force=True)
        return self._cache[device_id]

    def set_signing(
        self, device_id: str, *, public_key: str | None = None, require_signature: bool | None = None
    ) -> Device:
        """Register a device's signing key (did:key) and/or whether its MQTT frames must be signed."""
        check_public_key(public_key)
        sets: list[str] = ["updated_ns = ?"]
        args: list[object] = [time.time_ns()]
        if public_key is not None:
            sets.append("public_key = ?")
            args.append(public_key)
        if require_signature is not None:
            sets.append("require_signature = ?")
            args.append(int(require_signature))
        with write_transaction(self._conn):
            cur = self._conn.execute(f"UPDATE devices SET {', '.join(sets)} WHERE id = ?", (*args, device_id))
        return self._updated(cur.rowcount, device_id)

    def revoke(self, device_id: str, note: str = "certificate revoked") -> Device:
        """Mark a device revoked and disable it at once (its data is quarantined from now on)."""
        with write_transaction(self._conn):
            now = time.time_ns()
            cur = self._conn.execute(
                "UPDATE devices SET enabled = 0, revoked_ns = COALESCE(revoked_ns, ?), note = ?, updated_ns = ?"
                " WHERE id = ?",
                (now, self._note(device_id, note), now, device_id),
            )
        return self._updated(cur.rowcount, device_id)

    def unrevoke(self, device_id: str) -> Device:
        """Clear the revoked mark (a new certificate was issued); the device stays disabled until enabled."""
        with write_transaction(self._conn):
            cur = self._conn.execute(
                "UPDATE devices SET revoked_ns = NULL, updated_ns = ? WHERE id = ?", (time.time_ns(), device_id)
            )
        return self._updated(cur.rowcount, device_id)

    def seed(self, entries: Mapping[str, DeviceEntry]) -> list[str]:
        """Add the config's devices that the registry does not hold yet; returns the ids added.

        ``require_signature = true`` in the config also applies to a device already registered (the
        config may tighten a registered device, never loosen it).
        """
        self.refresh(force=True)
        added = []
        for device_id, e in entries.items():
            known = self._cache.get(device_id)
            if known is not None:
                if e.require_signature and not known.require_signature:
                    self.set_signing(device_id, require_signature=True)
                continue
            self.add(
                device_id,
                e.kind,
                identities={k: getattr(e, k) for k in IDENTITY_KINDS},
                public_key=e.public_key,
                enabled=e.enabled,
                require_signature=e.require_signature,
            )
            added.append(device_id)
        return added

    def clock_skews(self) -> dict[str, int]:
        """Last estimated clock offset (gateway − device, ns) per device."""
        return {r[0]: int(r[1]) for r in self._conn.execute("SELECT device_id, skew_ns FROM clock_skew")}

    def set_clock_skew(self, device_id: str, skew_ns: int) -> None:
        self._conn.execute(
            "INSERT INTO clock_skew (device_id, skew_ns, updated_ns) VALUES (?, ?, ?) ON CONFLICT (device_id)"
            " DO UPDATE SET skew_ns = excluded.skew_ns, updated_ns = excluded.updated_ns",
            (device_id, skew_ns, time.time_ns()),
        )

    def driver_state(self, device_id: str, key: str) -> str | None:
        """A value a driver saved for ``device_id`` (e.g. the last committed RACP sequence number)."""
        row = self._conn.execute(
            "SELECT value FROM driver_state WHERE device_id = ? AND key = ?", (device_id, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def driver_states(self, key: str) -> dict[str, str]:
        """``key``'s value for every device that has one."""
        return {
            str(r[0]): str(r[1])
            for r in self._conn.execute("SELECT device_id, value FROM driver_state WHERE key = ?", (key,))
        }

    def set_driver_states(self, key: str, values: Mapping[str, str]) -> None:
        """``key``'s value for several devices in one durable transaction (unknown devices are skipped)."""
        now = time.time_ns()
        with write_transaction(self._conn):
            known = {r[0] for r in self._conn.execute("SELECT id FROM devices")}
            self._conn.executemany(
                "INSERT INTO driver_state (device_id, key, value, updated_ns) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, updated_ns = excluded.updated_ns",
                [(d, key, v, now) for d, v in values.items() if d in known],
            )

    def set_driver_state(self, device_id: str, key: str, value: str) -> None:
        """Persist a driver's value durably (its own transaction, ``synchronous = FULL``)."""
        with write_transaction(self._conn):
            self._conn.execute(
                "INSERT INTO driver_state (device_id, key, value, updated_ns) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, updated_ns = excluded.updated_ns",
                (device_id, key, value, time.time_ns()),
            )


def describe(devices: Iterable[Device]) -> list[dict[str, object]]:
    return [
        {
            "id": d.id,
            "kind": d.kind,
            "enabled": d.enabled,
            "identities": dict(d.identities),
            "public_key": d.public_key,
            "require_signature": d.require_signature,
            "revoked": d.revoked,
            "note": d.note,
        }
        for d in devices
    ]
