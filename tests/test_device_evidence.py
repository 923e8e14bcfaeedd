"""Device signatures carried in envelopes (gateway/provenance/evidence.py, docs/provenance.md).

A batch decoded from a device-signed frame keeps the signed message (batch layout 3); ``verify`` checks the
device signature and that decoding the signed payload gives exactly the batch. An honest batch passes; a
batch a gateway altered (value, time, a dropped or added reading, another frame's source key) fails even
inside an envelope the gateway signed; another device's message fails; arbitrary bytes only ever fail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.senml.codec import SENML_CBOR
from drivers.senml.cose import parse_sign1, tagged_sign1
from drivers.senml.profile import decode_frame
from firmware_sim.device_signing import DeviceSigner
from firmware_sim.senml import CBOR, Header, ecg_records, encode, frame_records
from gateway.batchcodec import decode_batch, encode_batch
from gateway.model import Batch, SourceKey
from gateway.provenance import GENESIS_PREV, GatewayIdentity, build_envelope, envelope_hash
from gateway.provenance.evidence import EvidenceError, check_evidence
from gateway.provenance.export import write_export_file
from gateway.provenance.keyhistory import KeyHistory, build_key_record
from gateway.provenance.verify import verify_export
from tests.mqttgw import T0, hr_frame

RECEIVED = int((T0 + 100) * 1e9)


def _signer(device: str, key: Ed25519PrivateKey | None = None) -> DeviceSigner:
    return DeviceSigner(key or Ed25519PrivateKey.generate(), f"ds4h/v1/devices/{device}/readings")


def _decoded(device: str, msg: bytes, received_ns: int = RECEIVED) -> Batch:
    """What the MQTT source commits for a verified signed message."""
    frame = decode_frame(parse_sign1(msg).payload, SENML_CBOR, device, received_ns)
    return Batch(
        SourceKey(device, (frame.boot, frame.seq)),
        received_ns,
        frame.readings,
        frame.waveforms,
        kind="cardiac_monitor",
        spectra=frame.spectra,
        evidence=tagged_sign1(msg),
    )


def _two_readings(device: str, seq: int) -> bytes:
    records: list[dict[str, Any]] = [*hr_frame(device, "b1", seq), {"n": "spo2", "u": "/", "v": 0.97, "t": -1}]
    return encode(records, CBOR)


def test_an_honest_batch_matches_and_keeps_its_layout() -> None:
    sign = _signer("ev-1")
    b = _decoded("ev-1", sign(_two_readings("ev-1", 3)))
    assert check_evidence(b) == sign.did
    body = encode_batch(b)
    assert cbor2.loads(body)[0] == 3
    again = decode_batch(body)
    assert again.evidence == b.evidence and again.readings == b.readings
    assert check_evidence(again) == sign.did
    # without evidence the layout is the one envelopes signed earlier hold, byte for byte
    plain = Batch(b.key, b.received_ns, b.readings, b.waveforms, kind=b.kind)
    assert cbor2.loads(encode_batch(plain))[0] == 1


def test_an_untagged_message_is_carried_with_its_tag() -> None:
    sign = _signer("ev-1")
    msg = sign(_two_readings("ev-1", 3))
    untagged = msg[1:]
    assert tagged_sign1(untagged) == msg and tagged_sign1(msg) == msg
    assert check_evidence(_decoded("ev-1", msg)) == sign.did


def test_waveforms_and_relative_times_match_at_the_batch_receive_time() -> None:
    sign = _signer("ev-ecg")
    samples = (np.arange(130) * 7 - 400).astype(np.int32)
    pack = encode(frame_records("ev-ecg", Header("e1", 4, 4), -2.0, ecg_records(samples, 130)), CBOR)
    b = _decoded("ev-ecg", sign(pack))
    assert b.waveforms and b.waveforms[0].start_ns == RECEIVED - 2 * 10**9
    assert check_evidence(b) == sign.did
    moved = Batch(b.key, b.received_ns + 10**6, b.readings, b.waveforms, kind=b.kind, evidence=b.evidence)
    with pytest.raises(EvidenceError, match=r"waveform 1 \(ecg\) differs"):
        check_evidence(moved)
    changed = dataclasses.replace(b.waveforms[0], samples=b.waveforms[0].samples + 1)
    with pytest.raises(EvidenceError, match="waveform 1"):
        check_evidence(Batch(b.key, b.received_ns, b.readings, (changed,), kind=b.kind, evidence=b.evidence))


@pytest.mark.parametrize(
    ("alter", "message"),
    [
        (lambda b: (b.readings[0]._replace(value=b.readings[0].value + 1), b.readings[1]), "reading 1 .heart_rate."),
        (
            lambda b: (b.readings[0], b.readings[1]._replace(device_time_ns=b.readings[1].device_time_ns + 1)),
            "reading 2",
        ),
        (lambda b: b.readings[:1], "holds 1 reading.s., the device signed 2"),
        (lambda b: (*b.readings, b.readings[0]._replace(metric="pulse_rate_oximeter")), "holds 3 reading"),
        (lambda b: (b.readings[0]._replace(unit="mmol/L"), b.readings[1]), "reading 1"),
    ],
)
def test_an_altered_batch_fails(alter: Any, message: str) -> None:
    b = _decoded("ev-1", _signer("ev-1")(_two_readings("ev-1", 3)))
    lying = Batch(b.key, b.received_ns, tuple(alter(b)), b.waveforms, kind=b.kind, evidence=b.evidence)
    with pytest.raises(EvidenceError, match=message):
        check_evidence(lying)


def test_time_quality_flags_may_differ() -> None:
    b = _decoded("ev-1", _signer("ev-1")(_two_readings("ev-1", 3)))
    flags = tuple(r._replace(time_quality=r.time_quality ^ 1) for r in b.readings)
    check_evidence(Batch(b.key, b.received_ns, flags, kind=b.kind, evidence=b.evidence))


def test_another_frame_or_another_device_fails() -> None:
    sign = _signer("ev-1")
    b = _decoded("ev-1", sign(_two_readings("ev-1", 3)))
    other_seq = Batch(SourceKey("ev-1", ("b1", 4)), b.received_ns, b.readings, kind=b.kind, evidence=b.evidence)
    with pytest.raises(EvidenceError, match="seq 3, not the batch's source key b1/4"):
        check_evidence(other_seq)
    # a message ev-2 signed (for its own topic) presented as ev-1's
    theirs = _signer("ev-2")(_two_readings("ev-1", 3))
    with pytest.raises(EvidenceError, match="signature does not verify"):
        check_evidence(_decoded("ev-1", theirs))
    # ev-1's key, but signed for ev-2's topic
    key = Ed25519PrivateKey.generate()
    crossed = DeviceSigner(key, "ds4h/v1/devices/ev-2/readings")(_two_readings("ev-1", 3))
    with pytest.raises(EvidenceError, match="signature does not verify"):
        check_evidence(_decoded("ev-1", crossed))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_arbitrary_evidence_only_ever_fails(data: bytes) -> None:
    b = Batch(SourceKey("ev-1", ("b1", 3)), RECEIVED, evidence=data)
    with pytest.raises(EvidenceError):
        check_evidence(b)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(range(40)))
def test_flipping_any_bit_of_the_message_fails(bit: int, _: int) -> None:
    sign = _signer("ev-1")
    msg = bytearray(sign(_two_readings("ev-1", 3)))
    b = _decoded("ev-1", bytes(msg))
    msg[bit // 8 % len(msg)] ^= 1 << (bit % 8)
    with pytest.raises(EvidenceError):
        check_evidence(Batch(b.key, b.received_ns, b.readings, kind=b.kind, evidence=bytes(msg)))


def test_verify_names_the_batch_a_gateway_altered(tmp_path: Path) -> None:
    """The gateway's own signature is valid: only the device's signature shows the lie."""
    gw = GatewayIdentity.generate()
    history = KeyHistory([build_key_record(gw, gw, 1, GENESIS_PREV, 1, 1)])
    sign = _signer("ev-1")
    honest = [_decoded("ev-1", sign(_two_readings("ev-1", s))) for s in range(1, 4)]
    b = honest[1]
    lying = Batch(b.key, b.received_ns, (b.readings[0]._replace(value=40.0), b.readings[1]), kind=b.kind,
                  evidence=b.evidence)  # fmt: skip

    def export(batches: list[Batch], name: str) -> Path:
        envelopes, prev = [], GENESIS_PREV
        for n, x in enumerate(batches, 1):
            env = build_envelope(gw, n, prev, 1_000 + n, [encode_batch(x)])
            envelopes.append(env)
            prev = envelope_hash(env)
        path = tmp_path / name
        write_export_file(path, gw, history, envelopes, since_ns=None, until_ns=None, created_ns=5_000)
        return path

    good = verify_export(export(honest, "honest.cborseq"), gw.did)
    assert good.ok and good.device_signed == 3 and good.device_keys == {"ev-1": {sign.did}}
    assert good.batches_by_device == {"ev-1": [3, 0]}
    bad = verify_export(export([honest[0], lying, honest[2]], "lying.cborseq"), gw.did)
    assert not bad.ok and bad.device_signed == 2
    assert bad.problems == [
        "envelope 2 batch 1: device ev-1: reading 1 (heart_rate) differs from what the device signed"
    ]


def test_a_stripped_signature_and_a_second_key_show_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway can drop the carried message (the batch is then only as good as the gateway's word) or sign
    with a key it made up: verify cannot call either a forgery, but its summary shows both."""
    from gateway.cli import main

    gw = GatewayIdentity.generate()
    history = KeyHistory([build_key_record(gw, gw, 1, GENESIS_PREV, 1, 1)])
    real, made_up = _signer("ev-1"), _signer("ev-1")
    batches = [_decoded("ev-1", real(_two_readings("ev-1", s))) for s in range(1, 4)]
    batches.append(_decoded("ev-1", made_up(_two_readings("ev-1", 4))))
    b = batches[1]
    batches[1] = Batch(b.key, b.received_ns, b.readings, kind=b.kind)  # the evidence stripped
    envelopes, prev = [], GENESIS_PREV
    for n, x in enumerate(batches, 1):
        env = build_envelope(gw, n, prev, 1_000 + n, [encode_batch(x)])
        envelopes.append(env)
        prev = envelope_hash(env)
    path = tmp_path / "mixed.cborseq"
    write_export_file(path, gw, history, envelopes, since_ns=None, until_ns=None, created_ns=5_000)
    report = verify_export(path, gw.did)
    assert report.ok  # every signature that is there holds
    assert report.batches_by_device == {"ev-1": [3, 1]}
    assert report.device_keys == {"ev-1": {real.did, made_up.did}}
    assert main(["verify", str(path), "--did", gw.did]) == 0
    out = capsys.readouterr().out
    assert "device ev-1: 3 signed, 1 without a device signature; key(s)" in out
    assert "(more than one key: compare with the provisioning records)" in out


