"""InfluxDB line protocol for committed batches (the point schema of ``docs/schema.md``).

One point per reading and one point per waveform sample::

    <metric>,device=<device_id>,unit=<ucum> value=72.0,precision=0i,seq=5i 1700000000000000000
    <metric>,device=<device_id>,unit=<ucum> absent="nres",status=4i,alert=true,tq=2i 1700000000000000000
    ecg,device=<device_id>,unit=uV value=-153i 1700000000004000000

- Tags are sorted by key (``device`` < ``unit``). Measurement names escape comma and space; tag keys
  and values escape comma, equals sign and space. Names holding a backslash or a control character
  cannot be written unambiguously and raise :class:`~gateway.errors.PayloadError`.
- Reading fields, in this order and only when present: ``value`` (float, ``repr`` so it round-trips;
  non-finite values raise :class:`~gateway.errors.PayloadError`: use an absent reason instead),
  ``absent`` (string, escaped ``\\`` and ``"``), ``precision``, ``seq``, ``status`` (non-zero only),
  ``alert`` (``true`` only), ``tq`` (time-quality flags, non-zero only). Time = ``device_time_ns``.
- Waveform samples: field ``value=<int>i`` plus ``tq=<int>i`` when non-zero; time of sample ``k`` =
  ``start_ns + k * period_ns``. Long waveforms are formatted column-wise with numpy (no Python
  object per sample); short ones with a single ``join`` — both give byte-identical output.
- Spectrum bins (research sensors): one point per bin, measurement = metric, tags ``device``, ``hz``
  (the bin's frequency, an integer: ``round(axis_start + k * axis_step)``) and ``unit``, field
  ``value`` (float: the shortest decimal that gives back the stored float32) plus ``tq=<int>i`` when
  non-zero, all at the spectrum's time::

    nig_s21_magnitude,device=<device_id>,hz=1000000000,unit=dB value=-3.5 1700000000000000000

- Timestamps are nanoseconds: write with ``precision=ns``.

Chunk layout: :func:`encode_batches` returns one ``bytes`` chunk per batch, in input order. A chunk is
the batch's lines joined by ``b"\\n"`` **without** a trailing newline (``b""`` for a batch without
points), so a request body is ``b"\\n".join`` of the non-empty chunks. The same batch always gives
the same bytes (replays are deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import PayloadError
from gateway.model import Batch, Reading, Spectrum, Waveform

__all__ = ["count_points", "encode_batch", "encode_batches", "escape_measurement", "escape_tag"]

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_TAG_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})

_FAST_MIN_SAMPLES = 1024
"""Below this many samples the plain ``join`` is faster than the numpy formatter (fixed overhead)."""
_BLOCK_SAMPLES = 65_536
"""Long waveforms are formatted in blocks so the byte matrix stays cache sized."""
_NS_PER_S = 1_000_000_000


def _check_name(kind: str, name: str) -> None:
    if not name:
        raise PayloadError(f"line protocol: empty {kind}")
    if "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise PayloadError(f"line protocol: {kind} {name!r} holds a backslash or control character")


def escape_measurement(name: str) -> str:
    """Escape a measurement name (comma, space)."""
    _check_name("measurement", name)
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_tag(text: str) -> str:
    """Escape a tag key or value (comma, equals sign, space)."""
    _check_name("tag key or value", text)
    return text.translate(_TAG_ESCAPES)


_PREFIXES: dict[tuple[str, str, str], str] = {}
_MAX_PREFIXES = 50_000


def _series_prefix(metric: str, device: str, unit: str) -> str:
    """``measurement,device=…,unit=…`` (tags sorted by key), cached: series are few, points many."""
    key = (metric, device, unit)
    p = _PREFIXES.get(key)
    if p is None:
        p = f"{escape_measurement(metric)},device={escape_tag(device)},unit={escape_tag(unit)}"
        if len(_PREFIXES) >= _MAX_PREFIXES:
            _PREFIXES.clear()
        _PREFIXES[key] = p
    return p


def _reading_line(prefix: str, r: Reading) -> str:
    metric, value, _unit, t, precision, absent, seq, tq, status, alert = r
    fields: list[str] = []
    if value is not None:
        v = float(value)
        if not math.isfinite(v):
            raise PayloadError(f"reading {metric!r}: value {v!r} is not finite (use an absent reason)")
        fields.append(f"value={v!r}")
    if absent is not None:
        fields.append(f'absent="{str(absent).translate(_STRING_ESCAPES)}"')
    if precision is not None:
        fields.append(f"precision={int(precision)}i")
    if seq is not None:
        fields.append(f"seq={int(seq)}i")
    if status:
        fields.append(f"status={int(status)}i")
    if alert:
        fields.append("alert=true")
    if tq:
        fields.append(f"tq={int(tq)}i")
    return f"{prefix} {','.join(fields)} {int(t)}"


def _waveform_join(prefix: str, suffix: str, w: Waveform) -> bytes:
    """Reference formatter: one ``join`` over the samples and exact Python-int times."""
    n = int(w.samples.size)
    head = f"{prefix} value="
    tail = f"{suffix} "
    times = range(w.start_ns, w.start_ns + n * w.period_ns, w.period_ns)
    return "\n".join([f"{head}{s}{tail}{t}" for s, t in zip(w.samples.tolist(), times, strict=True)]).encode()


def _put_digits(
    out: npt.NDArray[np.uint8], last_row: int, q: npt.NDArray[np.unsignedinteger[Any]], n_digits: int
) -> None:
    """Write ``n_digits`` decimal digits of ``q`` (zero padded) into rows ``last_row``, ``last_row-1`` …"""
    for k in range(n_digits):
        q2 = q // 10
        d = (q - q2 * 10).astype(np.uint8)
        d += 48
        out[last_row - k] = d
        q = q2


def _waveform_numpy(prefix: str, suffix: str, w: Waveform) -> bytes | None:
    """Column-wise numpy formatter; ``None`` when the waveform falls outside its fast path.

    Builds an ``(line_length, n)`` byte matrix (one column per line), blanks unused digit cells of the
    variable-width sample field with NUL, transposes and drops the NULs. Times must all have the same
    number of digits and be ≥ 1 s after the epoch (always true for real data).
    """
    n = int(w.samples.size)
    t_first = w.start_ns
    t_last = w.start_ns + (n - 1) * w.period_ns
    if t_first < _NS_PER_S or t_last > np.iinfo(np.int64).max or len(str(t_first)) != len(str(t_last)):
        return None
    head = f"{prefix} value=".encode()
    tail = f"{suffix} ".encode()
    if b"\0" in head or b"\0" in tail:
        return None
    wt = len(str(t_last))

    s = w.samples
    neg = s < 0
    any_neg = bool(neg.any())
    a = np.abs(s.astype(np.int64)).astype(np.uint32)
    nds = len(str(int(a.max())))
    ws = nds + any_neg

    hl, tl = len(head), len(tail)
    line_len = hl + ws + tl + wt + 1
    out = np.empty((line_len, n), dtype=np.uint8)
    out[:hl] = np.frombuffer(head, dtype=np.uint8)[:, None]

    # Sample field: right aligned, leading cells NUL.
    last = hl + ws - 1
    q = a
    for k in range(nds):
        q2 = q // 10
        d = (q - q2 * 10).astype(np.uint8)
        d += 48
        if k > 0:
            d *= q != 0
        out[last - k] = d
        q = q2
    if any_neg:
        out[hl] = 0
        rows = np.flatnonzero(neg)
        an = a[rows]
        nd = np.ones(rows.size, dtype=np.intp)
        for k in range(1, nds):
            nd += an >= 10**k
        out[last - nd, rows] = 45  # "-"

    c = hl + ws
    out[c : c + tl] = np.frombuffer(tail, dtype=np.uint8)[:, None]
    c += tl

    # Time field: fixed width; split into seconds and nanoseconds so the digit loops run on uint32.
    times = w.times_ns().view(np.uint64)
    hi = times // np.uint64(_NS_PER_S)
    lo = (times - hi * np.uint64(_NS_PER_S)).astype(np.uint32)
    last = c + wt - 1
    _put_digits(out, last, lo, 9)
    _put_digits(out, last - 9, hi.astype(np.uint32) if t_last < _NS_PER_S << 32 else hi, wt - 9)
    out[-1] = 10  # "\n"

    flat = np.ascontiguousarray(out.T).reshape(-1)
    if ws > 1:
        flat = flat[flat != 0]
    return flat.tobytes()[:-1]


def _waveform_lines(prefix: str, w: Waveform) -> bytes:
    tq = int(w.time_quality)
    suffix = f"i,tq={tq}i" if tq else "i"
    n = int(w.samples.size)
    if n < _FAST_MIN_SAMPLES:
        return _waveform_join(prefix, suffix, w)
    if n > _BLOCK_SAMPLES:
        blocks = [
            Waveform(
                w.metric,
                w.unit,
                w.start_ns + off * w.period_ns,
                w.period_ns,
                w.samples[off : off + _BLOCK_SAMPLES],
                w.time_quality,
            )
            for off in range(0, n, _BLOCK_SAMPLES)
        ]
        return b"\n".join([_waveform_lines(prefix, b) for b in blocks])
    fast = _waveform_numpy(prefix, suffix, w)
    return fast if fast is not None else _waveform_join(prefix, suffix, w)


def _spectrum_lines(device: str, s: Spectrum) -> bytes:
    if s.axis_unit != "Hz":  # the model admits only Hz axes today
        raise PayloadError(f"spectrum {s.metric!r}: no line-protocol tag for axis unit {s.axis_unit!r}")
    head = f"{escape_measurement(s.metric)},device={escape_tag(device)},hz="
    tail = f",unit={escape_tag(s.unit)} value="
    tq = int(s.time_quality)
    end = f",tq={tq}i {int(s.time_ns)}" if tq else f" {int(s.time_ns)}"
    hz = np.rint(s.axis()).astype(np.int64).tolist()
    values = [np.format_float_positional(v, unique=True, trim="0") for v in s.values]
    return "\n".join([f"{head}{f}{tail}{v}{end}" for f, v in zip(hz, values, strict=True)]).encode()


def encode_batch(batch: Batch) -> bytes:
    """The line-protocol chunk of one batch: lines joined by ``\\n``, no trailing newline."""
    device = batch.key.device_id
    parts: list[bytes] = []
    if batch.readings:
        parts.append("\n".join([_reading_line(_series_prefix(r[0], device, r[2]), r) for r in batch.readings]).encode())
    for w in batch.waveforms:
        if w.samples.size:
            parts.append(_waveform_lines(_series_prefix(w.metric, device, w.unit), w))
    for s in batch.spectra:
        if s.values.size:
            parts.append(_spectrum_lines(device, s))
    return b"\n".join(parts)


def encode_batches(batches: Sequence[Batch]) -> list[bytes]:
    """One chunk per batch, in order (see the module docstring for the layout).

    Raises :class:`~gateway.errors.PayloadError` when a batch cannot be written as line protocol
    (non-finite value, unwritable name).
    """
    return [encode_batch(b) for b in batches]


def count_points(chunk: bytes) -> int:
    """Number of points (lines) in a chunk or body built by this module."""
    return chunk.count(b"\n") + 1 if chunk else 0
