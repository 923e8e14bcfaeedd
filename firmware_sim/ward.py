"""A ward of simulated patients that several simulated devices observe consistently.

A :class:`Ward` holds ``N`` patients and runs the vectorised physiology models of
:mod:`firmware_sim.models` for all of them on one simulated clock:

    simulated time (s since the ward started) = (host clock − t0) × speed

(``speed`` 1 by default; pass a ``clock`` such as :class:`ManualClock` to drive it by hand). Underneath
there is one :class:`~firmware_sim.models.beats.BeatTrain`, one
:class:`~firmware_sim.models.ecg.EcgSynth` per ECG sampling rate in use (over the patients that have an
ECG at that rate), one :class:`~firmware_sim.models.glucose.GlucoseSimulation` with daily routines,
one :class:`~firmware_sim.models.cgm_sensor.CgmSensor` per patient (vectorised), a glucose meter,
:class:`~firmware_sim.models.vitals.BloodPressure` and :class:`~firmware_sim.models.vitals.Spo2`.

Devices hold a :class:`PatientView` (``ward.patient(i)``) and pull from it incrementally: beats (heart
rate, RR intervals) and ECG samples through per-device cursors (:class:`BeatStream`,
:class:`EcgStream`, :class:`CgmStream`), glucose, meter spot checks, blood pressure and SpO2 "now".
The shared models are advanced to the latest time any device needs and keep a bounded history for
devices that lag behind; a device that falls further behind than that history skips ahead (counted in
the stream's ``skipped``). Nothing is simulated per device, so a strap and an ECG of the same patient
agree beat for beat, and a CGM and a meter see the same glucose trajectory.

The glucose model starts ``past_min`` minutes before the ward (24 h by default), so the patient has a
history at ``t = 0``: CGM readings and meter records from the recent past, and a glucose state that
is not simply the fasting target.

A ward is not thread-safe: use it from one thread (an asyncio loop or the MQTT fleet's loop).
Synthetic physiology, not validated: see ``docs/physiology.md`` ("Patients and devices").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim.models.beats import BeatKind, BeatTrain, CardiacProfile, heart_rate_from_beats
from firmware_sim.models.cgm_sensor import CgmFlag, CgmSensor, GlucoseMeter
from firmware_sim.models.ecg import EcgProfile, EcgSynth
from firmware_sim.models.glucose import (
    MINUTES_PER_DAY,
    GlucosePatients,
    GlucoseSimulation,
    Schedule,
    daily_routine,
)
from firmware_sim.models.vitals import BloodPressure, Spo2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
KindArray = npt.NDArray[np.int8]

BEAT_CHUNK_S = 10.0
"""The shared beat train is pulled this far ahead of the latest time a device asked for."""
ECG_CHUNK_S = 1.0
"""ECG is generated in chunks of at least this long (all patients of a rate at once)."""
IRREGULAR_WINDOW_S = 30.0
"""A blood-pressure cuff flags an irregular pulse if a non-sinus beat occurred in this window."""


def _derive(*entropy: int) -> int:
    """A non-negative 63-bit int from a tuple of ints (stable across runs and platforms)."""
    state = np.random.SeedSequence([e % (1 << 63) for e in entropy]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ManualClock:
    """A host clock that only moves when told: ``Ward(..., clock=ManualClock())`` for tests and scripts."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self.t += seconds


