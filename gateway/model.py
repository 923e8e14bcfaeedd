"""Core types: Reading, Waveform, Spectrum, Batch and the identities they carry.

A ``Batch`` is the readings of one source event (one notification, one MQTT message, one RACP
transfer, one ingest record). It is the unit that is deduplicated (by its ``SourceKey``),
committed and acknowledged. One signed envelope covers one group commit of many batches.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from gateway.errors import DeviceIdError, PayloadError

DEVICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_KEY_PART_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if canonical, else raise :class:`DeviceIdError`."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise DeviceIdError(f"device id {device_id!r} is not canonical: lowercase [a-z0-9][a-z0-9-]{{0,63}}")
    return device_id


class AbsentReason(enum.StrEnum):
    """Why a reading has no value (IEEE 11073 special values, FHIR dataAbsentReason)."""

    NAN = "nan"  # not a number
    NRES = "nres"  # not at this resolution
    POS_INF = "+inf"
    NEG_INF = "-inf"
    RESERVED = "reserved"


_ABSENT_VALUES = frozenset(a.value for a in AbsentReason)
_CHECKED_IDS: set[str] = set()
"""Device ids already found canonical (validation is on the hot path of every batch)."""


class TimeQuality(enum.IntFlag):
    """How far a point's time can be trusted. 0 means device time corrected on a synchronised clock."""

    GOOD = 0
    GATEWAY_UNSYNCED = 1
    """The gateway's own clock was not synchronised (no RTC, no NTP yet)."""
    DEVICE_UNCORRECTED = 2
    """The device's time stamp was used as is: no device clock reading to correct its skew."""
    RECEIVE_TIME = 4
    """The device gave no time: the gateway's receive time stands in for it."""


class Priority(enum.IntEnum):
    """Forwarding lane. URGENT batches are forwarded ahead of bulk backlog (informational only)."""

    BULK = 0
    URGENT = 1


@dataclass(frozen=True, slots=True)
class SourceKey:
    """Identity of one source event, stable across redelivery.

    ``parts`` are the source's own counters, e.g. ``(boot_id, frame_seq)`` for a 5G device or
    ``(record_seq,)`` for a glucose meter.
    """

    device_id: str
    parts: tuple[str | int, ...]

    def __post_init__(self) -> None:
        if type(self.device_id) is not str or self.device_id not in _CHECKED_IDS:
            check_device_id(self.device_id)
            if len(_CHECKED_IDS) < 100_000:
                _CHECKED_IDS.add(self.device_id)
        if not self.parts:
            raise PayloadError("source key needs at least one part after the device id")
        for p in self.parts:
            if type(p) is int:
                continue
            if isinstance(p, bool) or not isinstance(p, int | str):
                raise PayloadError(f"source key part {p!r} must be a string or integer")
            if isinstance(p, str) and not _KEY_PART_RE.fullmatch(p):
                raise PayloadError(f"source key part {p!r} must match [A-Za-z0-9._:-]{{1,128}}")

    @classmethod
    def trusted(cls, device_id: str, parts: tuple[str | int, ...]) -> SourceKey:
        """Build without validation: only for keys decoded from the gateway's own signed envelopes."""
        key = object.__new__(cls)
        object.__setattr__(key, "device_id", device_id)
        object.__setattr__(key, "parts", parts)
        return key

    def text(self) -> str:
        """Canonical text form, unique per key: ``device/part/part``."""
        return "/".join([self.device_id, *(str(p) for p in self.parts)])


class Reading(NamedTuple):
    """One scalar measurement, normalised to an MDC-coded metric and a UCUM unit.

    A named tuple, not a dataclass: readings are the most numerous objects on the hot path, and a
    tuple is built, compared and CBOR-encoded several times faster. Sources validate what they
    build with :func:`check_reading`; decoding our own signed envelopes does not re-validate.
    """

    metric: str
    value: float | None
    unit: str
    device_time_ns: int
    """Corrected device time (ns since the Unix epoch): the stored point's time."""
    precision: int | None = None
    """Decimal digits the device reported (kept from the SFLOAT/FLOAT exponent)."""
    absent: str | None = None
    """An :class:`AbsentReason` value when the device sent a special value instead of a number."""
    seq: int | None = None
    """The device's own sequence number for this reading, when it has one."""
    time_quality: int = 0
    """:class:`TimeQuality` flags."""
    status: int = 0
    """Device status bits, profile specific."""
    alert: bool = False
    """The device itself flagged this reading (e.g. a CGM hypo annunciation)."""


def check_reading(r: Reading) -> Reading:
    """The invariants of a reading: exactly one of value and absent reason; a known absent reason."""
    if (r.value is None) == (r.absent is None):
        raise PayloadError(f"reading {r.metric!r}: exactly one of value and absent reason must be set")
    if r.absent is not None and r.absent not in _ABSENT_VALUES:
        raise PayloadError(f"reading {r.metric!r}: unknown absent reason {r.absent!r}")
    return r


