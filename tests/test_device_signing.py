"""Device-signed SenML (COSE_Sign1): the parser, the verifier, the simulated device's signer, the replay
guard — vectors from the shared protocol reference (§11), cross-checks and fuzzing. No I/O."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.senml.cose import COSE_CONTENT_TYPE, looks_signed, parse_sign1
from firmware_sim.device_signing import COSE_CONTENT_TYPE as SIM_CONTENT_TYPE
from firmware_sim.device_signing import DeviceSigner, did_key
from firmware_sim.senml import CBOR, encode
from gateway.cli import main
from gateway.devices import DeviceRegistry
from gateway.errors import PayloadError, RegistryError
from gateway.mqtt.devsig import DeviceKeys, ReplayGuard, verify_all
from gateway.pki.ca import SitePki
from gateway.provenance.didkey import did_key_from_public
from tests.mqttgw import hr_frame

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# protocols.md §10/§11: RFC 8032 TEST 1 key, the 81-byte SenML CBOR example, alg -8, no external AAD
SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PAYLOAD = bytes.fromhex(
    "82 A5 21 78 1D 75 72 6E 3A 64 65 76 3A 6D 61 63 3A 30 30 32 34 62 65 66 66 66 65 38 30"
    " 34 66 66 31 3A 22 1A 65 F4 00 00 00 62 68 72 01 63 31 2F 73 02 FB 3F F3 33 33 33 33 33"
    " 33 A4 00 64 73 70 6F 32 01 61 2F 02 FB 3F EF 0A 3D 70 A3 D7 0A 06 01"
)
SIGNATURE = bytes.fromhex(
    "9b64a4a5a6a4d3e9bcd95aa0e18e04c0d661cf678dfcd96bd3699e83dafa7140"
    "b63b1000e2aabf9f9c3819e196ec04dbf5da54758b7601a7027615abf3d9fa0b"
)
DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
TOPIC = "ds4h/v1/devices/sig-1/readings"


def _vector() -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {4: DID.encode()}, PAYLOAD, SIGNATURE]))


def test_the_reference_vector_parses_and_verifies() -> None:
    assert len(PAYLOAD) == 81
    msg = _vector()
    assert len(msg) == 215 and msg[:4] == bytes.fromhex("D28443A1")
    s = parse_sign1(msg)
    assert (s.alg, s.kid, s.payload, s.signature) == (-8, DID.encode(), PAYLOAD, SIGNATURE)
    job = DeviceKeys().job(s, DID, "sig-1", b"")  # §11 signs without external AAD
    assert verify_all([job]) == [True]
    # the same message bound to a topic (what the gateway requires) does not verify
    assert verify_all([DeviceKeys().job(s, DID, "sig-1", TOPIC.encode())]) == [False]


def test_the_simulated_signer_is_what_the_gateway_verifies() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SECRET)
    signer = DeviceSigner(key, TOPIC)
    assert signer.did == DID == did_key_from_public(key.public_key().public_bytes_raw())
    assert SIM_CONTENT_TYPE == COSE_CONTENT_TYPE
    frame = encode(hr_frame("sig-1", "b1", 3), CBOR)
    msg = signer(frame)
    assert looks_signed(msg, None) and looks_signed(msg, COSE_CONTENT_TYPE) and not looks_signed(frame, None)
    s = parse_sign1(msg, COSE_CONTENT_TYPE)
    assert s.payload == frame and s.protected == b"\xa1\x01\x27"
    keys = DeviceKeys()
    assert verify_all([keys.job(s, DID, "sig-1", TOPIC.encode())]) == [True]
    other_topic = b"ds4h/v1/devices/sig-2/readings"
    assert verify_all([keys.job(s, DID, "sig-1", other_topic)]) == [False]
    with pytest.raises(PayloadError) as e:
        keys.job(s, did_key(Ed25519PrivateKey.generate().public_key().public_bytes_raw()), "sig-1", b"")
    assert e.value.reason == "signature_unknown_key"
    with pytest.raises(PayloadError) as e:
        keys.job(s, None, "sig-1", b"")
    assert e.value.reason == "signature_unknown_key"


def _signed(**override: object) -> list[object]:
    parts: list[object] = [b"\xa1\x01\x27", {4: DID.encode()}, PAYLOAD, SIGNATURE]
    for i, v in override.items():
        parts[int(i[1:])] = v
    return parts


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (cbor2.dumps(_signed()), "signature_invalid"),  # untagged without the COSE content type
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p0=cbor2.dumps({1: -7})))), "signature_invalid"),  # ES256
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p0=cbor2.dumps({1: -8, 99: 1})))), "signature_invalid"),
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p0=b"")))[:-1], "signature_invalid"),
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p1={})))[:], "signature_invalid"),  # no kid
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p1={4: DID.encode(), 2: [1]}))), "signature_invalid"),  # crit
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p2=None))), "signature_invalid"),  # detached
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p3=SIGNATURE[:63]))), "signature_invalid"),
        (
            cbor2.dumps(cbor2.CBORTag(18, _signed(p0=cbor2.dumps({1: -8, 3: "application/json"})))),
            "unsupported_content_type",
        ),
        (cbor2.dumps(cbor2.CBORTag(18, _signed())) + b"\x00", "signature_invalid"),  # trailing bytes
        (cbor2.dumps(cbor2.CBORTag(18, _signed(p1={4: DID.encode(), 5: cbor2.CBORTag(1, 0)}))), "signature_invalid"),
    ],
)
def test_malformed_messages_are_refused(message: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_sign1(message)
    assert e.value.reason == reason


def test_content_type_parameters() -> None:
    untagged = cbor2.dumps(_signed())
    assert parse_sign1(untagged, 'application/cose; cose-type="cose-sign1"').kid == DID.encode()
    assert parse_sign1(untagged, "Application/COSE;cose-type=cose-sign1").kid == DID.encode()
    with pytest.raises(PayloadError) as e:
        parse_sign1(untagged, 'application/cose; cose-type="cose-encrypt0"')
    assert e.value.reason == "unsupported_content_type"


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_payload_error(data: bytes) -> None:
    for ct in (None, COSE_CONTENT_TYPE):
        try:
            parse_sign1(b"\xd2" + data, ct)
            parse_sign1(data, ct)
        except PayloadError:
            pass


@SETTINGS
@given(st.data())
def test_mutated_messages_never_verify_and_raise_only_payload_error(data: st.DataObject) -> None:
    key = Ed25519PrivateKey.from_private_bytes(SECRET)
    msg = bytearray(DeviceSigner(key, TOPIC)(encode(hr_frame("sig-1", "b1", 1), CBOR)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(msg) - 1))
        msg[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(msg)))
    mutated = bytes(msg[:cut]) if data.draw(st.booleans()) else bytes(msg)
    try:
        s = parse_sign1(mutated)
        ok = verify_all([DeviceKeys().job(s, DID, "sig-1", TOPIC.encode())])
    except PayloadError:
        return
    assert ok == [False] or (s.payload == encode(hr_frame("sig-1", "b1", 1), CBOR) and ok == [True])


@SETTINGS
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=70) | st.text(max_size=8),
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.integers(-3, 6), c, max_size=4),
        max_leaves=12,
    )
)
def test_any_cbor_structure_raises_only_payload_error(obj: object) -> None:
    with contextlib.suppress(PayloadError):
        parse_sign1(cbor2.dumps(cbor2.CBORTag(18, obj)))


# --- replay guard ---------------------------------------------------------------------------------------
def test_replay_guard_rules() -> None:
    g = ReplayGuard(window=100, grace_s=60)
    assert [g.check("d", "b1", s, max(0, s - 5), now=0) for s in range(20)] == [None] * 20
    assert g.check("d", "b1", 16, 14, now=0) is None  # at/above the floor (14): a re-send, the outbox dedups it
    assert g.check("d", "b1", 13, 13, now=0) == "replay"  # below the signed floor
    assert g.check("d", "b1", 400, 14, now=0) is None
    assert g.check("d", "b1", 300, 250, now=0) is None  # within the window; the floor rises to 250
    assert g.check("d", "b1", 310, None, now=0) is None
    assert g.check("d", "b1", 249, 249, now=0) == "replay"
    g2 = ReplayGuard(window=100, grace_s=60)
    g2.check("d", "w", 0, 0, now=0)
    g2.check("d", "w", 500, 0, now=0)
    assert g2.check("d", "w", 399, 0, now=0) == "stale"  # more than the window below the highest seq
    assert g2.check("d", "w", 400, 0, now=0) is None
    # a new boot supersedes b1; b1 may still re-send for grace_s, then it is retired
    assert g.check("d", "b2", 0, 0, now=10) is None
    assert g.check("d", "b1", 300, 14, now=60) is None
    assert g.check("d", "b2", 1, 0, now=65) is None
    assert g.check("d", "b1", 301, 14, now=71) == "stale"
    assert g.check("d", "b1", 302, 14, now=72) == "stale"  # remembered as retired
    # a boot that keeps producing new frames is never retired, whatever other boots appear
    assert g.check("d", "b3", 0, 0, now=80) is None
    for t in range(81, 300, 10):
        assert g.check("d", "b2", t, 0, now=t) is None
    assert g.check("other", "b1", 0, 0, now=0) is None  # per device


def test_replay_guard_retires_boots_beyond_the_limit() -> None:
    g = ReplayGuard(window=1000, grace_s=3600)
    for i in range(17):
        assert g.check("d", f"r{i}", 0, 0, now=i) is None
    assert g.check("d", "r0", 1, 0, now=20) == "stale"
    assert g.check("d", "r1", 1, 0, now=20) is None


def test_issue_device_with_a_signing_key(
    tmp_state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_state_dir
    sd = ["--state-dir", str(state)]
    assert main(["pki", "init", *sd]) == 0
    out_dir = tmp_path / "provision"
    argv = ["pki", "issue-device", *sd, "sig-9", "--kind", "ecg_patch", "--signing-key", "--require-signature"]
    assert main([*argv, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    pki = SitePki(state)
    key_path = pki.signing_key_file("sig-9")
    assert "PRIVATE KEY" not in out and str(key_path) in out and "unsigned frames refused" in out
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((out_dir / key_path.name).stat().st_mode) == 0o600
    signer = DeviceSigner.load(key_path, TOPIC)
    reg = DeviceRegistry.open(state)
    try:
        d = reg.get("sig-9")
        assert d is not None and d.public_key == signer.did and d.require_signature
        assert main(["pki", "issue-device", *sd, "sig-9", "--no-require-signature"]) == 0
        reg.refresh(force=True)
        d = reg.get("sig-9")
        assert d is not None and d.public_key == signer.did and not d.require_signature  # the key is kept
        with pytest.raises(RegistryError, match="did:key"):
            reg.set_signing("sig-9", public_key="did:key:zNotAKey")
    finally:
        reg.close()


def test_replay_guard_state_survives_a_restart() -> None:
    g = ReplayGuard(window=100, grace_s=60)
    for s in range(10):
        g.check("d", "b1", s, s, now=100)
    g.check("d", "b2", 0, 0, now=130)  # b1 superseded at 130
    for i in range(17):
        g.check("e", f"r{i}", 0, 0, now=0)
    assert g.dirty == {"d", "e"}
    saved = {dev: g.export(dev, now=150) for dev in ("d", "e")}
    assert g.export("nobody", now=150) is None
    g2 = ReplayGuard(window=100, grace_s=60)
    for dev, text in saved.items():
        assert text is not None
        g2.restore(dev, text, now=5)  # a new process: another monotonic clock
    assert g2.check("d", "b1", 4, 4, now=5) == "replay"
    assert g2.check("d", "b1", 10, 9, now=44) is None  # superseded 20 s before the restart: 40 s left
    assert g2.check("d", "b2", 1, 0, now=45) is None
    assert g2.check("d", "b1", 11, 9, now=46) is None  # both boots advance in turn: neither retires
    assert g2.check("d", "b2", 1, 0, now=107) == "stale"  # b2 superseded since 46: more than 60 s
    assert g2.check("e", "r0", 1, 0, now=5) == "stale"  # retired before the restart
    g2.restore("f", "not json", now=5)  # dropped, relearnt
    assert g2.check("f", "x", 0, 0, now=5) is None
