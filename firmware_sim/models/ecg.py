"""Single-lead ECG in the style of ECGSYN, driven by the beat train of :mod:`firmware_sim.models.beats`.

Source: P. E. McSharry, G. D. Clifford, L. Tarassenko, L. A. Smith, "A dynamical model for generating
synthetic electrocardiogram signals", IEEE Trans. Biomed. Eng. 50(3):289–294, 2003 (ECGSYN, PhysioNet).

Model. ECGSYN moves a point around a limit cycle of angle θ (one turn per RR interval, angular
velocity ω = 2π / RR) and builds the ECG ``z`` from Gaussian events, one per wave i ∈ {P, Q, R, S, T}
at angle θᵢ with amplitude aᵢ and width bᵢ: ``ż = −Σ aᵢ Δθᵢ exp(−Δθᵢ² / 2bᵢ²) − (z − z₀)``. Its
solution on a cycle is, up to the slow relaxation towards the baseline ``z₀``, the sum of Gaussians in
phase ``z(θ) = Σ Aᵢ exp(−Δθᵢ² / 2bᵢ²)``; we evaluate that sum directly (vectorised, no ODE
integrator), with Aᵢ the wave's height in µV. The phase of a sample at time t between R peaks
``t_j`` and ``t_j+1`` is ``θ = 2π (t − t_j) / (t_j+1 − t_j)`` (R at θ = 0), i.e. ω is constant over each
RR interval, as in ECGSYN where ω follows the RR tachogram. Waves after R (S, T) belong to beat j,
waves before R (P, Q) to beat j+1, each with its beat's morphology. Angles and widths follow ECGSYN's
defaults (θ = −70°, −15°, 0°, 15°, 100°; b = 0.25, 0.1, 0.1, 0.1, 0.4 rad) and its heart-rate scaling,
applied here per beat with the local rate: with ``h = sqrt(60 / (60·RR))``, widths ×h and angles
×(√h, h, 1, h, √h), so that the QRS keeps its duration and the QT interval shortens less than the RR.

Beat kinds (:class:`~firmware_sim.models.beats.BeatKind`): sinus beats have a P wave; premature
ventricular beats have none, a wide tall QRS and a discordant (inverted) T wave; beats in atrial
fibrillation have no P wave, and the AF intervals carry fibrillatory f-waves: a 4–9 Hz oscillation of
25–60 µV with slow frequency and amplitude modulation, plus a second harmonic.

Noise and artefacts (per patient, :class:`EcgProfile`):

- baseline wander: respiration (the same rate as the respiratory sinus arrhythmia of the beat train,
  as ECGSYN's ``z₀ = A sin(2π f₂ t)``) plus a slower drift (0.02–0.06 Hz);
- mains interference: a 50 Hz sinusoid (Luxembourg mains), 2–15 µV;
- white measurement noise, 4–12 µV SD;
- motion artefacts: bursts (Poisson, ``motion_per_hour``) of 1–6 s, a Hann-windowed sum of three
  0.5–8 Hz sinusoids of up to ``motion_uv``;
- lead-off: segments (Poisson, ``lead_off_per_hour``) of 2–30 s where the output is a flat line at 0 or
  at the positive or negative rail, flagged in :attr:`EcgChunk.lead_off`.

Determinism and streaming: everything is a function of the sample index and of the patient's seed.
:class:`EcgSynth` carries the beat train, the noise generators and the artefact schedules across calls,
so ``next(73)`` repeated gives exactly the samples of one ``next(73 × k)``.

Simplified: one lead and one fixed electrical axis; no QT hysteresis (the T wave follows the current
RR interval, so the T wave of the beat before a premature beat is compressed, as in ECGSYN); no
ST/T changes, bundle-branch blocks, or atrial flutter; f-waves are a modulated sinusoid rather than a
fibrillating atrial model; motion artefacts are not tied to an activity model; the electrode-tissue
impedance, filters and ADC of a real front end are not modelled (apart from the rail at lead-off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim.models.beats import BeatKind, BeatTrain, CardiacProfile, Seed, patient_rng

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

STREAM_ECG_PROFILE = 10
STREAM_ECG_MORPHOLOGY = 11
STREAM_ECG_NOISE = 12
STREAM_ECG_MOTION = 13
STREAM_ECG_LEAD_OFF = 14
STREAM_ECG_PHASES = 15
STREAM_ECG_DRIFT = 16

RATES_HZ = (130, 250, 500)
"""The sampling rates of the devices we simulate (Polar H10, 5G monitors); any rate works."""

_DEG = math.pi / 180.0
# Rows: BeatKind NORMAL, ECTOPIC, AF; columns: P, Q, R, S, T.
_THETA = np.array(
    [
        [-70.0, -15.0, 0.0, 15.0, 100.0],
        [-70.0, -15.0, 0.0, 30.0, 110.0],
        [-70.0, -15.0, 0.0, 15.0, 100.0],
    ]
)
_THETA *= _DEG
_WIDTH = np.array(
    [
        [0.25, 0.1, 0.1, 0.1, 0.4],
        [0.25, 0.1, 0.22, 0.2, 0.45],
        [0.25, 0.1, 0.1, 0.1, 0.4],
    ]
)
_HEIGHT_UV = np.array(
    [
        [150.0, -150.0, 1200.0, -300.0, 300.0],
        [0.0, 0.0, 1500.0, -500.0, -400.0],
        [0.0, -150.0, 1200.0, -300.0, 300.0],
    ]
)
_P, _T = 0, 4


@dataclass(frozen=True, slots=True)
class EcgProfile:
    """One patient's ECG recording conditions (see the module docstring)."""

    gain: float = 1.0
    """Scale of the P-QRS-T complex (electrode placement, body habitus)."""
    noise_uv: float = 8.0
    wander_uv: float = 80.0
    mains_uv: float = 8.0
    mains_hz: float = 50.0
    f_wave_uv: float = 40.0
    f_wave_hz: float = 6.0
    motion_per_hour: float = 0.0
    motion_uv: float = 800.0
    lead_off_per_hour: float = 0.0
    rail_uv: float = 8000.0
    """Output range is ±rail (lead-off segments sit at 0 or at a rail)."""

    @classmethod
    def draw(cls, seed: Seed, **overrides: Any) -> EcgProfile:
        """Random recording conditions (from the patient's seed); ``overrides`` that are not ``None`` win."""
        rng = patient_rng(seed, STREAM_ECG_PROFILE)
        gain, noise, wander, mains, fw, fhz = rng.uniform(
            [0.7, 4.0, 40.0, 2.0, 25.0, 4.0], [1.3, 12.0, 150.0, 15.0, 60.0, 9.0]
        )
        profile = cls(
            gain=float(gain),
            noise_uv=float(noise),
            wander_uv=float(wander),
            mains_uv=float(mains),
            f_wave_uv=float(fw),
            f_wave_hz=float(fhz),
        )
        return replace(profile, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True, slots=True)