@dataclass(frozen=True, slots=True)
class PatientSpec:
    """A patient's identity: what a scenario file may set. Everything else is drawn from ``seed``.

    ``cardiac`` / ``ecg`` ``None``: drawn from the seed (:meth:`CardiacProfile.draw`,
    :meth:`EcgProfile.draw`); AF episodes are ``cardiac.af_episodes`` in seconds of ward time.
    """

    seed: int
    diabetes_type: int = 1
    """1 or 2 (the glucose model has no non-diabetic patients)."""
    cardiac: CardiacProfile | None = None
    ecg: EcgProfile | None = None
    cgm_insertion_min: float = -MINUTES_PER_DAY
    """When the CGM sensor went in, minutes of ward time (negative: before the ward started). The
    default, a day before, gives readings from the start; set it to 0 to see the warm-up."""
    routine: bool = True
    """Meals, boluses and exercise of :func:`~firmware_sim.models.glucose.daily_routine`, day after day."""

    def __post_init__(self) -> None:
        if self.diabetes_type not in (1, 2):
            raise ValueError(f"diabetes_type must be 1 or 2, not {self.diabetes_type}")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")

    @classmethod
    def draw(cls, ward_seed: int, bed: int, **overrides: Any) -> PatientSpec:
        """The patient in ``bed`` of a ward seeded ``ward_seed`` (half type 1, half type 2)."""
        seed = _derive(ward_seed, bed, 0x9A7)
        kind = 1 if np.random.default_rng([seed, 0x9A8]).uniform() < 0.5 else 2
        return replace(cls(seed, kind), **overrides)

    def cardiac_profile(self) -> CardiacProfile:
        return self.cardiac if self.cardiac is not None else CardiacProfile.draw(self.seed)

    def ecg_profile(self) -> EcgProfile:
        return self.ecg if self.ecg is not None else EcgProfile.draw(self.seed)


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class BeatsSince:
    """Beats of one patient since a device's last pull."""

    time_s: FloatArray
    """R-peak times, s of ward time."""
    rr_s: FloatArray
    """RR interval ending at each beat, s."""
    kind: KindArray
    """:class:`~firmware_sim.models.beats.BeatKind` of each beat."""


@dataclass(frozen=True, slots=True)
class EcgSamples:
    start: int
    """Sample index of the first sample (sample ``k`` is at ``k / fs`` s of ward time)."""
    fs: int
    uv: npt.NDArray[np.int32]
    """µV, whole numbers."""
    lead_off: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CgmReading:
    time_s: float
    """Ward time of the reading (s; negative: before the ward started)."""
    mg_dl: float | None
    """None while the sensor warms up (or before it is inserted)."""
    flags: CgmFlag


@dataclass(frozen=True, slots=True)
class BpReading:
    systolic: float
    diastolic: float
    mean_arterial: float
    """mmHg."""
    pulse_bpm: float
    irregular: bool
    """A non-sinus beat (ectopic or AF) in the last 30 s."""


# --------------------------------------------------------------------------------------------- history


class _BeatLog:
    """One patient's beats, the recent ones, numbered globally (beat ``k`` is at ``t[k - base]``)."""

    __slots__ = ("base", "kind", "rr", "t")

    def __init__(self, t: FloatArray, rr: FloatArray, kind: KindArray) -> None:
        self.t, self.rr, self.kind = t, rr, kind
        self.base = 0

    @property
    def end(self) -> int:
        return self.base + self.t.size

    def append(self, t: FloatArray, rr: FloatArray, kind: KindArray) -> None:
        if t.size:
            self.t = np.concatenate([self.t, t])
            self.rr = np.concatenate([self.rr, rr])
            self.kind = np.concatenate([self.kind, kind])

    def trim_before(self, t_s: float) -> None:
        drop = int(np.searchsorted(self.t, t_s, side="left")) - 1
        if drop > 32:
            self.t, self.rr, self.kind = self.t[drop:], self.rr[drop:], self.kind[drop:]
            self.base += drop

    def index_after(self, t_s: float) -> int:
        """Global index of the first beat after ``t_s``."""
        return self.base + int(np.searchsorted(self.t, t_s, side="right"))


