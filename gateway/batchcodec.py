"""Deterministic CBOR encoding of a :class:`~gateway.model.Batch`.

These bytes are what an envelope signs and what sinks decode, so the same committed batch always
replays to the same points. Layout: one CBOR array (no maps, so the encoding is deterministic by
construction; numbers use the shortest exact form, RFC 8949 §4.2)::

    [1,                                      # layout version
     [device_id, part, ...],                 # source key
     received_ns, priority, kind,
     [[metric, value|null, unit, t_ns, precision|null, absent|null, seq|null, tq, status, alert], ...],
     [[metric, unit, start_ns, period_ns, tq, samples as int32 little-endian bytes], ...]]
"""

from __future__ import annotations

from typing import Any

import cbor2
import numpy as np

from gateway.errors import PayloadError
from gateway.model import Batch, Priority, Reading, SourceKey, Waveform

LAYOUT_VERSION = 1
_LE_I32 = np.dtype("<i4")


def batch_to_obj(b: Batch) -> list[Any]:
    return [
        LAYOUT_VERSION,
        [b.key.device_id, *b.key.parts],
        b.received_ns,
        int(b.priority),
        b.kind,
        b.readings,  # named tuples encode as CBOR arrays
        [
            [w.metric, w.unit, w.start_ns, w.period_ns, int(w.time_quality), w.samples.astype(_LE_I32).tobytes()]
            for w in b.waveforms
        ],
    ]


def encode_batch(b: Batch) -> bytes:
    return cbor2.dumps(batch_to_obj(b), canonical=True)


_make_reading = Reading._make


def batch_from_obj(o: Any) -> Batch:
    """Rebuild a batch from its decoded layout (trusted: it comes from a signed envelope)."""
    try:
        version, key, received_ns, priority, kind, rows, waves = o
        if version != LAYOUT_VERSION:
            raise PayloadError(f"batch layout version {version!r} is not {LAYOUT_VERSION}")
        readings = tuple(map(_make_reading, rows))  # a row of the wrong length raises TypeError
        waveforms = tuple(
            Waveform(m, u, t0, per, np.frombuffer(raw, dtype=_LE_I32).astype(np.int32), tq)
            for m, u, t0, per, tq, raw in waves
        )
        skey = SourceKey.trusted(key[0], tuple(key[1:]))
        return Batch(skey, received_ns, readings, waveforms, Priority(priority), kind)
    except PayloadError:
        raise
    except (TypeError, ValueError, IndexError) as e:
        raise PayloadError(f"not an encoded batch: {e}") from e


def decode_batch(data: bytes) -> Batch:
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as e:
        raise PayloadError(f"malformed batch CBOR: {e}") from e
    return batch_from_obj(obj)
