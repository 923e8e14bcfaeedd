"""The gateway's SenML profile for 5G/MQTT devices (docs/mqtt.md): resolved records → one :class:`Frame`.

A frame is one SenML pack: optional header records (``boot``, ``seq``, ``unacked``), readings named
by the local names of :data:`HANDLERS` (converted from SenML's SI units to the clinical UCUM unit of
the gateway's metric vocabulary) and at most one ECG group (protocols.md §10's compact profile).
Pure: no I/O, no asyncio. Every failure is a :class:`~gateway.errors.PayloadError` with one of
:data:`REASONS`; messages never carry a measured value.

Adding a record name is one entry in :data:`HANDLERS`: a callable ``(builder, record, index,
local_name) -> None``. The research glucose sensor's ``nig:s21`` (a binary S21 frame, ``vd``, decoded
by :mod:`drivers.nig.codec`) becomes two :class:`~gateway.model.Spectrum` s, and ``nig:estimate`` the
research-only reading ``glucose_research_estimate`` (docs/research-sensor.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NoReturn

import numpy as np
import numpy.typing as npt

from drivers.nig.codec import S21Frame
from drivers.senml.codec import ABSOLUTE_TIME_S, DECODE_REASONS, SenmlRecord, decode_pack, show
from gateway.errors import PayloadError
from gateway.model import Reading, Spectrum, TimeQuality, Waveform
from gateway.vocabulary import METRICS, check_unit

CANONICAL_PREFIX: Final = "urn:dev:ds4h:"
"""Base name ``urn:dev:ds4h:{device_id}:`` names the device; the rest of a record name is its local name."""

PROFILE_REASONS: Final = frozenset(
    {
        "malformed",
        "empty",
        "wrong_device",
        "bad_name",
        "unknown_name",
        "bad_unit",
        "wrong_type",
        "out_of_range",
        "bad_time",
        "duplicate_point",
        "too_large",
    }
)
REASONS: Final = DECODE_REASONS | PROFILE_REASONS
"""Every quarantine reason :func:`decode_frame` raises."""

MAX_SAMPLES: Final = 1_000_000
"""At most this many ECG samples per frame."""
MAX_FS_HZ: Final = 10_000.0
EARLIEST_NS: Final = 946_684_800 * 10**9
"""2000-01-01T00:00:00Z: earlier times are refused."""
_I64_MAX: Final = 2**63 - 1
_COUNTER_MAX: Final = 2**53
"""``seq`` and ``unacked`` arrive as SenML numbers (floats): integers are exact up to 2**53."""
_MAX_TIME_S: Final = _I64_MAX / 1e9
_BOOT_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_GOOD: Final = int(TimeQuality.GOOD)
_UNSYNCED: Final = int(TimeQuality.GATEWAY_UNSYNCED)
_UNCORRECTED: Final = int(TimeQuality.DEVICE_UNCORRECTED)


@dataclass(frozen=True, slots=True)
class Frame:
    """One MQTT message of a device, as the gateway's model sees it."""

    boot: str | None
    """Device boot id (record ``boot``); None for plain SenML devices."""
    seq: int | None
    """Frame sequence within the boot (record ``seq``)."""
    unacked: int | None
    """Record ``unacked``: the lowest ``seq`` of this boot the device still holds unacknowledged."""
    readings: tuple[Reading, ...]
    waveforms: tuple[Waveform, ...]
    spectra: tuple[Spectrum, ...] = ()


# --- entry points ------------------------------------------------------------------------------------
def decode_frame(
    payload: bytes,
    content_type: str | None,
    device_id: str,
    received_ns: int,
    *,
    gateway_synced: bool = True,
    max_ahead_s: float = 300.0,
    max_records: int = 10_000,
) -> Frame:
    """:func:`~drivers.senml.codec.decode_pack` + :func:`frame_from_records`."""
    records = decode_pack(payload, content_type, max_records=max_records)
    return frame_from_records(records, device_id, received_ns, gateway_synced=gateway_synced, max_ahead_s=max_ahead_s)