class _EcgGroup:
    """The ECG of the patients that have a device at one rate: one synth, a bounded ring of samples."""

    def __init__(self, ward: Ward, fs: int, members: list[int]) -> None:
        self.fs = fs
        self.members = members
        self.row = {p: r for r, p in enumerate(members)}
        specs = [ward.specs[p] for p in members]
        self.synth = EcgSynth(
            [ward.cardiac[p] for p in members], [s.ecg_profile() for s in specs], [s.seed for s in specs], fs=fs
        )
        self.chunk = math.ceil(ECG_CHUNK_S * fs)
        self.keep = max(2 * self.chunk, math.ceil(ward.ecg_history_s * fs))
        cap = 2 * self.keep + self.chunk
        self.uv = np.zeros((len(members), cap), dtype=np.int32)
        self.off = np.zeros((len(members), cap), dtype=np.bool_)
        self.first = 0
        """Sample index of column 0."""
        self.end = 0
        """Samples generated (the next sample index)."""

    @property
    def oldest(self) -> int:
        return max(0, self.end - self.keep)

    def ensure(self, upto: int) -> None:
        """Generate until sample ``upto`` (exclusive) is available."""
        while self.end < upto:
            n = max(self.chunk, min(upto - self.end, self.keep))
            chunk = self.synth.next(n)
            col = self.end - self.first
            if col + n > self.uv.shape[1]:
                # keep the last `keep` samples, move them to the front (amortised O(1) per sample)
                keep_from = max(self.end - self.keep, self.first)
                a = keep_from - self.first
                width = self.end - keep_from
                if width + n > self.uv.shape[1]:
                    cap = width + n
                    uv = np.zeros((len(self.members), cap), dtype=np.int32)
                    off = np.zeros((len(self.members), cap), dtype=np.bool_)
                    uv[:, :width], off[:, :width] = self.uv[:, a : a + width], self.off[:, a : a + width]
                    self.uv, self.off = uv, off
                else:
                    self.uv[:, :width] = self.uv[:, a : a + width]
                    self.off[:, :width] = self.off[:, a : a + width]
                self.first = keep_from
                col = self.end - self.first
            self.uv[:, col : col + n] = np.rint(chunk.uv)
            self.off[:, col : col + n] = chunk.lead_off
            self.end += n

    def take(self, patient: int, start: int, n: int) -> EcgSamples:
        """Samples ``start … start + n`` of ``patient`` (``start >= oldest``), in pieces no longer than
        the history so that generating the end does not drop the beginning."""
        r = self.row[patient]
        uv: list[npt.NDArray[np.int32]] = []
        off: list[npt.NDArray[np.bool_]] = []
        s = start
        while s < start + n or not uv:
            m = min(self.keep, start + n - s)
            self.ensure(s + m)
            a = s - self.first
            uv.append(self.uv[r, a : a + m].copy())
            off.append(self.off[r, a : a + m].copy())
            s += m
        return EcgSamples(start, self.fs, np.concatenate(uv), np.concatenate(off))


# ------------------------------------------------------------------------------------------ the ward