class EcgChunk:
    """Consecutive samples of every patient's ECG."""

    start: int
    """Index of the first sample (sample ``i`` is at ``i / fs`` seconds)."""
    fs: int
    uv: FloatArray
    """``(patients, n)`` µV."""
    lead_off: BoolArray
    """``(patients, n)``: samples during a lead-off segment."""

    @property
    def time_s(self) -> FloatArray:
        return np.asarray((self.start + np.arange(self.uv.shape[1])) / self.fs, dtype=np.float64)


@dataclass(slots=True)
class _Event:
    start: float
    end: float
    params: FloatArray


class _Schedule:
    """A Poisson process of events of one patient, drawn lazily in time order."""

    def __init__(self, rng: np.random.Generator, per_hour: float, kind: str) -> None:
        self._rng = rng
        self._mean_gap = 3600.0 / per_hour if per_hour > 0 else math.inf
        self._kind = kind
        self._next = float(rng.exponential(self._mean_gap)) if per_hour > 0 else math.inf
        self._events: list[_Event] = []

    def overlapping(self, t0: float, t1: float) -> list[_Event]:
        while self._next <= t1:
            rng = self._rng
            if self._kind == "motion":
                dur = float(rng.uniform(1.0, 6.0))
                # amplitude fraction, then 3 frequencies (Hz) and 3 phases
                params = np.concatenate([rng.uniform(0.3, 1.0, 1), rng.uniform(0.5, 8.0, 3), rng.uniform(0, 6.3, 3)])
            else:
                dur = float(rng.uniform(2.0, 30.0))
                params = np.array([float(rng.integers(-1, 2))])  # level: -rail, 0, +rail
            self._events.append(_Event(self._next, self._next + dur, params))
            self._next += dur + float(rng.exponential(self._mean_gap))
        self._events = [e for e in self._events if e.end > t0]
        return [e for e in self._events if e.start < t1]