def read_header(payload: bytes, content_type: str | None) -> tuple[str, int, int | None] | None:
    """(boot, seq, unacked) of a frame the profile rejected, when they can still be read; else None.

    Lenient on purpose: a source uses it to settle a quarantined frame in the device's ack watermark, so
    a poison frame does not stall it. Values that break the header rules are ignored.
    """
    try:
        records = decode_pack(payload, content_type)
    except PayloadError:
        return None
    boot: str | None = None
    seq: int | None = None
    unacked: int | None = None
    for r in records:
        local = r.name.rsplit(":", 1)[-1]
        if local == "boot" and r.string is not None and _BOOT_RE.fullmatch(r.string):
            boot = r.string
        elif local in ("seq", "unacked") and r.value is not None:
            v = r.value
            if float(v).is_integer() and 0 <= v <= _COUNTER_MAX:
                if local == "seq":
                    seq = int(v)
                else:
                    unacked = int(v)
    return None if boot is None or seq is None else (boot, seq, unacked)


def frame_from_records(
    records: Sequence[SenmlRecord],
    device_id: str,
    received_ns: int,
    *,
    gateway_synced: bool = True,
    max_ahead_s: float = 300.0,
) -> Frame:
    """Map resolved records of one pack from ``device_id`` (a canonical id) onto a :class:`Frame`.

    ``received_ns`` is the gateway's receive time: relative SenML times count from it, and times
    more than ``max_ahead_s`` after it are refused (for absolute times only while ``gateway_synced``:
    an unsynchronised gateway clock cannot judge a device clock).
    """
    b = _Builder(device_id, received_ns, gateway_synced, max_ahead_s)
    prefix = f"{CANONICAL_PREFIX}{device_id}:"
    cut = len(prefix)
    handlers = HANDLERS
    for i, r in enumerate(records):
        name = r.name
        if name.startswith(prefix):
            local = name[cut:]
            handler = handlers.get(local)
            if handler is None:
                _unknown(name, local, i, device_id, prefixed=True)
        else:
            handler = handlers.get(name)
            if handler is None:
                _unknown(name, name, i, device_id, prefixed=False)
            local = name
        handler(b, r, i, local)
    return b.finish()