def test_a_malformed_batch_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """An export is untrusted input: a batch signed into an envelope by a made-up gateway key with fields no
    gateway writes must be reported, never raise."""
    b = _decoded("ev-1", _signer("ev-1")(_two_readings("ev-1", 3)))
    odd = Batch(b.key, "not a time", b.readings, kind=b.kind, evidence=b.evidence)  # type: ignore[arg-type]
    with pytest.raises(EvidenceError, match="malformed batch"):
        check_evidence(odd)
    gw = GatewayIdentity.generate()
    history = KeyHistory([build_key_record(gw, gw, 1, GENESIS_PREV, 1, 1)])
    odd_times = Batch(b.key, b.received_ns, (b.readings[0]._replace(device_time_ns="late"),), kind=b.kind)  # type: ignore[arg-type]
    envelopes, prev = [], GENESIS_PREV
    for n, x in enumerate([odd, odd_times, b], 1):
        env = build_envelope(gw, n, prev, 1_000 + n, [encode_batch(x), encode_batch(b)])
        envelopes.append(env)
        prev = envelope_hash(env)
    path = tmp_path / "odd.cborseq"
    write_export_file(path, gw, history, envelopes, since_ns=None, until_ns=None, created_ns=5_000)
    report = verify_export(path, gw.did)
    assert not report.ok
    assert report.problems == [
        "envelope 1 batch 1: device ev-1: a malformed batch (TypeError)",
        "envelope 2: signed, but a batch is malformed (TypeError)",
    ]
