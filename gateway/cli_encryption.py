"""``ds4h-gateway encryption new-key|status``: state encryption keys and how far a state directory is
encrypted (docs/security.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli import _print, _state_args, _state_dir
from gateway.errors import StateError
from gateway.state.cipher import key_id
from gateway.state.files import write_secret
from gateway.state.statekey import format_keys, new_key, parse_keys


def cmd_new_key(args: argparse.Namespace) -> int:
    keys = [new_key()]
    if args.keep is not None:
        try:
            old = args.keep.read_bytes()
        except OSError as e:
            raise StateError(f"{args.keep}: {e.strerror or e}") from e
        keys += parse_keys(old, str(args.keep))
    material = format_keys(keys)
    if str(args.out) in ("-", "/dev/stdout"):
        sys.stdout.buffer.write(material)
        sys.stdout.flush()
        return 0
    if args.out.exists() and not args.force:
        raise StateError(f"{args.out} exists: pass --force to replace it (keep the old key with --keep)")
    write_secret(args.out, material)
    print(f"wrote {len(keys)} key(s) to {args.out} (mode 0600); current key id {key_id(keys[0]).hex()}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.outbox.schema import SEALED as OUTBOX
    from gateway.outbox.store import open_outbox
    from gateway.sinks.local import SEALED as HISTORY
    from gateway.sinks.local import open_history
    from gateway.state.sealing import cipher_of, unsealed_counts

    state_dir = _state_dir(args)
    out: dict[str, object] = {"state_dir": str(state_dir)}
    from gateway.dataspace.patients import SEALED as CONSENT
    from gateway.dataspace.patients import open_consent_db

    dbs = (("outbox.db", open_outbox, OUTBOX), ("history.db", open_history, HISTORY))
    for name, opener, cols in (*dbs, ("consent.db", open_consent_db, CONSENT)):
        if not (state_dir / name).exists():
            continue
        conn = opener(state_dir, readonly=True)
        try:
            cipher = cipher_of(conn)
            row = conn.execute("SELECT state FROM encryption WHERE id = 1").fetchone()
            out[name] = {
                "state": row[0] if row else "plain",
                "current_key": None if cipher is None else cipher.current_kid.hex(),
                "keys": [] if cipher is None else cipher.key_ids,
                "not_under_current_key": unsealed_counts(conn, cols),
            }
        finally:
            conn.close()
    _print(out)
    return 0


def add_encryption_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enc = sub.add_parser(
        "encryption",
        help="encryption at rest: keys and status",
        description="Encryption at rest of the state databases (docs/security.md).",
    )
    enc_sub = enc.add_subparsers(dest="encryption_cmd", required=True, metavar="SUBCOMMAND")
    nk = enc_sub.add_parser(
        "new-key",
        help="write new state key material",
        description="Write a new 32-byte state encryption key (base64, one per line, mode 0600). With --keep, "
        "the keys of an existing file follow the new one (they only decrypt, for a lazy rotation).",
    )
    nk.add_argument("--out", type=Path, required=True, help="the key file to write ('-' for standard output)")
    nk.add_argument("--keep", type=Path, help="existing key material whose keys stay as previous keys")
    nk.add_argument("--force", action="store_true", help="replace --out if it exists")
    nk.set_defaults(func=cmd_new_key)
    st = enc_sub.add_parser(
        "status",
        help="how far a state directory is encrypted",
        description="Per database: its encryption state, key ids, and per column the values not (yet) under "
        "the current key (plaintext, or a previous key awaiting lazy re-encryption).",
    )
    _state_args(st)
    st.set_defaults(func=cmd_status)