# --- the builder ------------------------------------------------------------------------------------
class _Builder:
    """The state of one frame while its records are read."""

    __slots__ = (
        "boot",
        "check_ahead",
        "device_id",
        "ecg",
        "last",
        "last_t",
        "max_ahead_ns",
        "max_ahead_s",
        "readings",
        "received_ns",
        "seq",
        "spectra",
        "spectrum_bins",
        "tq_absolute",
        "tq_relative",
        "unacked",
    )

    def __init__(self, device_id: str, received_ns: int, synced: bool, max_ahead_s: float) -> None:
        self.device_id = device_id
        self.received_ns = received_ns
        self.max_ahead_s = float(max_ahead_s)
        self.max_ahead_ns = received_ns + round(max_ahead_s * 1e9)
        self.check_ahead = synced
        unsynced = 0 if synced else _UNSYNCED
        self.tq_absolute = _UNCORRECTED | unsynced
        self.tq_relative = _GOOD | unsynced
        self.boot: str | None = None
        self.seq: int | None = None
        self.unacked: int | None = None
        self.readings: list[Reading] = []
        self.ecg: _Ecg | None = None
        self.spectra: list[Spectrum] = []
        self.spectrum_bins = 0
        self.last_t = math.nan  # the last time converted, and its result
        self.last = (0, 0)

    def time_ns(self, t: float, i: int, local: str) -> tuple[int, int]:
        """A resolved SenML time → (ns since the Unix epoch, time-quality flags).

        Absolute times are rounded to the microsecond: a float64 holds a current Unix time only to
        about 0.24 µs, and rounding to µs gives back exactly the decimal the device wrote (1710489600.123
        → …600123000000 ns, not …600122999808). Relative times keep the nanosecond.
        """
        if t == self.last_t:  # the records of a frame mostly share one time (bt)
            return self.last
        if t >= ABSOLUTE_TIME_S:
            if t > _MAX_TIME_S:
                raise _bad_time(i, local, "is beyond the year 2262 (ns since 1970 must fit 64 bits)")
            s = int(t)
            ns = s * 1_000_000_000 + round((t - s) * 1e6) * 1_000
            if self.check_ahead and ns > self.max_ahead_ns:
                raise _bad_time(i, local, f"is more than {self.max_ahead_s:g} s ahead of the gateway clock")
            tq = self.tq_absolute
        else:
            if t > self.max_ahead_s:
                raise _bad_time(i, local, f"is more than {self.max_ahead_s:g} s in the future (relative time)")
            if t < -_MAX_TIME_S:
                raise _bad_time(i, local, "is before 2000-01-01")
            s = math.floor(t)
            ns = self.received_ns + s * 1_000_000_000 + round((t - s) * 1e9)
            tq = self.tq_relative
        if ns < EARLIEST_NS:
            raise _bad_time(i, local, "is before 2000-01-01")
        if ns > _I64_MAX:
            raise _bad_time(i, local, "is beyond the year 2262 (ns since 1970 must fit 64 bits)")
        self.last_t = t
        self.last = (ns, tq)
        return ns, tq

    def finish(self) -> Frame:
        if (self.boot is None) != (self.seq is None):
            raise PayloadError("a frame carries 'boot' and 'seq' together or neither")
        if self.unacked is not None:
            if self.seq is None:
                raise PayloadError("'unacked' needs the 'boot' and 'seq' records")
            if self.unacked > self.seq:
                raise PayloadError(
                    "'unacked' (lowest unacknowledged seq the device holds) cannot exceed this frame's 'seq'"
                )
        readings = self.readings
        if len(readings) > 1 and len({(r[0], r[3]) for r in readings}) < len(readings):
            _duplicate(readings)
        waveforms = () if self.ecg is None else (self.ecg.waveform(),)
        spectra = self.spectra
        if len(spectra) > 1 and len({(s.metric, s.time_ns) for s in spectra}) < len(spectra):
            raise PayloadError(
                "two spectra of one metric share a time: distinct sweeps need distinct times (give each its t)",
                reason="duplicate_point",
            )
        if not readings and not waveforms and not spectra:
            raise PayloadError("the frame carries no reading, no waveform and no spectrum", reason="empty")
        return Frame(self.boot, self.seq, self.unacked, tuple(readings), waveforms, tuple(spectra))


def _duplicate(readings: list[Reading]) -> None:
    seen: set[tuple[str, int]] = set()
    for r in readings:
        key = (r.metric, r.device_time_ns)
        if key in seen:
            raise PayloadError(
                f"two {r.metric} readings share a time: distinct readings need distinct times (give each its t)",
                reason="duplicate_point",
            )
        seen.add(key)


# --- errors -----------------------------------------------------------------------------------------
def _at(i: int, local: str) -> str:
    return f"record {i} ({show(local)})"


def _bad_time(i: int, local: str, what: str) -> PayloadError:
    return PayloadError(f"{_at(i, local)}: time {what}", reason="bad_time")


_KIND_NAMES: Final = {"v": "a number (v)", "vs": "a string (vs)", "vb": "a boolean (vb)", "vd": "data (vd)"}


def _value_kind(r: SenmlRecord) -> str:
    if r.value is not None:
        return "v"
    if r.string is not None:
        return "vs"
    if r.boolean is not None:
        return "vb"
    if r.data is not None:
        return "vd"
    return "s"


def _need(r: SenmlRecord, i: int, local: str, kind: str) -> None:
    """The record's value must be of ``kind`` (``v``, ``vs`` or ``vd``), without a sum."""
    got = _value_kind(r)
    if got != kind or r.sum is not None:
        what = "a sum (s)" if got == "s" else _KIND_NAMES[got] + (" and a sum (s)" if r.sum is not None else "")
        raise PayloadError(f"{_at(i, local)} takes {_KIND_NAMES[kind]}, not {what}", reason="wrong_type")


def _no_unit(r: SenmlRecord, i: int, local: str) -> None:
    if r.unit is not None:
        raise PayloadError(
            f"{_at(i, local)} carries no unit, but has {show(r.unit)} (from u, or from a bu set on this or an "
            "earlier record: set bu only after the header records)",
            reason="bad_unit",
        )


