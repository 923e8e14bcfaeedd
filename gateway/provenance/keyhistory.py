"""The gateway's key history: a small hash chain of signed key records, one per key the gateway has had.

Record *k* is a COSE_Sign1 (same profile as envelopes) whose payload is deterministic CBOR::

    {"typ": "ds4h-key", "v": 1,
     "k": record number (1 = inception, then +1 per rotation),
     "prev": SHA-256 of record k-1's COSE bytes (32 zero bytes for k = 1),
     "gw": did:key of the signer: the key current *before* this record (record 1: the first key itself),
     "new": did:key of the key that takes over,
     "pub": the new key's raw 32-byte Ed25519 public key (the one inside "new"),
     "from": the first data-envelope number the new key signs,
     "t": time of the record, ns since the Unix epoch,
     "pop": Ed25519 signature by the NEW key over pop_message(...) (proof it holds the new key)}

The COSE signature (kid = "gw") is by the old key, the proof of possession by the new one: whoever
trusts any key of the history can follow the records to every other key, in both directions.
Data envelope *n* must be signed by the key of the last record whose ``from`` ≤ *n*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature

from gateway.errors import ProvenanceError
from gateway.provenance.cose import ALG_ED25519, ALG_EDDSA, decode_exact, sign1_with, verify1
from gateway.provenance.didkey import did_key_from_public, key_for_kid, public_key_of
from gateway.provenance.envelope import GENESIS_PREV, HASH_LEN, envelope_hash
from gateway.provenance.identity import GatewayIdentity

KEY_RECORD_TYPE = "ds4h-key"
KEY_RECORD_VERSION = 1
_KEYS = frozenset({"typ", "v", "k", "prev", "gw", "new", "pub", "from", "t", "pop"})
_POP_CONTEXT = "ds4h-key-pop"


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def pop_message(k: int, prev: bytes, old_did: str, new_did: str, from_n: int, created_ns: int) -> bytes:
    """What the new key signs to prove possession: the record's fields, in a fixed CBOR array."""
    return cbor2.dumps([_POP_CONTEXT, k, prev, old_did, new_did, from_n, created_ns], canonical=True)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A verified key record (signature by ``signer_did``, proof of possession by ``did``)."""

    k: int
    prev_hash: bytes
    signer_did: str
    did: str
    from_n: int
    created_ns: int
    hash: bytes
    cose: bytes


def build_key_record(
    signer: GatewayIdentity, new: GatewayIdentity, k: int, prev_hash: bytes, from_n: int, created_ns: int
) -> bytes:
    """Sign record ``k``: ``signer`` is the current key (``new`` itself for the inception record)."""
    if not _is_int(k) or k < 1 or not _is_int(from_n) or from_n < 1 or not _is_int(created_ns) or created_ns < 0:
        raise ProvenanceError(f"key record {k!r}: number, from and time must be integers (≥ 1, ≥ 1, ≥ 0)")
    if k == 1 and (signer.did != new.did or prev_hash != GENESIS_PREV):
        raise ProvenanceError("key record 1 (inception) is self-signed and has a zero prev hash")
    if k > 1 and signer.did == new.did:
        raise ProvenanceError(f"key record {k}: a rotation needs a new key")
    pop = new.sign(pop_message(k, prev_hash, signer.did, new.did, from_n, created_ns))
    payload = cbor2.dumps(
        {
            "typ": KEY_RECORD_TYPE,
            "v": KEY_RECORD_VERSION,
            "k": k,
            "prev": prev_hash,
            "gw": signer.did,
            "new": new.did,
            "pub": new.public_key_bytes,
            "from": from_n,
            "t": created_ns,
            "pop": pop,
        },
        canonical=True,
    )
    return sign1_with(payload, signer.sign, signer.did.encode(), ALG_EDDSA)


def _payload(obj: Any) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping) or set(obj) != _KEYS or obj.get("typ") != KEY_RECORD_TYPE:
        raise ProvenanceError("not a key record (payload keys or typ differ)")
    if obj["v"] != KEY_RECORD_VERSION or not _is_int(obj["v"]):
        raise ProvenanceError(f"key record version {obj['v']!r} is not supported")
    for name in ("k", "from", "t"):
        if not _is_int(obj[name]) or obj[name] < (0 if name == "t" else 1):
            raise ProvenanceError(f"key record field {name} is not a valid integer")
    if not isinstance(obj["prev"], bytes) or len(obj["prev"]) != HASH_LEN:
        raise ProvenanceError(f"key record {obj['k']}: prev is not a {HASH_LEN}-byte string")
    if not isinstance(obj["gw"], str) or not isinstance(obj["new"], str):
        raise ProvenanceError(f"key record {obj['k']}: gw and new must be did:key text")
    if not isinstance(obj["pub"], bytes) or not isinstance(obj["pop"], bytes):
        raise ProvenanceError(f"key record {obj['k']}: pub and pop must be byte strings")
    return obj


def open_key_record(cose_bytes: bytes) -> KeyRecord:
    """Verify one record on its own: COSE signature by kid = gw, pub inside new, proof of possession."""
    payload, kid = verify1(cose_bytes, key_for_kid, allowed_algs=(ALG_EDDSA, ALG_ED25519))
    obj = _payload(decode_exact(payload, "key record payload"))
    k = obj["k"]
    if kid.decode("utf-8") != obj["gw"]:
        raise ProvenanceError(f"key record {k}: kid does not match gw {obj['gw']!r:.80}")
    if len(obj["pub"]) != 32 or did_key_from_public(obj["pub"]) != obj["new"]:
        raise ProvenanceError(f"key record {k}: pub is not the public key of {obj['new']!r:.80}")
    try:
        public_key_of(obj["new"]).verify(
            obj["pop"], pop_message(k, obj["prev"], obj["gw"], obj["new"], obj["from"], obj["t"])
        )
    except InvalidSignature as e:
        raise ProvenanceError(f"key record {k}: proof of possession of {obj['new']} does not verify") from e
    return KeyRecord(
        k=k,
        prev_hash=obj["prev"],
        signer_did=obj["gw"],
        did=obj["new"],
        from_n=obj["from"],
        created_ns=obj["t"],
        hash=envelope_hash(cose_bytes),
        cose=cose_bytes,
    )


def is_key_record(cose_bytes: bytes) -> bool:
    """Does this message *claim* to be a key record (payload typ), verified or not?"""
    return peek_type(cose_bytes) == KEY_RECORD_TYPE


def peek_type(cose_bytes: bytes) -> str | None:
    """The payload's ``typ`` (``None`` for data envelopes and for anything unreadable). Verifies nothing."""
    try:
        obj = decode_exact(cose_bytes, "COSE_Sign1")
        value = obj.value if isinstance(obj, cbor2.CBORTag) else obj
        payload = decode_exact(value[2], "payload")
        typ = payload.get("typ") if isinstance(payload, Mapping) else None
    except (ProvenanceError, TypeError, IndexError, AttributeError):
        return None
    return typ if isinstance(typ, str) else None


