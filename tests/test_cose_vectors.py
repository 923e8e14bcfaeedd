"""COSE_Sign1 and did:key against the verified vectors of protocols.md §10/§11, plus tamper properties."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ProvenanceError
from gateway.provenance.cose import sig_structure, sign1, verify1
from gateway.provenance.didkey import did_key_from_public, public_from_did_key

RFC8032_T1_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_T1_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
T1_DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
T1_KID = T1_DID.encode()

# protocols.md §10: the 81-byte SenML CBOR pack.
SENML_CBOR = bytes.fromhex(
    "82 A5 21 78 1D 75 72 6E 3A 64 65 76 3A 6D 61 63 3A 30 30 32 34 62 65 66 66 66 65 38 30"
    "34 66 66 31 3A 22 1A 65 F4 00 00 00 62 68 72 01 63 31 2F 73 02 FB 3F F3 33 33 33 33 33"
    "33 A4 00 64 73 70 6F 32 01 61 2F 02 FB 3F EF 0A 3D 70 A3 D7 0A 06 01"
)

SIG_ALG_M8 = bytes.fromhex(
    "9b64a4a5a6a4d3e9bcd95aa0e18e04c0d661cf678dfcd96bd3699e83dafa7140"
    "b63b1000e2aabf9f9c3819e196ec04dbf5da54758b7601a7027615abf3d9fa0b"
)
SIG_ALG_M19 = bytes.fromhex(
    "7021d9e8e41924d61a80107c75833ff51f39b6618f3b40c46cdef03a6d93497e"
    "9259e8f5c0ee3b5e49c8a1a118f78741f8f7b844a45baa6afe05db98c5b3ba07"
)


@pytest.fixture(scope="module")
def t1_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(RFC8032_T1_SECRET)


def _expected_message(protected: bytes, signature: bytes) -> bytes:
    return (
        b"\xd2\x84"
        + bytes([0x40 | len(protected)])
        + protected
        + b"\xa1\x04\x58\x38"
        + T1_KID
        + b"\x58\x51"
        + SENML_CBOR
        + b"\x58\x40"
        + signature
    )


def test_payload_vector_is_81_bytes() -> None:
    assert len(SENML_CBOR) == 81
    assert cbor2.loads(SENML_CBOR)[0][-2] == "urn:dev:mac:0024befffe804ff1:"


def test_did_key_rfc8032_test1() -> None:
    assert did_key_from_public(RFC8032_T1_PUBLIC) == T1_DID
    assert public_from_did_key(T1_DID) == RFC8032_T1_PUBLIC


def test_did_key_w3c_example_round_trip() -> None:
    did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    raw = public_from_did_key(did)
    assert raw.hex() == "2e6fcce36701dc791488e0d0b1745cc1e33a4c1c9fcc41c63bd343dbbe0970e6"
    assert did_key_from_public(raw) == did


def test_sig_structure_vector() -> None:
    s = sig_structure(b"\xa1\x01\x27", SENML_CBOR)
    assert len(s) == 100
    assert s == bytes.fromhex("84 6A 53 69 67 6E 61 74 75 72 65 31 43 A1 01 27 40 58 51") + SENML_CBOR
    assert s == cbor2.dumps(["Signature1", b"\xa1\x01\x27", b"", SENML_CBOR])


@pytest.mark.parametrize(
    ("alg", "protected", "signature"),
    [(-8, b"\xa1\x01\x27", SIG_ALG_M8), (-19, b"\xa1\x01\x32", SIG_ALG_M19)],
)
def test_sign1_vector_byte_for_byte(t1_key: Ed25519PrivateKey, alg: int, protected: bytes, signature: bytes) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID, alg)
    assert len(msg) == 215
    assert msg[-64:].hex() == signature.hex()
    assert msg == _expected_message(protected, signature)
    payload, kid = verify1(msg, t1_key.public_key())
    assert (payload, kid) == (SENML_CBOR, T1_KID)


def test_verify_with_kid_lookup(t1_key: Ed25519PrivateKey) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID)
    seen: list[bytes] = []

    def lookup(kid: bytes) -> Ed25519PublicKey:
        seen.append(kid)
        return Ed25519PublicKey.from_public_bytes(public_from_did_key(kid.decode()))

    assert verify1(msg, lookup) == (SENML_CBOR, T1_KID)
    assert seen == [T1_KID]


def test_untagged_message_is_accepted(t1_key: Ed25519PrivateKey) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID)
    assert verify1(msg[1:], t1_key.public_key())[0] == SENML_CBOR


def test_alg_allow_list(t1_key: Ed25519PrivateKey) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID, -19)
    with pytest.raises(ProvenanceError, match="alg -19 is not allowed"):
        verify1(msg, t1_key.public_key(), allowed_algs=(-8,))
    with pytest.raises(ProvenanceError, match="not an Ed25519 algorithm"):
        sign1(SENML_CBOR, t1_key, T1_KID, -7)


def _resign(key: Ed25519PrivateKey, protected: bytes, unprotected: dict[int, object], payload: bytes) -> bytes:
    """A correctly signed message with arbitrary headers (to test header checks, not signatures)."""
    sig = key.sign(sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, sig]))


@pytest.mark.parametrize(
    ("protected", "unprotected", "match"),
    [
        (cbor2.dumps({1: -7}), {4: T1_KID}, "alg -7 is not allowed"),  # ES256: not Ed25519
        (cbor2.dumps({1: "EdDSA"}), {4: T1_KID}, "is not allowed"),
        (cbor2.dumps({1: -8.0}), {4: T1_KID}, "is not allowed"),
        (b"", {1: -8, 4: T1_KID}, "no alg"),  # alg unprotected only
        (cbor2.dumps({1: -8}), {}, "no kid"),
        (cbor2.dumps({1: -8}), {4: "text kid"}, "no kid"),
        (cbor2.dumps({1: -8, 2: [99]}), {4: T1_KID}, "critical"),
        (cbor2.dumps({1: -8}), {1: -8, 4: T1_KID}, "both header buckets"),
        (cbor2.dumps([1, -8]), {4: T1_KID}, "not a map"),
        (b"\xa1\x01", {4: T1_KID}, "malformed CBOR"),
        (b"\xa1\x01\x27\x00", {4: T1_KID}, "trailing"),
        (b"\xa2\x01\x27\x01\x27", {4: T1_KID}, "malformed CBOR"),  # duplicate label
    ],
)
def test_header_checks(t1_key: Ed25519PrivateKey, protected: bytes, unprotected: dict[int, object], match: str) -> None:
    msg = _resign(t1_key, protected, unprotected, SENML_CBOR)
    with pytest.raises(ProvenanceError, match=match):
        verify1(msg, t1_key.public_key())


def test_protected_bstr_is_never_reencoded(t1_key: Ed25519PrivateKey) -> None:
    # Non-shortest encoding of -8 (0x38 0x07): valid CBOR, different bytes. The signature covers
    # the received bytes, so it verifies; re-encoding the map would break it.
    protected = b"\xa1\x01\x38\x07"
    msg = _resign(t1_key, protected, {4: T1_KID}, SENML_CBOR)
    assert verify1(msg, t1_key.public_key()) == (SENML_CBOR, T1_KID)


@pytest.mark.parametrize("index", [5, 100, 150])  # protected header, payload, signature
def test_tampered_byte_fails(t1_key: Ed25519PrivateKey, index: int) -> None:
    msg = bytearray(sign1(SENML_CBOR, t1_key, T1_KID))
    msg[index] ^= 0x01
    with pytest.raises(ProvenanceError):
        verify1(bytes(msg), t1_key.public_key())


def test_wrong_key_fails(t1_key: Ed25519PrivateKey) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID)
    with pytest.raises(ProvenanceError, match="does not verify"):
        verify1(msg, Ed25519PrivateKey.generate().public_key())


def test_truncation_fails_at_every_length(t1_key: Ed25519PrivateKey) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID)
    for n in range(len(msg)):
        with pytest.raises(ProvenanceError):
            verify1(msg[:n], t1_key.public_key())


def test_trailing_bytes_fail(t1_key: Ed25519PrivateKey) -> None:
    msg = sign1(SENML_CBOR, t1_key, T1_KID)
    with pytest.raises(ProvenanceError, match="trailing"):
        verify1(msg + b"\x00", t1_key.public_key())


@pytest.mark.parametrize(
    ("garbage", "match"),
    [
        (b"", "malformed CBOR"),
        (b"\xff\xff\xff", "malformed CBOR"),
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "malformed CBOR"),  # huge claimed length
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", bytes(64)])), "unexpected CBOR tag 17"),
        (cbor2.dumps([b"", {}, b""]), "array of 4"),
        (cbor2.dumps({"a": 1}), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(18, [{}, {}, b"", bytes(64)])), "protected header is not a byte string"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", [], b"", bytes(64)])), "unprotected header is not a map"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, bytes(64)])), "detached"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, "text", bytes(64)])), "payload is not a byte string"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", bytes(63)])), "64-byte"),
        (b"\xd2\x9f\x40\xa0\x40\x58\x40" + bytes(64) + b"\xff", "malformed CBOR"),  # indefinite array
    ],
)
def test_garbage_and_wrong_structure(t1_key: Ed25519PrivateKey, garbage: bytes, match: str) -> None:
    with pytest.raises(ProvenanceError, match=match):
        verify1(garbage, t1_key.public_key())


# --- properties -----------------------------------------------------------------------------

_PROPERTY_KEY = Ed25519PrivateKey.generate()
_PROPERTY_KID = did_key_from_public(_PROPERTY_KEY.public_key().public_bytes_raw()).encode()


def _strict_lookup(kid: bytes) -> Ed25519PublicKey:
    """A lookup that binds kid to key, as every real caller must (kid is not signed)."""
    if kid != _PROPERTY_KID:
        raise ProvenanceError(f"unknown kid {kid!r}")
    return _PROPERTY_KEY.public_key()


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=2048), alg=st.sampled_from([-8, -19]))
def test_round_trip_property(payload: bytes, alg: int) -> None:
    msg = sign1(payload, _PROPERTY_KEY, _PROPERTY_KID, alg)
    assert verify1(msg, _strict_lookup) == (payload, _PROPERTY_KID)


@settings(max_examples=500, deadline=None)
@given(payload=st.binary(max_size=300), data=st.data())
def test_any_single_byte_change_never_verifies(payload: bytes, data: st.DataObject) -> None:
    msg = bytearray(sign1(payload, _PROPERTY_KEY, _PROPERTY_KID))
    index = data.draw(st.integers(0, len(msg) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    msg[index] ^= mask
    with pytest.raises(ProvenanceError):
        verify1(bytes(msg), _strict_lookup)


def test_every_bit_flip_never_verifies() -> None:
    msg = sign1(SENML_CBOR, _PROPERTY_KEY, _PROPERTY_KID)
    for index in range(len(msg)):
        for bit in range(8):
            flipped = bytearray(msg)
            flipped[index] ^= 1 << bit
            with pytest.raises(ProvenanceError):
                verify1(bytes(flipped), _strict_lookup)