class Ward:
    """``patients`` simulated patients (a count, or their :class:`PatientSpec` s) on one clock."""

    def __init__(
        self,
        patients: int | Sequence[PatientSpec],
        *,
        seed: int = 0,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        epoch_s: float | None = None,
        start_clock_min: float | None = None,
        past_min: int = int(MINUTES_PER_DAY),
        cgm_period_min: int = 5,
        beat_history_s: float = 120.0,
        ecg_history_s: float = 30.0,
        cgm_history_min: float = MINUTES_PER_DAY,
    ) -> None:
        specs = [PatientSpec.draw(seed, i) for i in range(patients)] if isinstance(patients, int) else list(patients)
        if not specs:
            raise ValueError("a ward needs at least one patient")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, not {speed}")
        if past_min < 0:
            raise ValueError("past_min must be >= 0")
        self.specs = tuple(specs)
        self.seed = seed
        self._clock = clock
        self._t0 = clock()
        self._offset_s = 0.0
        self.speed = float(speed)
        self.epoch_s = time.time() if epoch_s is None else float(epoch_s)
        """Simulated wall-clock time (Unix seconds) at ward time 0: device clocks follow :meth:`epoch`."""
        if start_clock_min is None:
            start_clock_min = (self.epoch_s % 86_400.0) / 60.0
        self.start_clock_min = float(start_clock_min) % MINUTES_PER_DAY
        """Time of day at ward time 0, minutes after midnight (circadian models, meals)."""
        self.past_min = past_min
        self.beat_history_s = beat_history_s
        self.ecg_history_s = ecg_history_s
        self.cgm_history_min = cgm_history_min
        n = len(specs)
        # ---- cardiac
        self.cardiac = [s.cardiac_profile() for s in specs]
        self._beats = BeatTrain(self.cardiac, [s.seed for s in specs])
        self._logs: list[_BeatLog] = []
        for i in range(n):
            # the beats before t = 0 (for heart rate from the start); RR of the very first is unknown
            t = self._beats.times[i]
            pre = t[np.isfinite(t) & (t < 0.0)].copy()
            rr = np.concatenate([[np.nan], np.diff(pre)]) if pre.size else pre.copy()
            self._logs.append(_BeatLog(pre, rr, self._beats.kinds[i, : pre.size].copy()))
        self._beats_until = 0.0
        self._ecg: dict[int, list[_EcgGroup]] = {}
        self._ecg_pending: dict[int, list[int]] = {}
        # ---- glucose: patients drawn one by one from their own seeds, then side by side
        singles = [
            GlucosePatients.draw(1, _derive(s.seed, 0x61C), type1_fraction=1.0 if s.diabetes_type == 1 else 0.0)
            for s in specs
        ]
        self._glucose_patients = _concat(singles)
        self._singles = singles
        self._g_history_min = int(past_min + max(cgm_history_min, 120.0) + 60)
        self._g_start_abs = self.start_clock_min - past_min
        """Clock minute (relative to the midnight of ward day 0) at glucose minute 0."""
        self.glucose = GlucoseSimulation(
            self._glucose_patients,
            start_clock_min=self._g_start_abs % MINUTES_PER_DAY,
            history_min=self._g_history_min,
        )
        self._routine_day = math.floor(self._g_start_abs / MINUTES_PER_DAY) - 1
        """Last calendar day whose routine was scheduled."""
        self._schedule_routines(0.0)
        self.cgm = CgmSensor(
            self.glucose,
            _derive(seed, 0xC6),
            period_min=cgm_period_min,
            insertion_min=np.array([past_min + s.cgm_insertion_min for s in specs]),
        )
        self._cgm_t = np.empty(0)
        """Glucose minutes of the buffered CGM readings."""
        self._cgm_v = np.empty((n, 0))
        self._cgm_f = np.empty((n, 0), dtype=np.uint8)
        self._cgm_base = 0
        self.meter = GlucoseMeter(_derive(seed, 0x6E7))
        self.bp = BloodPressure(n, _derive(seed, 0xB9), start_clock_min=self.start_clock_min)
        self.spo2 = Spo2(n, _derive(seed, 0x5B), start_clock_min=self.start_clock_min)
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._views = [PatientView(self, i) for i in range(n)]

    # ------------------------------------------------------------------ clock

    @property
    def patients(self) -> int:
        return len(self.specs)

    def now_s(self) -> float:
        """Simulated seconds since the ward started."""
        return self._offset_s + (self._clock() - self._t0) * self.speed

    def epoch(self) -> float:
        """Simulated wall-clock time, Unix seconds (a ``DeviceClock(host_time=ward.epoch)`` follows it)."""
        return self.epoch_s + self.now_s()

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (simulated time stays continuous)."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, not {speed}")
        self._offset_s = self.now_s()
        self._t0 = self._clock()
        self.speed = float(speed)

    def patient(self, i: int) -> PatientView:
        return self._views[i]

    # ------------------------------------------------------------------ beats

    def _advance_beats(self, t_s: float) -> None:
        if t_s <= self._beats_until:
            return
        target = t_s + BEAT_CHUNK_S
        beats = self._beats.take_until(target)
        keep_from = target - max(self.beat_history_s, IRREGULAR_WINDOW_S + 10.0)
        for log, b in zip(self._logs, beats, strict=True):
            log.append(b.time_s, b.rr_s, b.kind)
            log.trim_before(keep_from)
        self._beats_until = target

    def _log(self, i: int, t_s: float) -> _BeatLog:
        self._advance_beats(t_s)
        return self._logs[i]

    def heart_rate(self, i: int, t_s: float) -> float:
        log = self._log(i, t_s)
        return float(heart_rate_from_beats(log.t, np.array([t_s]))[0])

    # ------------------------------------------------------------------ ECG

    def _register_ecg(self, fs: int, patient: int) -> None:
        """Note that ``patient`` has an ECG at ``fs``: it joins the next synth created for that rate."""
        if any(patient in g.row for g in self._ecg.get(fs, [])):
            return
        pending = self._ecg_pending.setdefault(fs, [])
        if patient not in pending:
            pending.append(patient)

    def _ecg_for(self, fs: int, patient: int) -> _EcgGroup:
        groups = self._ecg.setdefault(fs, [])
        for g in groups:
            if patient in g.row:
                return g
        # Every patient registered so far at this rate joins one new synth (a patient's ECG depends
        # only on its seed, so grouping does not change it).
        members = sorted(set(self._ecg_pending.pop(fs, [])) | {patient})
        g = _EcgGroup(self, fs, members)
        groups.append(g)
        return g

    # ------------------------------------------------------------------ glucose

    def glucose_minute(self, t_s: float) -> float:
        """Glucose-model minute of ward time ``t_s``."""
        return self.past_min + t_s / 60.0

    def _schedule_routines(self, g_min: float) -> None:
        """Add the daily routines of every calendar day up to the one after ``g_min``."""
        want = math.floor((self._g_start_abs + g_min) / MINUTES_PER_DAY) + 1
        while self._routine_day < want:
            day = self._routine_day + 1
            shift = day * MINUTES_PER_DAY - self._g_start_abs
            now = self.glucose.minute
            for i, (spec, single) in enumerate(zip(self.specs, self._singles, strict=True)):
                if not spec.routine:
                    continue
                (s,) = daily_routine(single, 1.0, _derive(spec.seed, 0xDA1, day))
                sched = Schedule(
                    meals=[replace(m, time_min=m.time_min + shift) for m in s.meals if m.time_min + shift >= now],
                    boluses=[replace(b, time_min=b.time_min + shift) for b in s.boluses if b.time_min + shift >= now],
                    exercise=[
                        replace(e, start_min=e.start_min + shift) for e in s.exercise if e.start_min + shift >= now
                    ],
                )
                self.glucose.add(i, sched)
            self._routine_day = day

    def add_glucose_events(self, i: int, schedule: Schedule) -> None:
        """Scenario hook: meals / boluses / exercise for patient ``i``, times in minutes of ward time."""
        shift = float(self.past_min)
        self.glucose.add(
            i,
            Schedule(
                meals=[replace(m, time_min=m.time_min + shift) for m in schedule.meals],
                boluses=[replace(b, time_min=b.time_min + shift) for b in schedule.boluses],
                exercise=[replace(e, start_min=e.start_min + shift) for e in schedule.exercise],
            ),
        )

    def plasma(self, t_s: float) -> FloatArray:
        """Plasma glucose of every patient at ward time ``t_s`` (mg/dL), cached per time."""
        key = ("g", t_s)
        hit = self._cache.get(key)
        if hit is None:
            g_min = self.glucose_minute(t_s)
            self._schedule_routines(g_min)
            hit = self.glucose.advance_to(g_min)
            self._cache = {k: v for k, v in self._cache.items() if k[0] != "g"}
            self._cache[key] = hit
        return np.asarray(hit, dtype=np.float64)

    def meter_check(self, i: int, t_s: float) -> float:
        g_min = self.glucose_minute(t_s)
        if g_min > self.glucose.minute:
            self.plasma(t_s)
        return float(self.meter.spot_check(self.glucose, g_min, np.array([i]))[0])

    def _advance_cgm(self, t_s: float) -> None:
        g_min = self.glucose_minute(t_s)
        self._schedule_routines(g_min)
        r = self.cgm.readings_until(g_min)
        if r.times_min.size:
            self._cgm_t = np.concatenate([self._cgm_t, r.times_min])
            self._cgm_v = np.concatenate([self._cgm_v, r.values], axis=1)
            self._cgm_f = np.concatenate([self._cgm_f, r.flags], axis=1)
            drop = int(np.searchsorted(self._cgm_t, g_min - self.cgm_history_min, side="left"))
            if drop > 64:
                self._cgm_t, self._cgm_v, self._cgm_f = self._cgm_t[drop:], self._cgm_v[:, drop:], self._cgm_f[:, drop:]
                self._cgm_base += drop

    def cgm_index_after(self, t_s: float) -> int:
        """Global index of the first CGM reading after ward time ``t_s``."""
        self._advance_cgm(t_s)
        return self._cgm_base + int(np.searchsorted(self._cgm_t, self.glucose_minute(t_s), side="right"))

    def cgm_readings(self, i: int, start: int, t_s: float) -> tuple[list[CgmReading], int, int]:
        """Readings of patient ``i`` from global index ``start`` up to ward time ``t_s``:
        ``(readings, next index, readings skipped because they left the history)``."""
        self._advance_cgm(t_s)
        skipped = max(0, self._cgm_base - start)
        a = max(start, self._cgm_base) - self._cgm_base
        b = int(np.searchsorted(self._cgm_t, self.glucose_minute(t_s), side="right"))
        out = [
            CgmReading(
                (float(self._cgm_t[k]) - self.past_min) * 60.0,
                None if math.isnan(v := float(self._cgm_v[i, k])) else v,
                CgmFlag(int(self._cgm_f[i, k])),
            )
            for k in range(a, max(a, b))
        ]
        return out, self._cgm_base + max(a, b), skipped

    # ------------------------------------------------------------------ vitals

    def _vitals(self, kind: str, t_s: float, *flags: bool) -> FloatArray:
        key = (kind, t_s, *flags)
        hit = self._cache.get(key)
        if hit is None:
            t_min = t_s / 60.0
            if kind == "spo2":
                hit = self.spo2.sample(t_min)[:, 0]
            else:
                s = self.bp.sample(t_min, by_staff=flags[0], first=flags[1])
                hit = np.stack([s.systolic[:, 0], s.diastolic[:, 0], s.mean_arterial[:, 0]])
            self._cache = {k: v for k, v in self._cache.items() if k[0] != kind or k[1] == t_s}
            self._cache[key] = hit
        return np.asarray(hit, dtype=np.float64)