def _counter(r: SenmlRecord, i: int, local: str) -> int:
    """An integer 0 … 2**53 (SenML numbers are floats: larger integers are not exact and would collide)."""
    _need(r, i, local, "v")
    _no_unit(r, i, local)
    v = r.value
    assert v is not None
    if not (v.is_integer() and 0 <= v <= _COUNTER_MAX):
        raise PayloadError(f"{_at(i, local)} must be an integer from 0 to 2**53", reason="wrong_type")
    return int(v)


def _unknown(name: str, local: str, i: int, device_id: str, *, prefixed: bool) -> NoReturn:
    """Raise the right error for a name no handler takes."""
    if prefixed:
        if not local:
            raise PayloadError(f"record {i}: name {show(name)} has no local name after the base name", "bad_name")
    elif name.startswith(CANONICAL_PREFIX):
        other, sep, _ = name[len(CANONICAL_PREFIX) :].partition(":")
        if not sep or other == device_id:
            raise PayloadError(
                f"record {i}: name {show(name)} must be {CANONICAL_PREFIX}{device_id}:<local name>", "bad_name"
            )
        raise PayloadError(
            f"record {i}: name {show(name)} belongs to device {show(other, 64)}, not to {device_id!r} "
            "that sent the message",
            reason="wrong_device",
        )
    elif (":" in name and name.partition(":")[0] not in _GROUPS) or "/" in name:
        raise PayloadError(
            f"record {i}: name {show(name)} is not in this gateway's naming: use the base name "
            f"{CANONICAL_PREFIX}{device_id}: (or bare local names without a base name)",
            reason="bad_name",
        )
    raise PayloadError(
        f"record {i}: unknown name {show(local)} (known: {', '.join(sorted(HANDLERS))}; see docs/mqtt.md)",
        reason="unknown_name",
    )


