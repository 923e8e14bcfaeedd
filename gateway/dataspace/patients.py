"""Patients, device bindings and consent records: ``<state_dir>/consent.db``, encrypted at rest.

- ``patients``: one row per patient; ``pid_hash`` (HMAC-SHA256 of the patient id under a lookup key kept sealed in
  ``secrets``) is the lookup key, the identifier itself is sealed (``patients.patient_id``);
- ``bindings``: who wore which device when — device id, ``pid_hash``, ``[from_ns, until_ns)`` (until NULL: open);
  bindings of one device never overlap;
- ``consents``: per patient and purpose (``research``): ``permit``/``deny``, ``[from_ns, until_ns)``, the FHIR status,
  where it came from (``fhir``, ``opt-out``, ``cli``), its source reference (sealed: a FHIR Consent id), and
  ``revoked_ns`` once revoked;
- ``research_batches``: the research sink's decision per outbox batch (audit; docs/consent.md).

A state directory read without a key (encryption off) keeps these values in the clear, like the rest of its state.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StateError
from gateway.model import check_device_id
from gateway.state.db import connect, write_transaction
from gateway.state.sealing import MIGRATION as SEALING_MIGRATION
from gateway.state.sealing import SealedColumn, cipher_of, reseal_some

DB_NAME = "consent.db"
FOREVER = (1 << 63) - 1
RESEARCH = "research"

MIGRATIONS = (
    """
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE patients (
        pid_hash TEXT PRIMARY KEY,
        patient_id BLOB NOT NULL,
        created_ns INTEGER NOT NULL
    );
    CREATE TABLE bindings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        pid_hash TEXT NOT NULL REFERENCES patients(pid_hash),
        from_ns INTEGER NOT NULL,
        until_ns INTEGER,
        created_ns INTEGER NOT NULL
    );
    CREATE INDEX bindings_device ON bindings(device, from_ns);
    CREATE TABLE consents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pid_hash TEXT NOT NULL REFERENCES patients(pid_hash),
        purpose TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('permit', 'deny')),
        from_ns INTEGER NOT NULL,
        until_ns INTEGER,
        status TEXT NOT NULL,
        source TEXT NOT NULL,
        ref_hash TEXT NOT NULL UNIQUE,
        source_ref BLOB NOT NULL,
        imported_ns INTEGER NOT NULL,
        revoked_ns INTEGER
    );
    CREATE INDEX consents_patient ON consents(pid_hash, purpose);
    CREATE TABLE research_batches (
        batch_id INTEGER PRIMARY KEY,
        envelope_n INTEGER NOT NULL,
        device TEXT NOT NULL,
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('eligible', 'partial', 'not_eligible')),
        reason TEXT NOT NULL,
        points_in INTEGER NOT NULL,
        points_out INTEGER NOT NULL,
        decided_ns INTEGER NOT NULL
    );
    CREATE INDEX research_batches_device ON research_batches(device, first_ns)
    """,
    SEALING_MIGRATION,
)

SEALED: tuple[SealedColumn, ...] = (
    SealedColumn("secrets", "value", ("name",), "blob"),
    SealedColumn("patients", "patient_id", ("pid_hash",), "text"),
    SealedColumn("consents", "source_ref", ("id",), "text"),
)
"""Patient identifiers, consent references and the lookup key are encrypted at rest."""
_SECRET, _PATIENT, _REF = SEALED


@dataclass(frozen=True, slots=True)
class Binding:
    id: int
    device: str
    patient_id: str
    from_ns: int
    until_ns: int | None


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A consent decision as imported (FHIR Consent provision, opt-out list entry, CLI)."""

    patient_id: str
    decision: str
    """``permit`` or ``deny``."""
    from_ns: int
    until_ns: int | None
    status: str
    """FHIR Consent.status (``active`` counts; anything else does not)."""
    source: str
    ref: str
    """Unique reference of the record at its source (``Consent/<id>#<n>``, ``opt-out:<patient>``): re-imports
    replace it."""
    purpose: str = RESEARCH


