"""Deterministic CBOR encoding of a :class:`~gateway.model.Batch`.

These bytes are what an envelope signs and what sinks decode, so the same committed batch always
replays to the same points. Layout (CBOR map, text keys, canonical encoding)::

    {"k": [device_id, part, ...],            # source key
     "rx": received_ns, "pr": priority, "kind": device kind,
     "r": [[metric, value|null, unit, t_ns, precision|null, absent|null, seq|null, tq, status, alert], ...],
     "w": [[metric, unit, start_ns, period_ns, tq, samples as int32 little-endian bytes], ...]}
"""

from __future__ import annotations

from typing import Any

import cbor2
import numpy as np

from gateway.errors import PayloadError
from gateway.model import AbsentReason, Batch, Priority, Reading, SourceKey, TimeQuality, Waveform

_LE_I32 = np.dtype("<i4")


def _reading_row(r: Reading) -> list[Any]:
    return [
        r.metric,
        r.value,
        r.unit,
        r.device_time_ns,
        r.precision,
        None if r.absent is None else r.absent.value,
        r.seq,
        int(r.time_quality),
        r.status,
        r.alert,
    ]


def batch_to_obj(b: Batch) -> dict[str, Any]:
    return {
        "k": [b.key.device_id, *b.key.parts],
        "rx": b.received_ns,
        "pr": int(b.priority),
        "kind": b.kind,
        "r": [_reading_row(r) for r in b.readings],
        "w": [
            [
                w.metric,
                w.unit,
                w.start_ns,
                w.period_ns,
                int(w.time_quality),
                w.samples.astype(_LE_I32).tobytes(),
            ]
            for w in b.waveforms
        ],
    }


def encode_batch(b: Batch) -> bytes:
    return cbor2.dumps(batch_to_obj(b), canonical=True)


def batch_from_obj(o: Any) -> Batch:
    try:
        key = SourceKey(o["k"][0], tuple(o["k"][1:]))
        readings = tuple(
            Reading(
                metric=m,
                value=None if v is None else float(v),
                unit=u,
                device_time_ns=t,
                precision=p,
                absent=None if a is None else AbsentReason(a),
                seq=s,
                time_quality=TimeQuality(tq),
                status=st,
                alert=al,
            )
            for m, v, u, t, p, a, s, tq, st, al in o["r"]
        )
        waveforms = tuple(
            Waveform(m, u, t0, per, np.frombuffer(raw, dtype=_LE_I32).astype(np.int32), TimeQuality(tq))
            for m, u, t0, per, tq, raw in o["w"]
        )
        return Batch(key, o["rx"], readings, waveforms, Priority(o["pr"]), o["kind"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise PayloadError(f"not an encoded batch: {e}") from e


def decode_batch(data: bytes) -> Batch:
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError) as e:
        raise PayloadError(f"malformed batch CBOR: {e}") from e
    return batch_from_obj(obj)