# --- header records ---------------------------------------------------------------------------------
def _boot(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    _need(r, i, local, "vs")
    _no_unit(r, i, local)
    if b.boot is not None:
        raise PayloadError(f"{_at(i, local)}: a frame has one 'boot' record")
    boot = r.string
    assert boot is not None
    if not _BOOT_RE.fullmatch(boot):
        raise PayloadError(f"{_at(i, local)}: the boot id must match [A-Za-z0-9._:-]{{1,64}}")
    b.boot = boot


def _seq(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    seq = _counter(r, i, local)
    if b.seq is not None:
        raise PayloadError(f"{_at(i, local)}: a frame has one 'seq' record")
    b.seq = seq


def _unacked(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    unacked = _counter(r, i, local)
    if b.unacked is not None:
        raise PayloadError(f"{_at(i, local)}: a frame has one 'unacked' record")
    b.unacked = unacked


# --- readings ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Conversion:
    """A SenML unit → the metric's clinical UCUM unit: ``value × factor + offset``, then range-checked."""

    unit: str
    """The clinical UCUM unit of the reading."""
    factor: float = 1.0
    offset: float = 0.0
    low: float = -math.inf
    high: float = math.inf
    """Plausibility limits (inclusive) in ``unit``: outside them a value is physically impossible."""


@dataclass(frozen=True, slots=True)
class Scalar:
    """A numeric reading record (``v``): one metric, the SenML units it accepts and their conversions."""

    metric: str
    units: Mapping[str, Conversion]
    refused: Mapping[str, str] = field(default_factory=dict)
    """SenML units refused with an explanation (e.g. ``%`` for SpO2)."""

    def __post_init__(self) -> None:  # the profile and the vocabulary must agree
        for conv in self.units.values():
            check_unit(METRICS[self.metric], conv.unit)

    def __call__(self, b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
        _need(r, i, local, "v")
        unit = r.unit
        conv = self.units.get(unit) if unit is not None else None
        if conv is None:
            raise self._bad_unit(unit, i, local)
        v = r.value
        assert v is not None
        # float(f"{x:.12g}") strips the float noise of a conversion (0.97 × 100 → 97.0, not 97.00000000000001)
        v = float(f"{v * conv.factor + conv.offset:.12g}") if conv.factor != 1.0 or conv.offset else v
        if not conv.low <= v <= conv.high:
            raise PayloadError(
                f"{_at(i, local)}: value outside the plausible range {conv.low:g} to {conv.high:g} {conv.unit}",
                reason="out_of_range",
            )
        ns, tq = b.time_ns(r.time, i, local)
        b.readings.append(Reading(self.metric, v, conv.unit, ns, None, None, None, tq))

    def _bad_unit(self, unit: str | None, i: int, local: str) -> PayloadError:
        accepted = ", ".join(repr(u) for u in self.units)
        if unit is None:
            return PayloadError(f"{_at(i, local)} has no unit (u or bu); accepted: {accepted}", reason="bad_unit")
        why = self.refused.get(unit)
        if why is not None:
            return PayloadError(f"{_at(i, local)}: unit {show(unit)} is refused: {why}", reason="bad_unit")
        return PayloadError(f"{_at(i, local)}: unit {show(unit)} is not accepted; use {accepted}", reason="bad_unit")


def _rate(low: float, high: float) -> dict[str, Conversion]:
    per_min = Conversion("/min", low=low, high=high)
    return {"1/s": Conversion("/min", 60.0, low=low, high=high), "beat/min": per_min, "1/min": per_min}


def _glucose() -> dict[str, Conversion]:
    return {
        "kg/m3": Conversion("mg/dL", 100.0, low=0.0, high=10_000.0),  # 1 kg/m3 = 1 g/L = 100 mg/dL
        "mmol/l": Conversion("mmol/L", low=0.0, high=555.0),
    }


_MMHG_PER_PA: Final = 1 / 133.322387415
_PRESSURE: Final = {"Pa": Conversion("mm[Hg]", _MMHG_PER_PA, low=0.0, high=500.0)}


# --- ECG (protocols.md §10 compact profile) ---------------------------------------------------------
ECG_LEADS: Final = {
    "MDC_ECG_ELEC_POTL": "ecg",
    "MDC_ECG_ELEC_POTL_I": "ecg_lead_i",
    "MDC_ECG_ELEC_POTL_II": "ecg_lead_ii",
}
"""``ecg:lead`` (MDC reference id) → waveform metric; without an ``ecg:lead`` record: ``ecg``."""
_UV_PER_V: Final = 1e6
_I32_MAX: Final = 2**31 - 1


class _Ecg:
    """The ECG group of one frame, collected record by record."""

    __slots__ = ("fs", "lead", "samples", "scale", "start_ns", "tq")

    def __init__(self) -> None:
        self.fs: float | None = None
        self.scale: int | None = None  # µV per sample step (ecg:scale); default 1
        self.lead: str | None = None
        self.samples: npt.NDArray[np.int32] | None = None
        self.start_ns = 0
        self.tq = 0

    def waveform(self) -> Waveform:
        if self.samples is None:
            raise PayloadError("the frame has ecg:* records but no samples (ecg:i16le or ecg:i24le)")
        if self.fs is None:
            raise PayloadError("the ECG samples need an ecg:fs record (sampling frequency, Hz)")
        period_ns = round(1e9 / self.fs)
        if self.start_ns + (self.samples.size - 1) * period_ns > _I64_MAX:
            raise PayloadError("the last ECG sample's time is beyond the year 2262", reason="bad_time")
        samples = self.samples
        k = self.scale or 1
        if k != 1:
            if samples.size and max(-int(samples.min()), int(samples.max())) * k > _I32_MAX:
                raise PayloadError(
                    "ECG samples × ecg:scale exceed the int32 range of stored µV samples", reason="out_of_range"
                )
            samples = samples * np.int32(k)
        metric = ECG_LEADS[self.lead] if self.lead is not None else "ecg"
        return Waveform(metric, "uV", self.start_ns, period_ns, samples, self.tq)


def _ecg(b: _Builder) -> _Ecg:
    if b.ecg is None:
        b.ecg = _Ecg()
    return b.ecg


def _ecg_fs(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    _need(r, i, local, "v")
    if r.unit != "Hz":
        raise PayloadError(f"{_at(i, local)} takes unit 'Hz', not {_unit_text(r.unit)}", reason="bad_unit")
    fs = r.value
    assert fs is not None
    if not 0.0 < fs <= MAX_FS_HZ:
        raise PayloadError(
            f"{_at(i, local)}: the sampling frequency must be > 0 and ≤ {MAX_FS_HZ:g} Hz", "out_of_range"
        )
    if 1e9 / fs > 2**62:
        raise PayloadError(f"{_at(i, local)}: the sampling frequency is too low", reason="out_of_range")
    ecg = _ecg(b)
    if ecg.fs is not None:
        raise PayloadError(f"{_at(i, local)}: a frame has one ECG group (one ecg:fs record)")
    ecg.fs = fs


def _ecg_scale(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    _need(r, i, local, "v")
    if r.unit != "V":
        raise PayloadError(f"{_at(i, local)} takes unit 'V', not {_unit_text(r.unit)}", reason="bad_unit")
    scale = r.value
    assert scale is not None
    k = round(scale * _UV_PER_V) if 0.0 < scale < 1e3 else 0
    if k < 1 or abs(scale - k / _UV_PER_V) > 1e-9 * scale:
        raise PayloadError(
            f"{_at(i, local)}: the scale must be a whole number of µV per sample step (1e-06 V, 2e-06 V, …) "
            "up to 1000 V",
            reason="out_of_range",
        )
    ecg = _ecg(b)
    if ecg.scale is not None:
        raise PayloadError(f"{_at(i, local)}: a frame has one ECG group (one ecg:scale record)")
    ecg.scale = k


def _ecg_lead(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    _need(r, i, local, "vs")
    _no_unit(r, i, local)
    lead = r.string
    assert lead is not None
    if lead not in ECG_LEADS:
        raise PayloadError(
            f"{_at(i, local)}: unknown ECG lead {show(lead, 40)}; use one of {', '.join(ECG_LEADS)}",
            reason="unknown_name",
        )
    ecg = _ecg(b)
    if ecg.lead is not None:
        raise PayloadError(f"{_at(i, local)}: a frame has one ECG group (one ecg:lead record)")
    ecg.lead = lead


def _unit_text(unit: str | None) -> str:
    return "none" if unit is None else show(unit)


@dataclass(frozen=True, slots=True)
class Samples:
    """An ECG samples record (``vd``): packed little-endian signed integers of ``width`` bytes, µV before scale."""

    width: int

    def __call__(self, b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
        _need(r, i, local, "vd")
        _no_unit(r, i, local)
        data = r.data
        assert data is not None
        if not data or len(data) % self.width:
            raise PayloadError(f"{_at(i, local)}: the data must be whole {self.width * 8}-bit samples (at least one)")
        n = len(data) // self.width
        if n > MAX_SAMPLES:
            raise PayloadError(f"{_at(i, local)}: {n} samples; at most {MAX_SAMPLES} per frame", reason="too_large")
        ecg = _ecg(b)
        if ecg.samples is not None:
            raise PayloadError(f"{_at(i, local)}: a frame has one ECG group (one ecg:i16le or ecg:i24le record)")
        ecg.start_ns, ecg.tq = b.time_ns(r.time, i, local)
        ecg.samples = decode_samples(data, self.width)


def decode_samples(data: bytes, width: int) -> npt.NDArray[np.int32]:
    """Little-endian signed int16 (``width`` 2) or int24 (``width`` 3) samples → int32 (no per-sample loop)."""
    if width == 2:
        return np.frombuffer(data, dtype="<i2").astype(np.int32)
    if width == 3:
        n = len(data) // 3
        wide = np.zeros((n, 4), dtype=np.uint8)
        wide[:, 1:] = np.frombuffer(data, dtype=np.uint8).reshape(n, 3)
        # the 3 bytes sit in the top of a little-endian int32; the arithmetic shift sign-extends them
        return (wide.view("<i4").reshape(n) >> 8).astype(np.int32, copy=False)
    raise ValueError(f"sample width {width} is not 2 or 3")


# --- research non-invasive glucose sensor (docs/research-sensor.md) --------------------------------
NIG_MAGNITUDE: Final = "nig_s21_magnitude"
NIG_PHASE: Final = "nig_s21_phase"
NIG_ESTIMATE: Final = "glucose_research_estimate"
"""Research-only: never one of the clinical ``glucose_*`` metrics, never in the priority rules."""


def _nig_s21(b: _Builder, r: SenmlRecord, i: int, local: str) -> None:
    """A binary S21 frame (``vd``) → two spectra (magnitude in dB, phase in degrees) over frequency (Hz)."""
    _need(r, i, local, "vd")
    _no_unit(r, i, local)
    data = r.data
    assert data is not None
    try:
        frame = S21Frame.from_bytes(data)
    except PayloadError as e:
        raise PayloadError(f"{_at(i, local)}: {e}", reason=e.reason) from None
    if b.spectrum_bins + 2 * frame.points > MAX_SAMPLES:
        raise PayloadError(f"{_at(i, local)}: more than {MAX_SAMPLES} spectrum bins per frame", reason="too_large")
    b.spectrum_bins += 2 * frame.points
    ns, tq = b.time_ns(r.time, i, local)
    start, step = float(frame.f_start_hz), float(frame.f_step_hz)
    mag = frame.magnitude_db().astype(np.float32)
    phase = frame.phase_deg().astype(np.float32)
    b.spectra.append(Spectrum(NIG_MAGNITUDE, "dB", ns, start, step, "Hz", mag, tq))
    b.spectra.append(Spectrum(NIG_PHASE, "deg", ns, start, step, "Hz", phase, tq))


# --- the name table ---------------------------------------------------------------------------------
Handler = Callable[[_Builder, SenmlRecord, int, str], None]

HANDLERS: Final[Mapping[str, Handler]] = {
    # frame header
    "boot": _boot,
    "seq": _seq,
    "unacked": _unacked,
    # readings
    "heart-rate": Scalar("heart_rate", _rate(0.0, 600.0)),
    "spo2": Scalar(
        "spo2",
        {"/": Conversion("%", 100.0, low=0.0, high=100.0)},
        refused={
            "%": "SenML '%' is deprecated and means a ratio 0..1; send the saturation with unit '/' (97 % = 0.97)"
        },
    ),
    "glucose": Scalar("glucose_capillary_whole_blood", _glucose()),
    "cgm-glucose": Scalar("glucose_isf", _glucose()),
    "bp-systolic": Scalar("bp_systolic", _PRESSURE),
    "bp-diastolic": Scalar("bp_diastolic", _PRESSURE),
    "bp-mean": Scalar("bp_mean", _PRESSURE),
    "rr-interval": Scalar("rr_interval", {"s": Conversion("ms", 1000.0, low=0.0, high=60_000.0)}),
    "battery": Scalar("battery_level", {"%EL": Conversion("%", low=0.0, high=100.0)}),
    "temperature": Scalar(
        "body_temperature",
        {"Cel": Conversion("Cel", low=0.0, high=100.0), "K": Conversion("Cel", offset=-273.15, low=0.0, high=100.0)},
    ),
    # ECG group
    "ecg:fs": _ecg_fs,
    "ecg:scale": _ecg_scale,
    "ecg:lead": _ecg_lead,
    "ecg:i16le": Samples(2),
    "ecg:i24le": Samples(3),
    # research non-invasive glucose sensor (research-only metrics)
    "nig:s21": _nig_s21,
    "nig:estimate": Scalar(
        NIG_ESTIMATE,
        {
            "mg/dL": Conversion("mg/dL", low=0.0, high=2000.0),
            "kg/m3": Conversion("mg/dL", 100.0, low=0.0, high=2000.0),
        },
    ),
}
"""Local record name → handler. Unknown names are refused (``unknown_name``)."""

_GROUPS: Final = frozenset(name.partition(":")[0] for name in HANDLERS if ":" in name)
"""Prefixes of grouped local names (``ecg``): ``ecg:x`` is an unknown local name, ``urn:x`` a foreign name."""
