"""The signed envelope: one COSE_Sign1 per group commit, linked into a per-gateway hash chain.

Payload (deterministic CBOR, ``cbor2.dumps(..., canonical=True)``)::

    {"v": 1, "gw": did:key text, "n": envelope number (1, 2, 3 …),
     "prev": SHA-256 of the previous envelope's COSE bytes (32 zero bytes for n = 1),
     "t": creation time in ns since the Unix epoch,
     "b": [batch bytes, ...]}       # each a bstr holding gateway.batchcodec.encode_batch output

Signed as COSE_Sign1 (alg −8, kid = UTF-8 of the did:key). The hash of an envelope is the SHA-256
of its whole COSE message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from gateway.batchcodec import decode_batch
from gateway.errors import PayloadError, ProvenanceError
from gateway.model import Batch
from gateway.provenance.cose import ALG_ED25519, ALG_EDDSA, decode_exact, sign1_with, verify1
from gateway.provenance.didkey import key_for_kid
from gateway.provenance.identity import GatewayIdentity

ENVELOPE_VERSION = 1
HASH_LEN = 32
GENESIS_PREV = bytes(HASH_LEN)
"""``prev`` of envelope number 1."""
_KEYS = frozenset({"v", "gw", "n", "prev", "t", "b"})


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: signature checked, kid matching ``gw``."""

    did: str
    number: int
    prev_hash: bytes
    created_ns: int
    batch_bodies: tuple[bytes, ...]
    hash: bytes
    """SHA-256 of the whole COSE message (the next envelope's ``prev``)."""

    def batches(self) -> tuple[Batch, ...]:
        """Decode every batch body; :class:`PayloadError` names the envelope and batch index."""
        out: list[Batch] = []
        for i, body in enumerate(self.batch_bodies):
            try:
                out.append(decode_batch(body))
            except PayloadError as e:
                raise PayloadError(f"envelope {self.number} batch {i}: {e}") from e
        return tuple(out)


def envelope_hash(cose_bytes: bytes) -> bytes:
    """SHA-256 of the whole COSE message."""
    return hashlib.sha256(cose_bytes).digest()


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def build_envelope(
    identity: GatewayIdentity,
    number: int,
    prev_hash: bytes,
    created_ns: int,
    batch_bodies: Sequence[bytes],
) -> bytes:
    """Sign one group commit. ``batch_bodies`` are ``encode_batch`` outputs, embedded as they are."""
    if not _is_int(number) or number < 1:
        raise ProvenanceError(f"envelope number must be an integer ≥ 1, got {number!r}")
    if not isinstance(prev_hash, bytes) or len(prev_hash) != HASH_LEN:
        raise ProvenanceError(f"envelope {number}: prev hash must be {HASH_LEN} bytes")
    if number == 1 and prev_hash != GENESIS_PREV:
        raise ProvenanceError("envelope 1 (genesis) must have 32 zero bytes as prev hash")
    if not _is_int(created_ns) or created_ns < 0:
        raise ProvenanceError(f"envelope {number}: creation time must be an integer ≥ 0 ns, got {created_ns!r}")
    bodies = list(batch_bodies)
    for i, body in enumerate(bodies):
        if not isinstance(body, bytes):
            raise ProvenanceError(f"envelope {number}: batch body {i} is {type(body).__name__}, not bytes")
    payload = cbor2.dumps(
        {
            "v": ENVELOPE_VERSION,
            "gw": identity.did,
            "n": number,
            "prev": prev_hash,
            "t": created_ns,
            "b": bodies,
        },
        canonical=True,
    )
    return sign1_with(payload, identity.sign, identity.did.encode(), ALG_EDDSA)


def _parse_payload(payload: bytes) -> Mapping[str, Any]:
    obj = decode_exact(payload, "envelope payload")
    if not isinstance(obj, Mapping) or set(obj) != _KEYS:
        found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise ProvenanceError(f"envelope payload is not a map with keys {sorted(_KEYS)} (found {found})")
    if obj["v"] != ENVELOPE_VERSION or not _is_int(obj["v"]):
        raise ProvenanceError(f"envelope version {obj['v']!r} is not supported (expected {ENVELOPE_VERSION})")
    if not isinstance(obj["gw"], str):
        raise ProvenanceError("envelope field gw is not text")
    if not _is_int(obj["n"]) or obj["n"] < 1:
        raise ProvenanceError(f"envelope number {obj['n']!r} is not an integer ≥ 1")
    if not isinstance(obj["prev"], bytes) or len(obj["prev"]) != HASH_LEN:
        raise ProvenanceError(f"envelope {obj['n']}: prev is not a {HASH_LEN}-byte string")
    if not _is_int(obj["t"]) or obj["t"] < 0:
        raise ProvenanceError(f"envelope {obj['n']}: creation time is not an integer ≥ 0")
    b = obj["b"]
    if not isinstance(b, list | tuple) or not all(isinstance(x, bytes) for x in b):
        raise ProvenanceError(f"envelope {obj['n']}: b is not an array of byte strings")
    return obj


def open_envelope(cose_bytes: bytes, expected_did: str | None = None) -> Envelope:
    """Verify and unpack an envelope; :class:`ProvenanceError` if anything does not check out.

    The signature is verified with the key inside the kid's did:key; the kid must equal the
    payload's ``gw`` and, when given, ``expected_did``.
    """
    payload, kid = verify1(cose_bytes, key_for_kid, allowed_algs=(ALG_EDDSA, ALG_ED25519))
    obj = _parse_payload(payload)
    did = kid.decode("utf-8")
    if obj["gw"] != did:
        raise ProvenanceError(f"envelope {obj['n']}: kid {did} does not match gw {obj['gw']!r}")
    if expected_did is not None and did != expected_did:
        raise ProvenanceError(f"envelope {obj['n']}: signed by {did}, expected {expected_did}")
    if obj["n"] == 1 and obj["prev"] != GENESIS_PREV:
        raise ProvenanceError("envelope 1 (genesis) has a non-zero prev hash")
    return Envelope(
        did=did,
        number=obj["n"],
        prev_hash=obj["prev"],
        created_ns=obj["t"],
        batch_bodies=tuple(obj["b"]),
        hash=envelope_hash(cose_bytes),
    )


def peek_number(cose_bytes: bytes) -> int | None:
    """The envelope number a message *claims*, without verifying anything (for error reports)."""
    try:
        obj = decode_exact(cose_bytes, "COSE_Sign1")
        value = obj.value if isinstance(obj, cbor2.CBORTag) else obj
        n = decode_exact(value[2], "envelope payload")["n"]
    except (ProvenanceError, TypeError, IndexError, KeyError):
        return None
    return n if _is_int(n) else None
