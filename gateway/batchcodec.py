"""Deterministic CBOR encoding of a :class:`~gateway.model.Batch`.

These bytes are what an envelope signs and what sinks decode, so the same committed batch always
replays to the same points. Layout: one CBOR array (no maps, so the encoding is deterministic by
construction; numbers use the shortest exact form, RFC 8949 §4.2)::

    [1,                                      # layout version
     [device_id, part, ...],                 # source key
     received_ns, priority, kind,
     [[metric, value|null, unit, t_ns, precision|null, absent|null, seq|null, tq, status, alert], ...],
     [[metric, unit, start_ns, period_ns, tq, samples as int32 little-endian bytes], ...]]

A batch with spectra is written in layout version 2: the same array with version 2 and one more
trailing element::

     [[metric, unit, t_ns, axis_start, axis_step, axis_unit, tq, values as float32 little-endian bytes], ...]

(``axis_start`` and ``axis_step`` always as floats). A batch without spectra is always version 1, byte
for byte as before spectra existed, so envelopes signed earlier still verify.

A batch decoded from a device-signed message (``Batch.evidence``) is written in layout version 3: version
2's array (its spectra possibly empty) with version 3 and one more trailing element, the device's tagged
COSE_Sign1 as bytes::

     evidence

The decoder reads all three.
"""

from __future__ import annotations

from typing import Any

import cbor2
import numpy as np

from gateway.errors import PayloadError
from gateway.model import Batch, Priority, Reading, SourceKey, Spectrum, Waveform

LAYOUT_VERSION = 1
"""Layout of a batch without spectra."""
LAYOUT_VERSION_SPECTRA = 2
"""Layout of a batch with spectra (version 1 plus a trailing array of spectra)."""
LAYOUT_VERSION_EVIDENCE = 3
"""Layout of a batch with the device's signed message (version 2 plus its bytes)."""
_LE_I32 = np.dtype("<i4")
_LE_F32 = np.dtype("<f4")


def batch_to_obj(b: Batch) -> list[Any]:
    version = LAYOUT_VERSION_EVIDENCE if b.evidence else LAYOUT_VERSION_SPECTRA if b.spectra else LAYOUT_VERSION
    obj: list[Any] = [
        version,
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
    if version >= LAYOUT_VERSION_SPECTRA:
        obj.append(
            [
                [
                    s.metric,
                    s.unit,
                    s.time_ns,
                    float(s.axis_start),
                    float(s.axis_step),
                    s.axis_unit,
                    int(s.time_quality),
                    s.values.astype(_LE_F32).tobytes(),
                ]
                for s in b.spectra
            ]
        )
    if version == LAYOUT_VERSION_EVIDENCE:
        obj.append(bytes(b.evidence))
    return obj


def encode_batch(b: Batch) -> bytes:
    return cbor2.dumps(batch_to_obj(b), canonical=True)


_make_reading = Reading._make


def _spectrum(row: Any) -> Spectrum:
    m, u, t, start, step, axis_unit, tq, raw = row
    if not isinstance(raw, bytes) or len(raw) % 4:
        raise PayloadError("spectrum values must be whole float32 values")
    return Spectrum(m, u, t, start, step, axis_unit, np.frombuffer(raw, dtype=_LE_F32).astype(np.float32), tq)


def batch_from_obj(o: Any) -> Batch:
    """Rebuild a batch from its decoded layout (trusted: it comes from a signed envelope)."""
    try:
        version = o[0]
        evidence = b""
        if version == LAYOUT_VERSION:
            _, key, received_ns, priority, kind, rows, waves = o
            spectra: tuple[Spectrum, ...] = ()
        elif version == LAYOUT_VERSION_SPECTRA:
            _, key, received_ns, priority, kind, rows, waves, spec_rows = o
            spectra = tuple(map(_spectrum, spec_rows))
        elif version == LAYOUT_VERSION_EVIDENCE:
            _, key, received_ns, priority, kind, rows, waves, spec_rows, evidence = o
            spectra = tuple(map(_spectrum, spec_rows))
            if not isinstance(evidence, bytes) or not evidence:
                raise PayloadError("batch evidence must be the device's signed message (bytes)")
        else:
            raise PayloadError(f"batch layout version {version!r} is not 1, 2 or 3")
        readings = tuple(map(_make_reading, rows))  # a row of the wrong length raises TypeError
        waveforms = tuple(
            Waveform(m, u, t0, per, np.frombuffer(raw, dtype=_LE_I32).astype(np.int32), tq)
            for m, u, t0, per, tq, raw in waves
        )
        skey = SourceKey.trusted(key[0], tuple(key[1:]))
        return Batch(skey, received_ns, readings, waveforms, Priority(priority), kind, spectra, evidence)
    except PayloadError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise PayloadError(f"not an encoded batch: {e}") from e


def decode_batch(data: bytes) -> Batch:
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as e:
        raise PayloadError(f"malformed batch CBOR: {e}") from e
    return batch_from_obj(obj)