@dataclass(frozen=True, slots=True, eq=False)
class Waveform:
    """A sampled signal (FHIR SampledData shape): int32 samples in the metric's unit (µV for ECG)."""

    metric: str
    unit: str
    start_ns: int
    period_ns: int
    samples: npt.NDArray[np.int32]
    time_quality: int = 0
    """:class:`TimeQuality` flags."""

    def __post_init__(self) -> None:
        if self.period_ns <= 0:
            raise PayloadError(f"waveform {self.metric!r}: period must be > 0 ns")
        if self.samples.dtype != np.int32 or self.samples.ndim != 1:
            raise PayloadError(f"waveform {self.metric!r}: samples must be a 1-D int32 array")

    def times_ns(self) -> npt.NDArray[np.int64]:
        return self.start_ns + np.arange(self.samples.size, dtype=np.int64) * self.period_ns

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Waveform):
            return NotImplemented
        return (self.metric, self.unit, self.start_ns, self.period_ns, self.time_quality) == (
            other.metric,
            other.unit,
            other.start_ns,
            other.period_ns,
            other.time_quality,
        ) and np.array_equal(self.samples, other.samples)

    __hash__ = None  # type: ignore[assignment]


SPECTRUM_AXIS_UNITS: frozenset[str] = frozenset({"Hz"})
"""UCUM units a spectrum's axis may have (the line protocol writes a Hz axis as the integer tag ``hz``)."""


@dataclass(frozen=True, slots=True, eq=False)
class Spectrum:
    """One measured spectrum: float32 values on a regular axis (e.g. S21 magnitude in dB over frequency).

    Bin ``k`` lies at ``axis_start + k * axis_step`` (in ``axis_unit``); every bin shares ``time_ns``.
    """

    metric: str
    unit: str
    time_ns: int
    axis_start: float
    axis_step: float
    axis_unit: str
    values: npt.NDArray[np.float32]
    time_quality: int = 0
    """:class:`TimeQuality` flags."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.axis_start) and math.isfinite(self.axis_step) and self.axis_step > 0):
            raise PayloadError(f"spectrum {self.metric!r}: axis start must be finite and axis step > 0")
        if self.axis_unit not in SPECTRUM_AXIS_UNITS:
            raise PayloadError(f"spectrum {self.metric!r}: axis unit {self.axis_unit!r} is not one of Hz")
        if self.values.dtype != np.float32 or self.values.ndim != 1:
            raise PayloadError(f"spectrum {self.metric!r}: values must be a 1-D float32 array")
        if not np.isfinite(self.values).all():
            raise PayloadError(f"spectrum {self.metric!r}: values must be finite")

    def axis(self) -> npt.NDArray[np.float64]:
        """The axis value of every bin."""
        return self.axis_start + np.arange(self.values.size, dtype=np.float64) * self.axis_step

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spectrum):
            return NotImplemented
        return (
            self.metric,
            self.unit,
            self.time_ns,
            self.axis_start,
            self.axis_step,
            self.axis_unit,
            self.time_quality,
        ) == (
            other.metric,
            other.unit,
            other.time_ns,
            other.axis_start,
            other.axis_step,
            other.axis_unit,
            other.time_quality,
        ) and np.array_equal(self.values, other.values)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Batch:
    """The readings of one source event: deduplicated, committed and acknowledged as a unit."""

    key: SourceKey
    received_ns: int
    readings: tuple[Reading, ...] = ()
    waveforms: tuple[Waveform, ...] = ()
    priority: Priority = Priority.BULK
    kind: str = field(default="")
    """Device kind/profile the batch came from (e.g. ``heart_rate``, ``cgm``)."""
    spectra: tuple[Spectrum, ...] = ()
    """Spectra of the event (research sensors); each bin is one point in a time-series store."""
    evidence: bytes = field(default=b"", repr=False)
    """The device's own signed message this batch was decoded from (a tagged COSE_Sign1 as the device sent
    it, verified at ingest; docs/provenance.md "Device signatures"), empty when the device did not sign.
    Carried into the envelope so that a third party can check the readings against the device's key."""
    n_points: int = field(init=False, compare=False, repr=False)
    """Points this batch becomes in a time-series store (readings + waveform samples + spectrum bins)."""

    def __post_init__(self) -> None:
        samples = sum(int(w.samples.size) for w in self.waveforms) if self.waveforms else 0
        if self.spectra:
            samples += sum(int(s.values.size) for s in self.spectra)
        object.__setattr__(self, "n_points", len(self.readings) + samples)

    @property
    def device_id(self) -> str:
        return self.key.device_id

    @property
    def n_readings(self) -> int:
        return len(self.readings)

    @property
    def n_samples(self) -> int:
        """Waveform samples + spectrum bins."""
        return self.n_points - len(self.readings)
