"""Export files: a CBOR sequence (RFC 8742) of COSE_Sign1 messages, each as one CBOR byte string.

Layout written by :func:`write_export_file` (``ds4h-gateway outbox export``)::

    key record 1 … key record K      the whole key history (gateway/provenance/keyhistory.py)
    envelope first … envelope last   consecutive data envelopes, in envelope-number order
    trailer                          signed by the current key: first/last number, count, hashes

The trailer pins both ends, so a cut at either end shows; :mod:`gateway.provenance.verify` checks it
all. Files without key records and trailer (``write_export``, the first export format) are plain runs
of envelopes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cbor2

from gateway.errors import ProvenanceError
from gateway.provenance.cose import ALG_ED25519, ALG_EDDSA, decode_exact, sign1_with, verify1
from gateway.provenance.didkey import key_for_kid
from gateway.provenance.envelope import HASH_LEN, envelope_hash, peek_number
from gateway.provenance.identity import GatewayIdentity
from gateway.provenance.keyhistory import KeyHistory

MEDIA_TYPE = "application/cbor-seq"
TRAILER_TYPE = "ds4h-trailer"
TRAILER_VERSION = 1
_TRAILER_KEYS = frozenset(
    {"typ", "v", "gw", "first", "last", "count", "first_hash", "last_hash", "kh", "kh_hash", "since", "until", "t"}
)


@dataclass(frozen=True, slots=True)
class Trailer:
    """The verified trailer of an export (numbers and hashes ``None`` for an empty window)."""

    did: str
    first: int | None
    last: int | None
    count: int
    first_hash: bytes | None
    last_hash: bytes | None
    key_records: int
    key_history_hash: bytes
    since_ns: int | None
    until_ns: int | None
    created_ns: int


def build_trailer(identity: GatewayIdentity, t: Trailer) -> bytes:
    payload = cbor2.dumps(
        {
            "typ": TRAILER_TYPE,
            "v": TRAILER_VERSION,
            "gw": identity.did,
            "first": t.first,
            "last": t.last,
            "count": t.count,
            "first_hash": t.first_hash,
            "last_hash": t.last_hash,
            "kh": t.key_records,
            "kh_hash": t.key_history_hash,
            "since": t.since_ns,
            "until": t.until_ns,
            "t": t.created_ns,
        },
        canonical=True,
    )
    return sign1_with(payload, identity.sign, identity.did.encode(), ALG_EDDSA)


def _opt_int(obj: Mapping[str, Any], name: str) -> int | None:
    v = obj[name]
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise ProvenanceError(f"trailer field {name} is not an integer ≥ 0 or null")


def _opt_hash(obj: Mapping[str, Any], name: str) -> bytes | None:
    v = obj[name]
    if v is None or (isinstance(v, bytes) and len(v) == HASH_LEN):
        return v
    raise ProvenanceError(f"trailer field {name} is not a {HASH_LEN}-byte hash or null")


def open_trailer(cose_bytes: bytes) -> Trailer:
    """Verify the trailer's signature (kid = gw) and fields; who must have signed it is the caller's check."""
    payload, kid = verify1(cose_bytes, key_for_kid, allowed_algs=(ALG_EDDSA, ALG_ED25519))
    obj = decode_exact(payload, "trailer payload")
    if not isinstance(obj, Mapping) or set(obj) != _TRAILER_KEYS or obj["typ"] != TRAILER_TYPE:
        raise ProvenanceError("not an export trailer (payload keys or typ differ)")
    if obj["v"] != TRAILER_VERSION:
        raise ProvenanceError(f"trailer version {obj['v']!r} is not supported")
    if obj["gw"] != kid.decode("utf-8"):
        raise ProvenanceError("trailer kid does not match its gw")
    count, kh, created = _opt_int(obj, "count"), _opt_int(obj, "kh"), _opt_int(obj, "t")
    kh_hash = _opt_hash(obj, "kh_hash")
    if count is None or kh is None or created is None or kh_hash is None:
        raise ProvenanceError("trailer count, kh, kh_hash and t must be set")
    return Trailer(
        did=obj["gw"],
        first=_opt_int(obj, "first"),
        last=_opt_int(obj, "last"),
        count=count,
        first_hash=_opt_hash(obj, "first_hash"),
        last_hash=_opt_hash(obj, "last_hash"),
        key_records=kh,
        key_history_hash=kh_hash,
        since_ns=_opt_int(obj, "since"),
        until_ns=_opt_int(obj, "until"),
        created_ns=created,
    )


def _write_private(path: Path) -> tuple[Path, BinaryIO]:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # patient data: owner only
    return tmp, os.fdopen(fd, "wb")


def write_export_file(
    path: Path,
    identity: GatewayIdentity,
    history: KeyHistory,
    envelopes: Iterable[bytes],
    *,
    since_ns: int | None,
    until_ns: int | None,
    created_ns: int,
) -> Trailer:
    """Write key history, ``envelopes`` (consecutive, in order) and a trailer signed by ``identity``."""
    current = history.current
    if current is None or current.did != identity.did:
        raise ProvenanceError("an export is signed by the key history's current key")
    first = last = None
    first_hash = last_hash = None
    count = 0
    tmp, f = _write_private(path)
    try:
        with f:
            for rec in history.records:
                f.write(cbor2.dumps(rec.cose))
            for env in envelopes:
                n = peek_number(env)
                if first is None:
                    first, first_hash = n, envelope_hash(env)
                last, last_hash = n, envelope_hash(env)
                count += 1
                f.write(cbor2.dumps(env))
            trailer = Trailer(
                did=identity.did,
                first=first,
                last=last,
                count=count,
                first_hash=first_hash,
                last_hash=last_hash,
                key_records=len(history.records),
                key_history_hash=current.hash,
                since_ns=since_ns,
                until_ns=until_ns,
                created_ns=created_ns,
            )
            f.write(cbor2.dumps(build_trailer(identity, trailer)))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return trailer


def write_export(path: Path, envelopes: Iterable[bytes]) -> int:
    """The first export format: envelopes only (no key history, no trailer)."""
    n = 0
    tmp, f = _write_private(path)
    with f:
        for env in envelopes:
            f.write(cbor2.dumps(env))  # each envelope as one CBOR byte string
            n += 1
        f.flush()
    tmp.replace(path)
    return n


def iter_items(path: Path) -> Iterator[bytes]:
    """The byte-string items of a CBOR sequence file, streamed; :class:`ProvenanceError` at the first
    byte that is not a complete byte-string item (a truncated or corrupted file)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below, the generator may stop early)
    except OSError as e:
        raise ProvenanceError(f"{path}: cannot read: {e.strerror}") from e
    with f:
        decoder = cbor2.CBORDecoder(f, allow_indefinite=False)
        while True:
            at = f.tell()
            if not f.peek(1):
                return
            try:
                item = decoder.decode()
            except (cbor2.CBORDecodeError, ValueError, EOFError, OverflowError, MemoryError) as e:
                raise ProvenanceError(f"not a CBOR sequence of byte strings at byte {at}: {e}") from e
            if not isinstance(item, bytes):
                raise ProvenanceError(f"item at byte {at} is a {type(item).__name__}, not a COSE byte string")
            yield item


def read_export(path: Path) -> Iterator[bytes]:
    """Every item of an export file (any layout), in file order."""
    yield from iter_items(path)