class EcgSynth:
    """ECG of a ward of patients at ``fs`` Hz, generated in chunks with state carried across calls.

    A device pulls ``next(n)`` as often as it likes (73 samples per Polar H10 notification, 250 per
    second for a 5G monitor …): the samples are those of a single ``next(total)``. The beat train is a
    private :class:`BeatTrain` with the same profiles and seeds, so a strap that builds its own
    ``BeatTrain(cardiac, seeds)`` reports the beats this ECG shows.
    """

    def __init__(
        self,
        cardiac: Sequence[CardiacProfile],
        ecg: Sequence[EcgProfile],
        seeds: Sequence[Seed],
        *,
        fs: int = 250,
    ) -> None:
        if not len(cardiac) == len(ecg) == len(seeds):
            raise ValueError("need one cardiac profile, ECG profile and seed per patient")
        if fs < 100:
            raise ValueError(f"fs must be >= 100 Hz, not {fs}")
        self.fs = fs
        self.beats = BeatTrain(cardiac, seeds)
        p = len(seeds)
        self._rows = np.arange(p)
        self._profiles = tuple(ecg)
        morph = np.array([patient_rng(s, STREAM_ECG_MORPHOLOGY).uniform(0.8, 1.2, (3, 5)) for s in seeds])
        gains = np.array([e.gain for e in ecg])
        self._height = gains[:, None, None] * morph * _HEIGHT_UV  # (P, kind, wave)
        self._noise = [patient_rng(s, STREAM_ECG_NOISE) for s in seeds]
        phases = np.array([patient_rng(s, STREAM_ECG_PHASES).uniform(0, 2 * math.pi, 6) for s in seeds])
        slow = np.array([patient_rng(s, STREAM_ECG_DRIFT).uniform(0.02, 0.06) for s in seeds])
        self._phases = phases
        self._w_resp = 2 * math.pi * np.array([c.resp_hz for c in cardiac])
        self._w_slow = 2 * math.pi * slow
        self._w_mains = 2 * math.pi * np.array([e.mains_hz for e in ecg])
        self._w_f = 2 * math.pi * np.array([e.f_wave_hz for e in ecg])
        self._col = {
            name: np.array([getattr(e, name) for e in ecg])[:, None]
            for name in ("noise_uv", "wander_uv", "mains_uv", "f_wave_uv", "motion_uv", "rail_uv")
        }
        self._motion = [
            _Schedule(patient_rng(s, STREAM_ECG_MOTION), e.motion_per_hour, "motion")
            for s, e in zip(seeds, ecg, strict=True)
        ]
        self._lead_off = [
            _Schedule(patient_rng(s, STREAM_ECG_LEAD_OFF), e.lead_off_per_hour, "lead_off")
            for s, e in zip(seeds, ecg, strict=True)
        ]
        self._next_sample = 0
        self._block = max(64, 400_000 // p)

    @property
    def patients(self) -> int:
        return len(self._profiles)

    def next(self, n: int) -> EcgChunk:
        """The next ``n`` samples of every patient."""
        start = self._next_sample
        uv = np.empty((self.patients, n))
        off = np.zeros((self.patients, n), dtype=np.bool_)
        for b0 in range(0, n, self._block):
            b1 = min(n, b0 + self._block)
            uv[:, b0:b1], off[:, b0:b1] = self._generate(start + b0, b1 - b0)
        self._next_sample = start + n
        return EcgChunk(start, self.fs, uv, off)

    # ------------------------------------------------------------------ synthesis

    def _generate(self, s0: int, n: int) -> tuple[FloatArray, BoolArray]:
        fs = self.fs
        t = (s0 + np.arange(n)) / fs  # (n,)
        t_end = (s0 + n) / fs
        beats = self.beats
        beats.ensure(t_end + 0.01)
        bt = beats.times
        cap = bt.shape[1]
        # The beat a sample follows: the last beat whose first sample (ceil(t_b·fs)) is <= the sample.
        # Integer keys, offset per patient, so one searchsorted serves the whole ward exactly.
        first = np.ceil(np.minimum(bt, 1e12) * fs).astype(np.int64)
        stride = n + 2
        keys = (np.clip(first - s0, -1, n) + (self._rows * stride)[:, None]).ravel()
        queries = (np.arange(n) + (self._rows * stride)[:, None]).ravel()
        j = (np.searchsorted(keys, queries, side="right") - 1).reshape(-1, n) - (self._rows * cap)[:, None]
        rows = self._rows[:, None]
        tj, tk = bt[rows, j], bt[rows, j + 1]
        kj, kk = beats.kinds[rows, j], beats.kinds[rows, j + 1]
        rr = tk - tj
        theta = (2 * math.pi) * (t - tj) / rr  # (P, n), 0 at beat j, 2π at beat j+1
        h = 1.0 / np.sqrt(rr)  # ECGSYN's sqrt(HR/60) with the local heart rate
        sh = np.sqrt(h)
        scale = np.stack([sh, h, np.ones_like(h), h, sh], axis=-1)  # (P, n, 5)
        hb = h[..., None]
        th = theta[..., None]
        z = np.zeros((self.patients, n))
        for kind, base in ((kj, 0.0), (kk, 2 * math.pi)):
            d = th - base - _THETA[kind] * scale
            w = _WIDTH[kind] * hb
            z += (self._height[rows, kind] * np.exp(-0.5 * (d / w) ** 2)).sum(axis=-1)
        ph = self._phases
        # AF f-waves on the intervals that end in an AF beat
        af = kk == BeatKind.AF
        if af.any():
            fm = np.sin(2 * math.pi * 0.15 * t + ph[:, 4:5])
            am = 1.0 + 0.3 * np.sin(2 * math.pi * 0.31 * t + ph[:, 5:6])
            phi = self._w_f[:, None] * t + ph[:, 3:4] + 4.0 * fm
            f = self._col["f_wave_uv"] * am * (np.sin(phi) + 0.35 * np.sin(2 * phi + 1.0))
            z += np.where(af, f, 0.0)
        z += self._col["wander_uv"] * (
            np.sin(self._w_resp[:, None] * t + ph[:, 0:1]) + 0.5 * np.sin(self._w_slow[:, None] * t + ph[:, 1:2])
        )
        z += self._col["mains_uv"] * np.sin(self._w_mains[:, None] * t + ph[:, 2:3])
        z += self._col["noise_uv"] * np.stack([g.standard_normal(n) for g in self._noise])
        t0 = s0 / fs
        off = np.zeros_like(z, dtype=np.bool_)
        for i in range(self.patients):
            for e in self._motion[i].overlapping(t0, t_end):
                m = (t >= e.start) & (t < e.end)
                tau = t[m] - e.start
                window = np.sin(math.pi * tau / (e.end - e.start)) ** 2
                a = e.params[0] * self._col["motion_uv"][i, 0]
                wave = sum(np.sin(2 * math.pi * e.params[1 + q] * tau + e.params[4 + q]) for q in range(3))
                z[i, m] += a * window * wave
            for e in self._lead_off[i].overlapping(t0, t_end):
                m = (t >= e.start) & (t < e.end)
                z[i, m] = e.params[0] * self._col["rail_uv"][i, 0]
                off[i, m] = True
        beats.discard_before(t0, keep_unread=False)
        rail = self._col["rail_uv"]
        return np.clip(z, -rail, rail), off
