"""A simulated 5G device's own signature: SenML CBOR wrapped in COSE_Sign1 with its Ed25519 key.

Written from the wire format in docs/mqtt.md ("Device-signed payloads") and RFC 9052, independently
of the gateway's verifier (a simulated device knows only the wire)::

    18([ h'A10127' (protected {1: -8}), {4: kid}, payload, signature ])
    kid          = UTF-8 of the device's did:key (did:key:z + base58btc(ED 01 ‖ public key))
    signature    = Ed25519 over ["Signature1", h'A10127', external_aad, payload] (CBOR)
    external_aad = UTF-8 of the topic the frame is published on, ds4h/v1/devices/{id}/readings

The key is ``<pki>/devices/<device_id>.signing.key`` (PKCS#8 PEM, written by
``ds4h-gateway pki issue-device --signing-key``).
"""

from __future__ import annotations

from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

COSE_CONTENT_TYPE = 'application/cose; cose-type="cose-sign1"'
"""MQTT v5 Content-Type of a signed frame."""
PROTECTED_EDDSA = b"\xa1\x01\x27"
"""The protected header {1: -8}: alg EdDSA."""
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def did_key(public_raw: bytes) -> str:
    """did:key of a raw 32-byte Ed25519 public key (multicodec ed25519-pub ``ED 01``, base58btc)."""
    data = b"\xed\x01" + public_raw
    num = int.from_bytes(data, "big")
    out = ""
    while num:
        num, r = divmod(num, 58)
        out = _B58[r] + out
    return "did:key:z" + "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def signing_key_path(pki_dir: Path, device_id: str) -> Path:
    return pki_dir / "devices" / f"{device_id}.signing.key"


class DeviceSigner:
    """Callable ``payload → COSE_Sign1`` for one device and its readings topic."""

    def __init__(self, key: Ed25519PrivateKey, topic: str) -> None:
        self._key = key
        self._aad = topic.encode()
        self.did = did_key(key.public_key().public_bytes_raw())
        self._kid = self.did.encode()
        self._prefix = b"\x84\x6aSignature1\x43" + PROTECTED_EDDSA + cbor2.dumps(self._aad)

    @classmethod
    def load(cls, path: Path, topic: str) -> DeviceSigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key, topic)

    def __call__(self, payload: bytes) -> bytes:
        to_sign = self._prefix + cbor2.dumps(payload)  # ["Signature1", protected, aad, payload]
        signature = self._key.sign(to_sign)
        return cbor2.dumps(cbor2.CBORTag(18, [PROTECTED_EDDSA, {4: self._kid}, payload, signature]))
