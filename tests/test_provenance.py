"""Gateway identity, did:key strictness, signed envelopes and hash-chain verification."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path

import cbor2
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batchcodec import encode_batch
from gateway.errors import PayloadError, ProvenanceError, StateError
from gateway.model import Batch, Reading, SourceKey, Waveform
from gateway.provenance import (
    GENESIS_PREV,
    GatewayIdentity,
    build_envelope,
    did_key_from_public,
    envelope_hash,
    load_or_create,
    open_envelope,
    public_from_did_key,
    verify_chain,
)
from gateway.provenance.cose import sign1, verify1
from gateway.provenance.didkey import b58decode, b58encode

T0 = 1_710_489_600_000_000_000


def _batch(i: int) -> Batch:
    return Batch(
        key=SourceKey("hr-strap-1", ("boot7", i)),
        received_ns=T0 + i,
        readings=(Reading("MDC_ECG_HEART_RATE", 60.0 + i, "/min", T0 + i * 1_000_000),),
        waveforms=(Waveform("MDC_ECG_ELEC_POTL", "uV", T0, 7_692_308, np.arange(i, i + 5, dtype=np.int32)),),
        kind="heart_rate",
    )


# --- did:key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("did", "match"),
    [
        ("", "must start with"),
        ("did:key:", "must start with"),
        ("did:key:z", "impossible length"),
        ("did:web:example.org", "must start with"),
        ("did:key:u7QE", "must start with"),  # base64url multibase, not base58btc
        ("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw#z6Mk", "not in the alphabet"),
        ("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMs0", "not in the alphabet"),
        ("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsl", "not in the alphabet"),
        ("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMs", "is not ed01"),  # last digit dropped
        ("did:key:z" + b58encode(b"\xed\x01" + bytes(range(31))), "decodes to 33 bytes"),
        ("did:key:z1" + "6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "decodes to 35 bytes"),
        ("did:key:z" + b58encode(b"\xe7\x01" + bytes(33)), "decodes to 35 bytes"),
        ("did:key:z" + b58encode(b"\xe7\x01" + bytes(range(32))), "is not ed01"),  # secp256k1-pub
        ("did:key:z" + "2" * 200, "impossible length"),
    ],
)
def test_public_from_did_key_is_strict(did: str, match: str) -> None:
    with pytest.raises(ProvenanceError, match=match):
        public_from_did_key(did)


@pytest.mark.parametrize("raw", [b"", bytes(31), bytes(33)])
def test_did_key_from_public_needs_32_bytes(raw: bytes) -> None:
    with pytest.raises(ProvenanceError):
        did_key_from_public(raw)


def test_base58_leading_zeros() -> None:
    assert b58encode(b"") == ""
    assert b58encode(b"\x00\x00\x01") == "112"
    assert b58decode("112") == b"\x00\x00\x01"


@given(st.binary(max_size=64))
def test_base58_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


@given(st.binary(min_size=32, max_size=32))
def test_did_key_round_trip(raw: bytes) -> None:
    did = did_key_from_public(raw)
    assert did.startswith("did:key:z6Mk")
    assert public_from_did_key(did) == raw


# --- identity --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_created_0600_and_reloaded(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        ident = load_or_create(tmp_path / "state")
    finally:
        os.umask(old_umask)
    key_file = tmp_path / "state" / "gateway.key"
    assert _mode(key_file) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert ident.did == did_key_from_public(ident.public_key_bytes)
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["gateway.key"]  # no temp files left
    again = load_or_create(tmp_path / "state")
    assert again.did == ident.did
    sig = again.sign(b"data")
    ident.public_key.verify(sig, b"data")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_identity_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    load_or_create(tmp_path)
    key_file = tmp_path / "gateway.key"
    key_file.chmod(mode)
    with pytest.raises(StateError, match="chmod 600") as exc:
        load_or_create(tmp_path)
    assert str(key_file) in str(exc.value)
    key_file.chmod(0o600)
    load_or_create(tmp_path)


def test_identity_refuses_other_key_files(tmp_path: Path) -> None:
    key_file = tmp_path / "gateway.key"
    key_file.write_bytes(b"not a key")
    key_file.chmod(0o600)
    with pytest.raises(StateError, match="not an unencrypted PKCS#8 PEM"):
        load_or_create(tmp_path)
    key_file.write_bytes(
        X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(StateError, match="not an Ed25519 key"):
        load_or_create(tmp_path)


def test_identity_refuses_symlinked_key(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.key"
    load_or_create(tmp_path)
    (tmp_path / "gateway.key").rename(real)
    (tmp_path / "gateway.key").symlink_to(real)
    with pytest.raises(StateError, match="cannot open gateway key"):
        load_or_create(tmp_path)


def test_private_key_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        ident = load_or_create(tmp_path)
    pem = (tmp_path / "gateway.key").read_text()
    secret = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(secret, Ed25519PrivateKey)
    raw_hex = secret.private_bytes_raw().hex()
    body = "".join(pem.splitlines()[1:-1])
    for text in (repr(ident), str(ident), caplog.text):
        assert raw_hex not in text and body not in text
    assert ident.did in repr(ident)
    assert ident.did in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(ident)


# --- envelopes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ident() -> GatewayIdentity:
    return GatewayIdentity.generate()


def test_envelope_round_trip_and_layout(ident: GatewayIdentity) -> None:
    batches = [_batch(i) for i in range(3)]
    bodies = [encode_batch(b) for b in batches]
    msg = build_envelope(ident, 1, GENESIS_PREV, T0, bodies)
    env = open_envelope(msg, expected_did=ident.did)
    assert (env.did, env.number, env.prev_hash, env.created_ns) == (ident.did, 1, GENESIS_PREV, T0)
    assert env.batch_bodies == tuple(bodies)
    assert env.batches() == tuple(batches)
    assert env.hash == envelope_hash(msg) and len(env.hash) == 32

    # Exact layout: tagged COSE_Sign1, alg -8 protected, kid = did:key, canonical CBOR payload.
    tag = cbor2.loads(msg)
    assert tag.tag == 18
    protected, unprotected, payload, _sig = tag.value
    assert protected == b"\xa1\x01\x27"
    assert dict(unprotected) == {4: ident.did.encode()}
    obj = cbor2.loads(payload)
    assert obj == {"v": 1, "gw": ident.did, "n": 1, "prev": bytes(32), "t": T0, "b": bodies}
    assert cbor2.dumps(obj, canonical=True) == payload
    assert list(obj) == ["b", "n", "t", "v", "gw", "prev"]  # canonical key order
    for body in bodies:  # batch bytes embedded verbatim
        assert body in msg


def test_empty_envelope(ident: GatewayIdentity) -> None:
    env = open_envelope(build_envelope(ident, 1, GENESIS_PREV, T0, []))
    assert env.batch_bodies == () and env.batches() == ()


@pytest.mark.parametrize(
    ("number", "prev", "created", "bodies", "match"),
    [
        (0, GENESIS_PREV, T0, [], "number must be an integer ≥ 1"),
        (True, GENESIS_PREV, T0, [], "number must be an integer ≥ 1"),
        (2, bytes(31), T0, [], "32 bytes"),
        (1, b"\x01" * 32, T0, [], "genesis"),
        (2, b"\x01" * 32, -1, [], "creation time"),
        (2, b"\x01" * 32, T0, ["text"], "batch body 0 is str"),
    ],
)
def test_build_envelope_validates(
    ident: GatewayIdentity, number: int, prev: bytes, created: int, bodies: list[bytes], match: str
) -> None:
    with pytest.raises(ProvenanceError, match=match):
        build_envelope(ident, number, prev, created, bodies)


def test_open_envelope_checks_expected_did(ident: GatewayIdentity) -> None:
    msg = build_envelope(ident, 1, GENESIS_PREV, T0, [])
    with pytest.raises(ProvenanceError, match="expected"):
        open_envelope(msg, expected_did=GatewayIdentity.generate().did)


def _raw_envelope(key: Ed25519PrivateKey, kid: str, obj: dict[str, object]) -> bytes:
    return sign1(cbor2.dumps(obj, canonical=True), key, kid.encode())


def test_open_envelope_checks_kid_matches_gw(ident: GatewayIdentity) -> None:
    other = Ed25519PrivateKey.generate()
    other_did = did_key_from_public(other.public_key().public_bytes_raw())
    obj: dict[str, object] = {"v": 1, "gw": ident.did, "n": 1, "prev": GENESIS_PREV, "t": T0, "b": []}
    with pytest.raises(ProvenanceError, match="does not match gw"):
        open_envelope(_raw_envelope(other, other_did, obj))
    # Claiming the gateway's kid with another key fails the signature.
    with pytest.raises(ProvenanceError, match="does not verify"):
        open_envelope(_raw_envelope(other, ident.did, obj))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"v": 2}, "version"),
        ({"n": 0}, "number"),
        ({"n": "1"}, "number"),
        ({"prev": bytes(31)}, "prev"),
        ({"t": -5}, "creation time"),
        ({"b": [b"x", "y"]}, "array of byte strings"),
        ({"extra": 1}, "keys"),
        ({"n": 1, "prev": b"\x01" * 32}, "genesis"),
    ],
)
def test_open_envelope_checks_payload(changes: dict[str, object], match: str) -> None:
    key = Ed25519PrivateKey.generate()
    did = did_key_from_public(key.public_key().public_bytes_raw())
    obj: dict[str, object] = {"v": 1, "gw": did, "n": 2, "prev": b"\x01" * 32, "t": T0, "b": []}
    obj.update(changes)
    with pytest.raises(ProvenanceError, match=match):
        open_envelope(_raw_envelope(key, did, obj))


def test_open_envelope_rejects_non_did_kid() -> None:
    key = Ed25519PrivateKey.generate()
    for kid in (b"\xff\xfe", b"gateway-1"):
        msg = sign1(b"\xa0", key, kid)
        with pytest.raises(ProvenanceError):
            open_envelope(msg)


def test_batches_reports_bad_body(ident: GatewayIdentity) -> None:
    env = open_envelope(build_envelope(ident, 1, GENESIS_PREV, T0, [encode_batch(_batch(1)), b"\xa0"]))
    with pytest.raises(PayloadError, match="envelope 1 batch 1"):
        env.batches()


# --- hash chain ------------------------------------------------------------------------------


def _chain(ident: GatewayIdentity, count: int, start: int = 1, prev: bytes = GENESIS_PREV) -> list[bytes]:
    out: list[bytes] = []
    for n in range(start, start + count):
        msg = build_envelope(ident, n, prev, T0 + n, [encode_batch(_batch(n)), encode_batch(_batch(n + 1000))])
        out.append(msg)
        prev = envelope_hash(msg)
    return out


@pytest.fixture(scope="module")
def chain50(ident: GatewayIdentity) -> list[bytes]:
    return _chain(ident, 50)


def _problems(report_problems: list[str]) -> str:
    return "\n".join(report_problems)


def test_chain_of_50_verifies(ident: GatewayIdentity, chain50: list[bytes]) -> None:
    r = verify_chain(chain50, expected_did=ident.did, first_prev=GENESIS_PREV)
    assert r.ok, r.problems
    assert (r.count, r.first_number, r.last_number) == (50, 1, 50)
    assert r.last_hash == envelope_hash(chain50[-1])
    assert verify_chain(iter(chain50)).ok  # any iterable, no expected did


def test_chain_continues_across_exports(ident: GatewayIdentity, chain50: list[bytes]) -> None:
    first = verify_chain(chain50[:20], ident.did)
    second = verify_chain(chain50[20:], ident.did, first_prev=first.last_hash)
    assert first.ok and second.ok and second.first_number == 21
    wrong = verify_chain(chain50[21:], ident.did, first_prev=first.last_hash)
    assert not wrong.ok
    assert "envelope 22: prev-hash mismatch" in _problems(wrong.problems)


def test_empty_chain() -> None:
    r = verify_chain([])
    assert r.ok and r.count == 0 and r.last_hash is None


def test_removed_envelope_detected(chain50: list[bytes]) -> None:
    r = verify_chain(chain50[:10] + chain50[11:])
    assert not r.ok
    text = _problems(r.problems)
    assert "envelope 12: gap 10→12" in text
    assert "envelope 12: prev-hash mismatch" in text
    assert len(r.problems) == 2


def test_removed_first_envelope_detected(chain50: list[bytes]) -> None:
    r = verify_chain(chain50[1:], first_prev=GENESIS_PREV)
    assert not r.ok and "envelope 2: prev-hash mismatch" in _problems(r.problems)


def test_swapped_envelopes_detected(chain50: list[bytes]) -> None:
    swapped = list(chain50)
    swapped[20], swapped[21] = swapped[21], swapped[20]
    r = verify_chain(swapped)
    text = _problems(r.problems)
    assert not r.ok
    assert "envelope 21: reordered (comes after envelope 22)" in text
    assert "prev-hash mismatch" in text


def test_altered_batch_byte_detected(chain50: list[bytes], ident: GatewayIdentity) -> None:
    body = open_envelope(chain50[30]).batch_bodies[0]
    altered = bytearray(chain50[30])
    pos = bytes(altered).index(body) + len(body) - 1
    altered[pos] ^= 0x01
    tampered = list(chain50)
    tampered[30] = bytes(altered)
    r = verify_chain(tampered, ident.did)
    text = _problems(r.problems)
    assert "envelope 31: does not verify" in text
    assert "envelope 32: prev-hash mismatch" in text
    assert len(r.problems) == 2


def test_resigned_with_other_key_detected(chain50: list[bytes], ident: GatewayIdentity) -> None:
    impostor = GatewayIdentity.generate()
    original = open_envelope(chain50[40])
    forged = build_envelope(impostor, original.number, original.prev_hash, original.created_ns, original.batch_bodies)
    tampered = list(chain50)
    tampered[40] = forged
    for expected in (ident.did, None):
        r = verify_chain(tampered, expected)
        text = _problems(r.problems)
        assert not r.ok
        assert "envelope 41: does not verify" in text and f"signed by {impostor.did}" in text
        assert "envelope 42: prev-hash mismatch" in text
    # A run that is all the impostor's is self-consistent, but not the gateway's.
    r = verify_chain([build_envelope(impostor, 1, GENESIS_PREV, T0, [])], ident.did)
    assert not r.ok


def test_forged_envelope_with_same_number_detected(chain50: list[bytes], ident: GatewayIdentity) -> None:
    attacker = Ed25519PrivateKey.generate()
    original = open_envelope(chain50[9])
    obj: dict[str, object] = {
        "v": 1,
        "gw": ident.did,
        "n": original.number,
        "prev": original.prev_hash,
        "t": original.created_ns,
        "b": [encode_batch(_batch(999))],
    }
    forged = _raw_envelope(attacker, ident.did, obj)  # claims the gateway's kid, wrong key
    replaced = [*chain50[:9], forged, *chain50[10:]]
    r = verify_chain(replaced)
    text = _problems(r.problems)
    assert "envelope 10: does not verify" in text and "envelope 11: prev-hash mismatch" in text

    # Inserted after the genuine one: it fails on its own and breaks the next link.
    inserted = [*chain50[:10], forged, *chain50[10:]]
    r = verify_chain(inserted)
    text = _problems(r.problems)
    assert "envelope 10: does not verify" in text
    assert "envelope 11: prev-hash mismatch" in text

    # Even a validly signed duplicate (replayed genuine envelope) is caught.
    replayed = [*chain50[:10], chain50[9], *chain50[10:]]
    r = verify_chain(replayed)
    text = _problems(r.problems)
    assert "envelope 10: duplicate number (repeats envelope 10)" in text


def test_garbage_in_chain_reported_by_position(chain50: list[bytes]) -> None:
    r = verify_chain([*chain50[:3], b"\x00garbage", *chain50[3:6]])
    text = _problems(r.problems)
    assert "envelope at position 3 (number unreadable): does not verify" in text
    assert "envelope 4: prev-hash mismatch" in text


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_in_chain_is_detected(
    chain50: list[bytes], ident: GatewayIdentity, data: st.DataObject
) -> None:
    which = data.draw(st.integers(0, 9))
    msg = bytearray(chain50[which])
    msg[data.draw(st.integers(0, len(msg) - 1))] ^= data.draw(st.integers(1, 255))
    tampered = list(chain50[:10])
    tampered[which] = bytes(msg)
    assert not verify_chain(tampered, ident.did).ok


def test_open_envelope_matches_cose_verify(chain50: list[bytes], ident: GatewayIdentity) -> None:
    payload, kid = verify1(chain50[0], ident.public_key)
    assert kid == ident.did.encode() and cbor2.loads(payload)["n"] == 1
