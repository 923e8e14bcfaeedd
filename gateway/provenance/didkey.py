"""``did:key`` identifiers for Ed25519 public keys (W3C did:key method, multibase base58btc).

``did:key:z`` + base58btc(``ED 01`` ‖ 32-byte raw public key), where ``ED 01`` is the unsigned
varint of the multicodec ``ed25519-pub`` (0xED). Every Ed25519 did:key starts with ``did:key:z6Mk``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import ProvenanceError

DID_KEY_PREFIX = "did:key:z"
"""``did:key:`` plus the multibase prefix ``z`` (base58btc)."""

ED25519_PUB_MULTICODEC = b"\xed\x01"
"""Unsigned-varint encoding of the multicodec code 0xED (``ed25519-pub``)."""

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}

_KEY_LEN = 32
_MAX_ENCODED_LEN = 60
"""34 bytes never need more than 47 base58 digits; anything much longer is refused before decoding."""


def b58encode(data: bytes) -> str:
    """Base58btc (Bitcoin alphabet); each leading zero byte becomes a leading ``1``."""
    n_zeros = len(data) - len(data.lstrip(b"\x00"))
    num = int.from_bytes(data, "big")
    digits: list[str] = []
    while num:
        num, rem = divmod(num, 58)
        digits.append(B58_ALPHABET[rem])
    return "1" * n_zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; :class:`ProvenanceError` on a character outside the alphabet."""
    num = 0
    for pos, ch in enumerate(text):
        try:
            num = num * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ProvenanceError(f"base58btc: character {ch!r} at position {pos} is not in the alphabet") from None
    n_zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\x00" * n_zeros + body


def did_key_from_public(raw32: bytes) -> str:
    """The ``did:key`` of a raw 32-byte Ed25519 public key."""
    if not isinstance(raw32, bytes) or len(raw32) != _KEY_LEN:
        raise ProvenanceError(f"an Ed25519 public key is {_KEY_LEN} raw bytes, got {raw32!r:.80}")
    return DID_KEY_PREFIX + b58encode(ED25519_PUB_MULTICODEC + raw32)


def public_from_did_key(did: str) -> bytes:
    """The raw 32-byte Ed25519 public key named by ``did``.

    Strict: requires the ``did:key:z`` prefix (no fragment, no other multibase), base58btc
    characters only, a decoded length of 34 bytes and the ``ED 01`` (ed25519-pub) multicodec prefix.
    """
    if not isinstance(did, str) or not did.startswith(DID_KEY_PREFIX):
        raise ProvenanceError(f"not an Ed25519 did:key (must start with {DID_KEY_PREFIX!r}): {did!r:.120}")
    encoded = did[len(DID_KEY_PREFIX) :]
    if not encoded or len(encoded) > _MAX_ENCODED_LEN:
        raise ProvenanceError(f"did:key {did!r:.120}: multibase value has an impossible length {len(encoded)}")
    try:
        raw = b58decode(encoded)
    except ProvenanceError as e:
        raise ProvenanceError(f"did:key {did!r}: {e}") from e
    if len(raw) != len(ED25519_PUB_MULTICODEC) + _KEY_LEN:
        raise ProvenanceError(f"did:key {did!r}: decodes to {len(raw)} bytes, expected 34 (ED 01 + 32-byte key)")
    if not raw.startswith(ED25519_PUB_MULTICODEC):
        raise ProvenanceError(f"did:key {did!r}: multicodec prefix {raw[:2].hex()} is not ed01 (ed25519-pub)")
    return raw[len(ED25519_PUB_MULTICODEC) :]


def public_key_of(did: str) -> Ed25519PublicKey:
    """The Ed25519 public key a did:key names; :class:`ProvenanceError` when it names none."""
    try:
        return Ed25519PublicKey.from_public_bytes(public_from_did_key(did))
    except ValueError as e:
        raise ProvenanceError(f"{did!r:.80}: not a usable Ed25519 key: {e}") from e


def key_for_kid(kid: bytes) -> Ed25519PublicKey:
    """The key a COSE ``kid`` holding a did:key (UTF-8) names: the verifier takes the key from the kid."""
    try:
        did = kid.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProvenanceError(f"kid {kid!r:.80} is not UTF-8 did:key text") from e
    return public_key_of(did)
