"""COSE_Sign1 (RFC 9052 §4.2) with Ed25519, tagged (CBOR tag 18).

Message::

    18([protected: bstr .cbor {1: alg}, unprotected: {4: kid}, payload: bstr, signature: bstr])

The signature is Ed25519 over the CBOR encoding of
``["Signature1", protected, h'', payload]`` (``Sig_structure``, no external AAD). Verification
rebuilds it from the *received* protected bstr; the protected map is never re-encoded.

``kid`` sits in the unprotected header, so it is not covered by the signature: the caller's
key lookup must bind kid to key (for did:key the kid *is* the key, see :mod:`.envelope`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import ProvenanceError

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
"""EdDSA (RFC 9053): what deployed COSE libraries verify today. Emitted by default."""
ALG_ED25519 = -19
"""Ed25519 (RFC 9864, fully specified). Accepted on input; emit only when every verifier takes it."""

HDR_ALG = 1
HDR_CRIT = 2
HDR_KID = 4

_SIGNATURE_LEN = 64
_DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, EOFError)

Signer = Callable[[bytes], bytes]
"""Raw Ed25519 signing function: message bytes → 64-byte signature."""
KeyLookup = Callable[[bytes], Ed25519PublicKey]
"""kid → public key; raises :class:`ProvenanceError` for a kid it does not know."""


def _bstr_head(length: int) -> bytes:
    """CBOR major type 2 head for a byte string of ``length`` bytes (shortest form)."""
    if length < 24:
        return bytes([0x40 | length])
    if length < 0x100:
        return bytes([0x58, length])
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    if length < 0x1_0000_0000:
        return b"\x5a" + length.to_bytes(4, "big")
    return b"\x5b" + length.to_bytes(8, "big")


_SIG1_PREFIX = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """Encoded ``Sig_structure`` for COSE_Sign1 (built by concatenation: no copy of the payload via cbor2)."""
    return b"".join(
        (
            _SIG1_PREFIX,
            _bstr_head(len(protected)),
            protected,
            _bstr_head(len(external_aad)),
            external_aad,
            _bstr_head(len(payload)),
            payload,
        )
    )


def sign1_with(payload: bytes, signer: Signer, kid: bytes, alg: int = ALG_EDDSA) -> bytes:
    """Like :func:`sign1`, with any raw Ed25519 signing function (e.g. a key held by an identity object)."""
    if alg not in (ALG_EDDSA, ALG_ED25519):
        raise ProvenanceError(f"COSE alg {alg} is not an Ed25519 algorithm (use -8 or -19)")
    if not isinstance(payload, bytes) or not isinstance(kid, bytes):
        raise ProvenanceError("COSE_Sign1 payload and kid must be bytes")
    protected = cbor2.dumps({HDR_ALG: alg}, canonical=True)
    signature = signer(sig_structure(protected, payload))
    if len(signature) != _SIGNATURE_LEN:
        raise ProvenanceError(f"signer returned {len(signature)} bytes, an Ed25519 signature is 64")
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {HDR_KID: kid}, payload, signature]))


def sign1(payload: bytes, private_key: Ed25519PrivateKey, kid: bytes, alg: int = ALG_EDDSA) -> bytes:
    """Tagged COSE_Sign1 of ``payload``: protected ``{1: alg}``, unprotected ``{4: kid}``."""
    return sign1_with(payload, private_key.sign, kid, alg)


def decode_exact(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item filling all of ``data`` (definite lengths, no duplicate map keys)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProvenanceError(f"{what}: expected bytes, got {type(data).__name__}")
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp, allow_indefinite=False, allow_duplicate_keys=False).decode()
    except _DECODE_ERRORS as e:
        raise ProvenanceError(f"{what}: malformed CBOR: {e}") from e
    if fp.tell() != len(data):
        raise ProvenanceError(f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj


def _split(message: bytes) -> tuple[bytes, Mapping[Any, Any], bytes, bytes]:
    obj = decode_exact(message, "COSE_Sign1")
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise ProvenanceError(f"COSE_Sign1: unexpected CBOR tag {obj.tag} (expected 18 or none)")
        obj = obj.value
    if not isinstance(obj, list | tuple) or len(obj) != 4:
        raise ProvenanceError("COSE_Sign1: not an array of 4 items [protected, unprotected, payload, signature]")
    protected, unprotected, payload, signature = obj
    if not isinstance(protected, bytes):
        raise ProvenanceError("COSE_Sign1: protected header is not a byte string")
    if not isinstance(unprotected, Mapping):
        raise ProvenanceError("COSE_Sign1: unprotected header is not a map")
    if payload is None:
        raise ProvenanceError("COSE_Sign1: detached payloads are not supported")
    if not isinstance(payload, bytes):
        raise ProvenanceError("COSE_Sign1: payload is not a byte string")
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_LEN:
        raise ProvenanceError("COSE_Sign1: signature is not a 64-byte string")
    return protected, unprotected, payload, signature


def _headers(protected: bytes, unprotected: Mapping[Any, Any]) -> tuple[int, bytes]:
    prot_map: Any = decode_exact(protected, "COSE protected header") if protected else {}
    if not isinstance(prot_map, Mapping):
        raise ProvenanceError("COSE protected header is not a map")
    both = set(prot_map) & set(unprotected)
    if both:
        raise ProvenanceError(f"COSE header labels {sorted(map(repr, both))} appear in both header buckets")
    if HDR_CRIT in prot_map or HDR_CRIT in unprotected:
        raise ProvenanceError("COSE header has critical extensions (label 2) this verifier does not understand")
    if HDR_ALG not in prot_map:
        raise ProvenanceError("COSE protected header has no alg (label 1)")
    alg = prot_map[HDR_ALG]
    kid = prot_map.get(HDR_KID, unprotected.get(HDR_KID))
    if not isinstance(kid, bytes):
        raise ProvenanceError("COSE header has no kid (label 4) byte string")
    return alg, kid


def verify1(
    message: bytes,
    public_key_for_kid: KeyLookup | Ed25519PublicKey,
    allowed_algs: tuple[int, ...] = (ALG_EDDSA, ALG_ED25519),
) -> tuple[bytes, bytes]:
    """Verify a COSE_Sign1 message (tagged or not); return ``(payload, kid)``.

    ``public_key_for_kid`` is either the one key to verify with or a lookup called with the kid.
    Raises :class:`ProvenanceError` for malformed CBOR, a wrong structure, an alg outside
    ``allowed_algs`` (or not Ed25519), a missing kid, or a signature that does not verify.
    """
    protected, unprotected, payload, signature = _split(message)
    alg, kid = _headers(protected, unprotected)
    if type(alg) is not int or alg not in allowed_algs or alg not in (ALG_EDDSA, ALG_ED25519):
        raise ProvenanceError(f"COSE alg {alg!r} is not allowed (allowed: {list(allowed_algs)})")
    key = public_key_for_kid if isinstance(public_key_for_kid, Ed25519PublicKey) else public_key_for_kid(kid)
    if not isinstance(key, Ed25519PublicKey):
        raise ProvenanceError(f"no Ed25519 public key for kid {kid!r:.80}")
    try:
        key.verify(signature, sig_structure(protected, payload))
    except InvalidSignature as e:
        raise ProvenanceError(f"COSE_Sign1 signature does not verify for kid {kid!r:.80}") from e
    return payload, kid