class KeyHistory:
    """A verified key history. Append records in order with :meth:`add`; ask who signs envelope *n*."""

    def __init__(self, records: Iterable[bytes] = ()) -> None:
        self.records: list[KeyRecord] = []
        for r in records:
            self.add(r)

    def add(self, cose_bytes: bytes) -> KeyRecord:
        """Verify ``cose_bytes`` as the next record; :class:`ProvenanceError` names it when it does not fit."""
        rec = open_key_record(cose_bytes)
        expected = len(self.records) + 1
        if rec.k != expected:
            raise ProvenanceError(f"key record {rec.k}: expected record {expected} (a record is missing or reordered)")
        if not self.records:
            if rec.signer_did != rec.did or rec.prev_hash != GENESIS_PREV:
                raise ProvenanceError("key record 1: an inception record is self-signed, with a zero prev hash")
        else:
            last = self.records[-1]
            if rec.prev_hash != last.hash:
                raise ProvenanceError(f"key record {rec.k}: prev-hash mismatch (record {last.k} removed or altered)")
            if rec.signer_did != last.did:
                raise ProvenanceError(f"key record {rec.k}: signed by {rec.signer_did}, the current key was {last.did}")
            if rec.did in self.dids:
                raise ProvenanceError(f"key record {rec.k}: key {rec.did} was used before")
            if rec.from_n < last.from_n:
                raise ProvenanceError(
                    f"key record {rec.k}: from envelope {rec.from_n} < {last.from_n} of the key before"
                )
        self.records.append(rec)
        return rec

    @property
    def dids(self) -> list[str]:
        return [r.did for r in self.records]

    @property
    def current(self) -> KeyRecord | None:
        return self.records[-1] if self.records else None

    def signer_for(self, n: int) -> str | None:
        """The did that must have signed data envelope ``n`` (``None`` with no records)."""
        did = None
        for r in self.records:
            if r.from_n <= n:
                did = r.did
            else:
                break
        return did

    def retired_ns(self, rec: KeyRecord) -> int | None:
        """When ``rec``'s key was replaced (the next record's time), ``None`` for the current key."""
        return self.records[rec.k].created_ns if rec.k < len(self.records) else None

    def until_n(self, rec: KeyRecord) -> int | None:
        """The last envelope number ``rec``'s key may sign (``None``: open-ended, the current key)."""
        return self.records[rec.k].from_n - 1 if rec.k < len(self.records) else None