def _concat(parts: Sequence[GlucosePatients]) -> GlucosePatients:
    values = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(GlucosePatients)}
    return GlucosePatients(**values)


# ----------------------------------------------------------------------------------------- cursors


@dataclass(slots=True)
class BeatStream:
    """A device's cursor on its patient's beat train."""

    _view: PatientView
    next_beat: int
    skipped: int = 0

    def take(self, until_s: float | None = None) -> BeatsSince:
        """The beats since the last call, up to now (or ``until_s``)."""
        ward = self._view.ward
        t = ward.now_s() if until_s is None else until_s
        log = ward._log(self._view.index, t)
        if self.next_beat < log.base:
            self.skipped += log.base - self.next_beat
            self.next_beat = log.base
        a = self.next_beat - log.base
        b = max(a, int(np.searchsorted(log.t, t, side="right")))
        self.next_beat = log.base + b
        return BeatsSince(log.t[a:b].copy(), log.rr[a:b].copy(), log.kind[a:b].copy())


@dataclass(slots=True)
class EcgStream:
    """A device's cursor on its patient's ECG at ``fs`` Hz."""

    _view: PatientView
    fs: int
    next_sample: int
    skipped: int = 0

    def due(self, until_s: float | None = None) -> int:
        """Samples due by now (or ``until_s``) that were not taken yet."""
        t = self._view.ward.now_s() if until_s is None else until_s
        return max(0, math.floor(t * self.fs) + 1 - self.next_sample)

    def take(self, n: int) -> EcgSamples:
        """The next ``n`` samples (generated on demand, also ahead of the ward clock)."""
        g = self._view.ward._ecg_for(self.fs, self._view.index)
        if self.next_sample < g.oldest:
            self.skipped += g.oldest - self.next_sample
            self.next_sample = g.oldest
        out = g.take(self._view.index, self.next_sample, n)
        self.next_sample += n
        return out

    def take_due(self, until_s: float | None = None) -> EcgSamples:
        """Every sample due by now (or ``until_s``)."""
        return self.take(self.due(until_s))


