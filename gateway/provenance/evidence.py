"""Device signatures carried in envelopes: check a batch against the message its device signed.

A 5G device may sign its SenML pack (COSE_Sign1 with its own Ed25519 key, docs/mqtt.md). The gateway
verifies that signature at ingest, and keeps the signed message with the batch it decoded from it
(``Batch.evidence``, batch layout 3), inside the envelope the gateway signs. A third party holding an
export can then check, without the device registry and without trusting the gateway's decoding:

1. the message is a well-formed COSE_Sign1 whose ``kid`` is a did:key (the device's key; that this key
   was the one registered for the device is what the gateway's own signature vouches for);
2. its signature verifies under that key, with the device's readings topic as external AAD — so it was
   signed for *this* device id;
3. decoding its SenML payload the way the gateway does (with the batch's receive time, which relative
   SenML times refer to) gives exactly the batch: the same source key (boot, seq), readings, waveforms and
   spectra — metric, value, unit, time, precision, absent reason, sequence, status and alert flag. Only the
   time-quality flags may differ (they depend on the gateway clock's state at ingest).

A gateway that altered, dropped or added a reading of a signed frame fails step 3 even though its own
envelope signature is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.senml.codec import SENML_CBOR
from drivers.senml.cose import external_aad, parse_sign1
from drivers.senml.profile import decode_frame
from gateway.errors import GatewayError, PayloadError
from gateway.model import Batch
from gateway.mqtt.topics import readings_topic
from gateway.provenance.cose import sig_structure
from gateway.provenance.didkey import public_from_did_key

_NO_LIMIT_S = 10.0**9
"""Re-decoding must not refuse a frame for being ahead of a clock: the gateway already accepted it."""


class EvidenceError(GatewayError):
    """A batch does not match the message its device signed (the text says how)."""


def check_evidence(b: Batch) -> str:
    """Check ``b`` against ``b.evidence`` (steps 1–3 above); the device's did:key when all hold, else raises
    :class:`EvidenceError` (also for a batch whose other fields are not what the gateway writes: an export
    is untrusted input)."""
    try:
        return _check(b)
    except EvidenceError:
        raise
    except (TypeError, ValueError, OverflowError, AttributeError, IndexError, KeyError) as e:
        raise EvidenceError(f"device {str(b.device_id)[:64]}: a malformed batch ({type(e).__name__})") from None


def _check(b: Batch) -> str:
    device = b.device_id
    try:
        sign1 = parse_sign1(b.evidence)
    except PayloadError as e:
        raise EvidenceError(f"device {device}: the carried message is not a COSE_Sign1 ({e})") from None
    did = sign1.kid.decode("utf-8", "replace")
    try:
        key = Ed25519PublicKey.from_public_bytes(public_from_did_key(did))
    except (GatewayError, ValueError) as e:
        raise EvidenceError(f"device {device}: kid {did[:60]!r} is not an Ed25519 did:key ({e})") from None
    try:
        key.verify(sign1.signature, sig_structure(sign1.protected, sign1.payload, external_aad(readings_topic(device))))
    except InvalidSignature:
        raise EvidenceError(
            f"device {device}: the device signature does not verify (altered, or another device's)"
        ) from None
    try:
        frame = decode_frame(
            sign1.payload, SENML_CBOR, device, b.received_ns, gateway_synced=False, max_ahead_s=_NO_LIMIT_S
        )
    except PayloadError as e:
        raise EvidenceError(f"device {device}: the signed payload does not decode ({e})") from None
    if (frame.boot, frame.seq) != tuple(b.key.parts):
        raise EvidenceError(
            f"device {device}: the signed frame is boot {frame.boot!r} seq {frame.seq!r}, not the batch's source key"
            f" {'/'.join(map(str, b.key.parts))}"
        )
    _same("reading", [_r(r) for r in b.readings], [_r(r) for r in frame.readings], device)
    _same("waveform", [_w(w) for w in b.waveforms], [_w(w) for w in frame.waveforms], device)
    _same("spectrum", [_s(s) for s in b.spectra], [_s(s) for s in frame.spectra], device)
    return did


def _r(r: Any) -> tuple[Any, ...]:
    return (r.metric, r.value, r.unit, r.device_time_ns, r.precision, r.absent, r.seq, r.status, r.alert)


def _w(w: Any) -> tuple[Any, ...]:
    return (w.metric, w.unit, w.start_ns, w.period_ns, np.asarray(w.samples, dtype="<i4").tobytes())


def _s(s: Any) -> tuple[Any, ...]:
    values = np.asarray(s.values, dtype="<f4").tobytes()
    return (s.metric, s.unit, s.time_ns, float(s.axis_start), float(s.axis_step), s.axis_unit, values)


def _same(what: str, batch: Sequence[tuple[Any, ...]], signed: Sequence[tuple[Any, ...]], device: str) -> None:
    if list(batch) == list(signed):
        return
    if len(batch) != len(signed):
        raise EvidenceError(f"device {device}: the batch holds {len(batch)} {what}(s), the device signed {len(signed)}")
    i = next(i for i, (x, y) in enumerate(zip(batch, signed, strict=True)) if x != y)
    raise EvidenceError(f"device {device}: {what} {i + 1} ({batch[i][0]}) differs from what the device signed")