@dataclass(frozen=True, slots=True)
class StoredConsent:
    id: int
    patient_id: str
    purpose: str
    decision: str
    from_ns: int
    until_ns: int | None
    status: str
    source: str
    ref: str
    imported_ns: int
    revoked_ns: int | None

    @property
    def counts(self) -> bool:
        """Does this record take part in eligibility (FHIR status active and not revoked)?"""
        return self.status == "active" and self.revoked_ns is None

    def covers(self, t_ns: int) -> bool:
        return self.from_ns <= t_ns < (FOREVER if self.until_ns is None else self.until_ns)


def open_consent_db(state_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    return connect(state_dir / DB_NAME, MIGRATIONS, check_same_thread=False, readonly=readonly, sealed=SEALED)


class ConsentDb:
    """Patients, bindings and consents of one state directory (one connection, one thread at a time)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._cipher = cipher_of(conn)
        self._lookup_key = self._load_lookup_key(conn.execute("PRAGMA query_only").fetchone()[0] == 1)

    @classmethod
    def open(cls, state_dir: Path, *, readonly: bool = False) -> ConsentDb:
        if readonly and not (state_dir / DB_NAME).exists():
            raise StateError(f"{state_dir / DB_NAME}: no patients or consents recorded in this state directory")
        conn = open_consent_db(state_dir, readonly=readonly)
        try:
            return cls(conn)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ConsentDb:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- keys -----------------------------------------------------------------------------------------
    def _load_lookup_key(self, _query_only: bool) -> bytes:
        row = self.conn.execute("SELECT value FROM secrets WHERE name = 'lookup'").fetchone()
        if row is not None:
            return bytes(_SECRET.open(self._cipher, "lookup", row[0]))
        key = secrets.token_bytes(32)
        try:
            with write_transaction(self.conn):
                self.conn.execute(
                    "INSERT OR IGNORE INTO secrets (name, value) VALUES ('lookup', ?)",
                    (_SECRET.seal(self._cipher, "lookup", key) if self._cipher else key,),
                )
        except sqlite3.OperationalError as e:  # a read-only connection of a database without patients
            raise StateError(f"{DB_NAME}: no lookup key yet (bind a patient first): {e}") from e
        row = self.conn.execute("SELECT value FROM secrets WHERE name = 'lookup'").fetchone()
        return bytes(_SECRET.open(self._cipher, "lookup", row[0]))

    def pid_hash(self, patient_id: str) -> str:
        return hmac.new(self._lookup_key, b"patient\x00" + patient_id.encode(), hashlib.sha256).hexdigest()

    def _ref_hash(self, ref: str) -> str:
        return hmac.new(self._lookup_key, b"ref\x00" + ref.encode(), hashlib.sha256).hexdigest()

    def _seal(self, c: SealedColumn, row: str, value: str) -> str | bytes | None:
        return value if self._cipher is None else c.seal(self._cipher, row, value)

    # --- patients -------------------------------------------------------------------------------------
    def _ensure_patient(self, patient_id: str) -> str:
        if not patient_id or len(patient_id) > 256 or patient_id != patient_id.strip():
            raise StateError(f"patient id must be 1-256 characters without surrounding space (got {len(patient_id)})")
        h = self.pid_hash(patient_id)
        if self.conn.execute("SELECT 1 FROM patients WHERE pid_hash = ?", (h,)).fetchone() is None:
            self.conn.execute(
                "INSERT INTO patients (pid_hash, patient_id, created_ns) VALUES (?, ?, ?)",
                (h, self._seal(_PATIENT, h, patient_id), time.time_ns()),
            )
        return h

    def patient_ids(self) -> list[str]:
        return [
            str(_PATIENT.open(self._cipher, h, v))
            for h, v in self.conn.execute("SELECT pid_hash, patient_id FROM patients ORDER BY created_ns")
        ]

    def _patient_of(self, pid_hash: str) -> str:
        row = self.conn.execute("SELECT patient_id FROM patients WHERE pid_hash = ?", (pid_hash,)).fetchone()
        if row is None:
            raise StateError(f"{DB_NAME}: binding or consent names an unknown patient")
        return str(_PATIENT.open(self._cipher, pid_hash, row[0]))

    # --- bindings -------------------------------------------------------------------------------------
    def bind(self, device: str, patient_id: str, from_ns: int, until_ns: int | None = None) -> Binding:
        check_device_id(device)
        if until_ns is not None and until_ns <= from_ns:
            raise StateError("a binding's end must be after its start")
        end = FOREVER if until_ns is None else until_ns
        with write_transaction(self.conn):
            clash = self.conn.execute(
                "SELECT id FROM bindings WHERE device = ? AND from_ns < ? AND COALESCE(until_ns, ?) > ?",
                (device, end, FOREVER, from_ns),
            ).fetchone()
            if clash is not None:
                raise StateError(
                    f"device {device} is already bound in that period (binding {clash[0]}); unbind it first"
                )
            h = self._ensure_patient(patient_id)
            cur = self.conn.execute(
                "INSERT INTO bindings (device, pid_hash, from_ns, until_ns, created_ns) VALUES (?, ?, ?, ?, ?)",
                (device, h, from_ns, until_ns, time.time_ns()),
            )
        return Binding(int(cur.lastrowid or 0), device, patient_id, from_ns, until_ns)

    def unbind(self, device: str, at_ns: int) -> int:
        """End the device's open binding at ``at_ns`` (a binding that starts later is removed); returns how many
        bindings changed."""
        with write_transaction(self.conn):
            n = self.conn.execute(
                "DELETE FROM bindings WHERE device = ? AND from_ns >= ? AND until_ns IS NULL", (device, at_ns)
            ).rowcount
            n += self.conn.execute(
                "UPDATE bindings SET until_ns = ? WHERE device = ? AND until_ns IS NULL AND from_ns < ?",
                (at_ns, device, at_ns),
            ).rowcount
        return int(n)

    def bindings(self, device: str | None = None) -> list[Binding]:
        q = "SELECT id, device, pid_hash, from_ns, until_ns FROM bindings"
        args: tuple[str, ...] = ()
        if device is not None:
            q += " WHERE device = ?"
            args = (device,)
        return [
            Binding(i, d, self._patient_of(h), f, u)
            for i, d, h, f, u in self.conn.execute(q + " ORDER BY device, from_ns", args).fetchall()
        ]

    def binding_at(self, device: str, t_ns: int) -> Binding | None:
        row = self.conn.execute(
            "SELECT id, device, pid_hash, from_ns, until_ns FROM bindings WHERE device = ? AND from_ns <= ?"
            " AND COALESCE(until_ns, ?) > ? ORDER BY from_ns DESC LIMIT 1",
            (device, t_ns, FOREVER, t_ns),
        ).fetchone()
        return None if row is None else Binding(row[0], row[1], self._patient_of(row[2]), row[3], row[4])

    def bindings_of(self, patient_id: str) -> list[Binding]:
        h = self.pid_hash(patient_id)
        return [
            Binding(i, d, patient_id, f, u)
            for i, d, f, u in self.conn.execute(
                "SELECT id, device, from_ns, until_ns FROM bindings WHERE pid_hash = ? ORDER BY from_ns", (h,)
            ).fetchall()
        ]

    # --- consents -------------------------------------------------------------------------------------
    def add_consents(self, records: Iterable[ConsentRecord]) -> tuple[int, int]:
        """Insert or replace (by source reference) consent records in one transaction: (added, replaced).

        A revocation sticks: re-importing a revoked record (a nightly sync of the same file) does not undo it."""
        added = replaced = 0
        now = time.time_ns()
        with write_transaction(self.conn):
            for r in records:
                h = self._ensure_patient(r.patient_id)
                ref_hash = self._ref_hash(r.ref)
                old = self.conn.execute("SELECT id FROM consents WHERE ref_hash = ?", (ref_hash,)).fetchone()
                if old is not None:
                    self.conn.execute(
                        "UPDATE consents SET pid_hash = ?, purpose = ?, decision = ?, from_ns = ?, until_ns = ?,"
                        " status = ?, source = ?, imported_ns = ? WHERE id = ?",
                        (h, r.purpose, r.decision, r.from_ns, r.until_ns, r.status, r.source, now, old[0]),
                    )
                    replaced += 1
                    continue
                cur = self.conn.execute(
                    "INSERT INTO consents (pid_hash, purpose, decision, from_ns, until_ns, status, source, ref_hash,"
                    " source_ref, imported_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, x'', ?)",
                    (h, r.purpose, r.decision, r.from_ns, r.until_ns, r.status, r.source, ref_hash, now),
                )
                rid = int(cur.lastrowid or 0)
                self.conn.execute(
                    "UPDATE consents SET source_ref = ? WHERE id = ?", (self._seal(_REF, str(rid), r.ref), rid)
                )
                added += 1
        return added, replaced

    def consents(self, patient_id: str | None = None, purpose: str | None = RESEARCH) -> list[StoredConsent]:
        q = (
            "SELECT id, pid_hash, purpose, decision, from_ns, until_ns, status, source, source_ref, imported_ns,"
            " revoked_ns FROM consents WHERE 1 = 1"
        )
        args: list[object] = []
        if patient_id is not None:
            q += " AND pid_hash = ?"
            args.append(self.pid_hash(patient_id))
        if purpose is not None:
            q += " AND purpose = ?"
            args.append(purpose)
        out = []
        for i, h, p, d, f, u, st, src, ref, imp, rev in self.conn.execute(q + " ORDER BY id", args).fetchall():
            out.append(
                StoredConsent(
                    i, self._patient_of(h), p, d, f, u, st, src, str(_REF.open(self._cipher, str(i), ref)), imp, rev
                )
            )
        return out

    def revoke(self, ids: Sequence[int] = (), patient_id: str | None = None, at_ns: int | None = None) -> int:
        """Revoke consent records (by id, or every permit of a patient): they no longer count, for any time."""
        now = time.time_ns() if at_ns is None else at_ns
        n = 0
        with write_transaction(self.conn):
            for i in ids:
                n += self.conn.execute(
                    "UPDATE consents SET revoked_ns = ? WHERE id = ? AND revoked_ns IS NULL", (now, i)
                ).rowcount
            if patient_id is not None:
                n += self.conn.execute(
                    "UPDATE consents SET revoked_ns = ? WHERE pid_hash = ? AND decision = 'permit'"
                    " AND revoked_ns IS NULL",
                    (now, self.pid_hash(patient_id)),
                ).rowcount
        return int(n)

    # --- research decisions (audit) --------------------------------------------------------------------
    def record_decisions(self, rows: Sequence[tuple[int, int, str, int, int, str, str, int, int]]) -> None:
        now = time.time_ns()
        with write_transaction(self.conn):
            self.conn.executemany(
                "INSERT OR REPLACE INTO research_batches (batch_id, envelope_n, device, first_ns, last_ns, decision,"
                " reason, points_in, points_out, decided_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*r, now) for r in rows],
            )

    def decisions(self, device: str | None = None) -> list[tuple[int, int, str, int, int, str, str, int, int]]:
        q = (
            "SELECT batch_id, envelope_n, device, first_ns, last_ns, decision, reason, points_in, points_out"
            " FROM research_batches"
        )
        if device is not None:
            return self.conn.execute(q + " WHERE device = ? ORDER BY batch_id", (device,)).fetchall()
        return self.conn.execute(q + " ORDER BY batch_id").fetchall()

    def research_spans(self, device: str, since_ns: int, until_ns: int) -> list[tuple[int, int, int]]:
        """(first_ns, last_ns, envelope_n) of the device's batches the research sink has decided on (research-path
        data, whatever the decision then: eligibility is decided again at read time) that overlap [since, until]."""
        return self.conn.execute(
            "SELECT first_ns, last_ns, envelope_n FROM research_batches WHERE device = ?"
            " AND first_ns <= ? AND last_ns >= ? ORDER BY first_ns",
            (device, until_ns, since_ns),
        ).fetchall()

    def undecided_spans(self, device: str, since_ns: int, until_ns: int) -> list[tuple[int, int, int, int, str]]:
        """(batch_id, envelope_n, first_ns, last_ns, decision) of the device's batches the research sink did not
        pass in full (``partial`` or ``not_eligible``) that overlap [since, until]."""
        return self.conn.execute(
            "SELECT batch_id, envelope_n, first_ns, last_ns, decision FROM research_batches WHERE device = ?"
            " AND decision != 'eligible' AND first_ns <= ? AND last_ns >= ? ORDER BY first_ns",
            (device, until_ns, since_ns),
        ).fetchall()

    def reseal(self, limit: int) -> int:
        return reseal_some(self.conn, SEALED, limit)