@dataclass(slots=True)
class CgmStream:
    """A device's cursor on its patient's CGM readings."""

    _view: PatientView
    next_reading: int
    skipped: int = 0

    def take(self, until_s: float | None = None) -> list[CgmReading]:
        """Readings due since the last call, up to now (or ``until_s``)."""
        ward = self._view.ward
        t = ward.now_s() if until_s is None else until_s
        out, self.next_reading, skipped = ward.cgm_readings(self._view.index, self.next_reading, t)
        self.skipped += skipped
        return out


# ------------------------------------------------------------------------------------- patient view


@dataclass(slots=True)
class PatientView:
    """What devices observe of patient ``index`` of ``ward``; every value is at the ward's time now."""

    ward: Ward
    index: int

    @property
    def spec(self) -> PatientSpec:
        return self.ward.specs[self.index]

    @property
    def speed(self) -> float:
        return self.ward.speed

    def now_s(self) -> float:
        return self.ward.now_s()

    # cardiac
    def heart_rate(self) -> float:
        """Heart rate now (/min): 60 / mean RR of the beats of the last 5 s."""
        return self.ward.heart_rate(self.index, self.now_s())

    def beat_stream(self) -> BeatStream:
        """A cursor on the beat train, starting with the first beat after now."""
        t = self.now_s()
        return BeatStream(self, self.ward._log(self.index, t).index_after(t))

    def irregular(self, window_s: float = IRREGULAR_WINDOW_S) -> bool:
        """A non-sinus beat (ectopic or AF) in the last ``window_s``."""
        t = self.now_s()
        log = self.ward._log(self.index, t)
        m = (log.t > t - window_s) & (log.t <= t)
        return bool((log.kind[m] != BeatKind.NORMAL).any())

    def ecg_stream(self, fs: int) -> EcgStream:
        """A cursor on the ECG at ``fs`` Hz, starting with the sample due now."""
        self.ward._register_ecg(fs, self.index)
        return EcgStream(self, fs, math.floor(self.now_s() * fs) + 1)

    # glucose
    def glucose(self) -> float:
        """Plasma glucose now, mg/dL."""
        return float(self.ward.plasma(self.now_s())[self.index])

    def cgm_stream(self) -> CgmStream:
        """A cursor on the patient's CGM readings, starting after now."""
        return CgmStream(self, self.ward.cgm_index_after(self.now_s()))

    def cgm_recent(self, count: int) -> list[CgmReading]:
        """The last ``count`` CGM readings at or before now (fewer if the history is shorter)."""
        t = self.now_s()
        end = self.ward.cgm_index_after(t)
        out, _, _ = self.ward.cgm_readings(self.index, max(0, end - count), t)
        return out

    def meter_check(self, at_s: float | None = None) -> float:
        """A glucose meter spot check (mg/dL) now, or at an earlier ward time ``at_s`` within the
        history (``>= earliest_s``): for a meter's stored records."""
        t = self.now_s() if at_s is None else min(at_s, self.now_s())
        return self.ward.meter_check(self.index, max(t, self.earliest_s))

    @property
    def earliest_s(self) -> float:
        """Earliest ward time of the glucose history still held (the model starts ``past_min`` before
        the ward)."""
        g = self.ward.glucose
        first = max(0, g.minute - self.ward._g_history_min + 2)
        return (first - self.ward.past_min) * 60.0

    # vitals
    def blood_pressure(self, *, by_staff: bool = False, first: bool = False) -> BpReading:
        t = self.now_s()
        sys_, dia, mean = self.ward._vitals("bp", t, by_staff, first)[:, self.index]
        return BpReading(float(sys_), float(dia), float(mean), self.heart_rate(), self.irregular())

    def spo2(self) -> float:
        """SpO2 now, %."""
        return float(self.ward._vitals("spo2", self.now_s())[self.index])
