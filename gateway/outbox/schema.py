"""Tables of ``<state_dir>/outbox.db`` (append these migrations; never edit a released one)."""

from __future__ import annotations

from gateway.state.sealing import MIGRATION as SEALING_MIGRATION
from gateway.state.sealing import SealedColumn

MIGRATIONS = (
    """
    CREATE TABLE envelopes (
        n INTEGER PRIMARY KEY,
        created_ns INTEGER NOT NULL,
        hash BLOB NOT NULL,
        cose BLOB NOT NULL,
        delivered_ns INTEGER
    );
    CREATE INDEX envelopes_delivered ON envelopes(delivered_ns) WHERE delivered_ns IS NOT NULL;
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_key TEXT NOT NULL UNIQUE,
        envelope_n INTEGER NOT NULL REFERENCES envelopes(n) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        device_id TEXT NOT NULL,
        priority INTEGER NOT NULL,
        n_points INTEGER NOT NULL,
        committed_ns INTEGER NOT NULL
    );
    CREATE INDEX batches_envelope ON batches(envelope_n);
    CREATE INDEX batches_urgent ON batches(id) WHERE priority > 0;
    CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    );
    CREATE TABLE sink_ahead (
        sink TEXT NOT NULL,
        batch_id INTEGER NOT NULL,
        PRIMARY KEY (sink, batch_id)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        sink TEXT NOT NULL,
        batch_id INTEGER NOT NULL,
        envelope_n INTEGER NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('dead', 'redrive')),
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (sink, batch_id)
    ) WITHOUT ROWID;
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL,
        device_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload_sha256 BLOB,
        payload_size INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX quarantine_reason ON quarantine(reason);
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
    # 2: the gateway's key history (gateway/provenance/keyhistory.py): never pruned with the archive
    """
    CREATE TABLE key_history (
        k INTEGER PRIMARY KEY,
        did TEXT NOT NULL UNIQUE,
        from_n INTEGER NOT NULL,
        created_ns INTEGER NOT NULL,
        hash BLOB NOT NULL,
        cose BLOB NOT NULL
    )
    """,
    # 3: encryption at rest (gateway/state/sealing.py)
    SEALING_MIGRATION,
    # 4: batches queued again for a sink whose decision about them may have changed (the research sink after a
    # consent or binding that covers earlier readings: gateway/dataspace/reforward.py)
    """
    CREATE TABLE sink_again (
        sink TEXT NOT NULL,
        batch_id INTEGER NOT NULL,
        queued_ns INTEGER NOT NULL,
        PRIMARY KEY (sink, batch_id)
    ) WITHOUT ROWID;
    CREATE INDEX sink_again_batch ON sink_again(batch_id)
    """,
)

SEALED: tuple[SealedColumn, ...] = (
    SealedColumn("envelopes", "cose", ("n",), "blob"),
    SealedColumn("quarantine", "detail", ("id",), "text"),
    SealedColumn("dead_letters", "reason", ("sink", "batch_id"), "text"),
)
"""The columns encrypted at rest: signed envelopes (every reading), quarantine details and dead-letter
reasons (they may quote a rejected value)."""
