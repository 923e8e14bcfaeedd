"""The beat train of simulated patients: R-peak times, RR intervals and beat kinds.

The beat train is the single source of truth of a patient's cardiac rhythm: a heart-rate strap reports
heart rate and RR intervals from it, and :mod:`firmware_sim.models.ecg` draws the P-QRS-T complexes on
it, so the strap and the ECG of the same patient (same seed and profile) agree beat for beat.

Model (per patient, :class:`CardiacProfile`):

- **Sinus rhythm with heart-rate variability.** The RR interval starting at beat time ``t`` is
  ``RR = RR̄ + s(t) + e``, with ``RR̄ = 60 / hr_bpm``, white jitter ``e`` (3 ms SD) and ``s(t)`` a
  stationary Gaussian process with the bimodal power spectrum of ECGSYN (McSharry et al. 2003): two
  Gaussian lobes, LF around ``lf_hz`` (≈ 0.1 Hz, Mayer waves) and HF around the respiration rate
  ``resp_hz`` (≈ 0.25 Hz, respiratory sinus arrhythmia), with power ratio ``lf_hf_ratio`` and total SD
  ``rr_sd_ms``. ECGSYN draws this process by an inverse FFT of the spectrum with random phases; we use
  the same random-phase construction evaluated directly at the beat times (a sum of
  ``2 × HRV_COMPONENTS`` cosines whose frequencies are drawn from the two lobes, equal power per
  component, uniform phases — the spectral representation method), so the process can be streamed
  indefinitely with no block boundaries and is never periodic. As in ECGSYN, the next beat comes at
  ``t + RR(t)``.
- **Ectopic beats** (premature ventricular contractions): a sinus beat is replaced with probability
  ``ectopic_per_min / hr_bpm`` by a premature beat at ``coupling × RR`` (0.6 by default), followed by a
  full compensatory pause so that the two intervals sum to about two sinus RR intervals.
- **Atrial fibrillation** during the episodes ``af_episodes`` (``(start_s, end_s)`` pairs): RR intervals
  are drawn independently (no autocorrelation: "irregularly irregular") from a log-normal distribution
  with mean ``60 / af_hr_bpm`` and coefficient of variation ``af_rr_cv`` (0.25 by default; observed
  AF RR CVs are about 0.15–0.35), bounded below by a 0.25 s refractory period. Such beats have kind
  :attr:`BeatKind.AF` and the ECG draws them without P waves.

Randomness: every patient has its own generators, derived from its seed and a stream number
(:func:`patient_rng`), so a patient is the same whatever the size of the ward it is simulated in. The
random numbers of beat ``k`` are row ``k mod BLOCK`` of a block drawn when beat ``k`` is the first of its
block, so the beat train does not depend on how it is pulled (all at once or beat by beat).

Vectorisation: beats are generated one beat *step* at a time for all patients that need one (numpy
arrays over the ward); there is no Python loop per sample or per patient, only one per beat.

Simplified: no VLF power or slow trends of the mean heart rate (activity, sleep), no coupling of HRV
to blood pressure, no atrial ectopics, bigeminy or non-compensatory pauses, no onset/offset dynamics
of AF (the rate switches at the episode boundary), and AF RR intervals have no dependence on the
preceding interval (real AF shows some). Heart rate is reported over a fixed 5 s window of beats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
KindArray = npt.NDArray[np.int8]

Seed = int | tuple[int, ...]
"""A patient's seed: a non-negative int, or a tuple of them (e.g. ``(ward_seed, bed)``)."""

# Stream numbers of a patient's generators (see patient_rng); firmware_sim.models.ecg uses 10–19.
STREAM_PROFILE = 1
STREAM_BEATS = 2
STREAM_HRV = 3
STREAM_SCENARIO = 4
"""Free for scenario draws tied to the patient (e.g. :func:`random_af_episodes` in the CLI)."""

BLOCK = 256
"""Beats per block of pre-drawn random numbers."""
HRV_COMPONENTS = 16
"""Cosines per HRV lobe (LF and HF)."""
HR_WINDOW_S = 5.0
"""Heart rate is averaged over the beats of this many seconds."""
WARMUP_S = 10.0
"""The train starts this long before t = 0, so heart rate is defined from t = 0."""
JITTER_S = 0.003
REFRACTORY_S = 0.25


class BeatKind(IntEnum):
    NORMAL = 0
    """Sinus beat (P wave, narrow QRS)."""
    ECTOPIC = 1
    """Premature ventricular beat (no P wave, wide QRS, discordant T)."""
    AF = 2
    """Beat conducted during atrial fibrillation (no P wave, f-waves instead)."""


def patient_rng(seed: Seed, stream: int) -> np.random.Generator:
    """The generator of one of a patient's random streams."""
    entropy = [seed] if isinstance(seed, int) else list(seed)
    return np.random.default_rng([*entropy, stream])


@dataclass(frozen=True, slots=True)
class CardiacProfile:
    """One patient's rhythm parameters (see the module docstring)."""

    hr_bpm: float = 72.0
    """Mean sinus heart rate, /min."""
    rr_sd_ms: float = 40.0
    """SD of the sinus RR intervals due to HRV (LF + HF), ms."""
    lf_hf_ratio: float = 0.5
    """LF/HF power ratio (ECGSYN's default 0.5)."""
    lf_hz: float = 0.1
    resp_hz: float = 0.25
    """Respiration rate, Hz: centre of the HF (RSA) lobe and of the ECG's baseline wander."""
    lf_sd_hz: float = 0.01
    hf_sd_hz: float = 0.01
    ectopic_per_min: float = 0.0
    coupling: float = 0.6
    """Premature RR interval as a fraction of the sinus RR."""
    af_episodes: tuple[tuple[float, float], ...] = ()
    """Atrial-fibrillation episodes, ``(start_s, end_s)``, in time order, not overlapping."""
    af_hr_bpm: float | None = None
    """Mean ventricular rate in AF (default: 1.2 × ``hr_bpm``, at most 150)."""
    af_rr_cv: float = 0.25

    def __post_init__(self) -> None:
        if not 20.0 <= self.hr_bpm <= 240.0:
            raise ValueError(f"hr_bpm must be in [20, 240], not {self.hr_bpm}")
        if self.rr_sd_ms < 0 or self.ectopic_per_min < 0 or self.af_rr_cv < 0 or self.lf_hf_ratio < 0:
            raise ValueError("rr_sd_ms, ectopic_per_min, af_rr_cv and lf_hf_ratio must be >= 0")
        if not 0.3 <= self.coupling < 1.0:
            raise ValueError(f"coupling must be in [0.3, 1), not {self.coupling}")
        prev_end = -math.inf
        for start, end in self.af_episodes:
            if not prev_end <= start < end:
                raise ValueError(f"af_episodes must be ordered, non-overlapping (start < end): {self.af_episodes}")
            prev_end = end

    @property
    def mean_rr_s(self) -> float:
        return 60.0 / self.hr_bpm

    @property
    def af_mean_rr_s(self) -> float:
        hr = self.af_hr_bpm if self.af_hr_bpm is not None else min(1.2 * self.hr_bpm, 150.0)
        return 60.0 / hr

    @classmethod
    def draw(cls, seed: Seed, **overrides: Any) -> CardiacProfile:
        """A random adult at rest (from the patient's seed); ``overrides`` that are not ``None`` win."""
        rng = patient_rng(seed, STREAM_PROFILE)
        hr, sd, lf_hf, lf, resp = rng.uniform([58.0, 25.0, 0.5, 0.08, 0.2], [88.0, 60.0, 2.0, 0.12, 0.3])
        profile = cls(hr_bpm=float(hr), rr_sd_ms=float(sd), lf_hf_ratio=float(lf_hf), lf_hz=float(lf))
        profile = replace(profile, resp_hz=float(resp))
        return replace(profile, **{k: v for k, v in overrides.items() if v is not None})


def random_af_episodes(rng: np.random.Generator, n: int, total_s: float) -> tuple[tuple[float, float], ...]:
    """``n`` AF episodes spread over ``[0, total_s)``: one per equal slot, 30–60 % of the slot long."""
    if n <= 0:
        return ()
    slot = total_s / n
    frac = rng.uniform(0.3, 0.6, n)
    lead = rng.uniform(0.1, 1.0, n) * (1.0 - frac) * 0.9
    return tuple((float(slot * (i + lead[i])), float(slot * (i + lead[i] + frac[i]))) for i in range(n))


@dataclass(frozen=True, slots=True)
class Beats:
    """Consecutive beats of one patient."""

    time_s: FloatArray
    """R-peak times, s."""
    rr_s: FloatArray
    """The RR interval ending at each beat, s."""
    kind: KindArray
    """:class:`BeatKind` of each beat."""


def heart_rate_from_beats(time_s: FloatArray, at_s: FloatArray, window_s: float = HR_WINDOW_S) -> FloatArray:
    """Heart rate (/min) at each of ``at_s``: 60 / mean RR of the beats in ``(at − window, at]``.

    With no beat in the window, the last RR interval before ``at``. Needs two beats before ``at``.
    The same rule serves the beat train and R peaks detected on an ECG, so the two can be compared.
    """
    hi = np.searchsorted(time_s, at_s, side="right") - 1
    lo = np.searchsorted(time_s, at_s - window_s, side="right")
    lo = np.clip(lo, 1, np.maximum(hi, 1))
    if np.any(hi < 1):
        raise ValueError("heart rate needs two beats before each time")
    return np.asarray(60.0 * (hi - lo + 1) / (time_s[hi] - time_s[lo - 1]), dtype=np.float64)


class BeatTrain:
    """The beat trains of a ward of patients, generated lazily and carried across calls.

    Pull beats with :meth:`take_until` (by time: a strap's notification) or :meth:`next_beats` (by
    count), and heart rate with :meth:`heart_rate`. The beats do not depend on how they are pulled.
    :mod:`firmware_sim.models.ecg` reads the buffer through :meth:`ensure`, :attr:`times`, :attr:`kinds`
    and :meth:`discard_before`.
    """

    def __init__(self, profiles: Sequence[CardiacProfile], seeds: Sequence[Seed]) -> None:
        if len(profiles) != len(seeds) or not profiles:
            raise ValueError("need one seed per profile, and at least one patient")
        self.profiles = tuple(profiles)
        p = len(profiles)
        self._rows = np.arange(p)
        self._mean_rr = np.array([pr.mean_rr_s for pr in profiles])
        self._af_rr = np.array([pr.af_mean_rr_s for pr in profiles])
        self._af_sigma = np.array([math.sqrt(math.log1p(pr.af_rr_cv**2)) for pr in profiles])
        self._p_ectopic = np.array([min(pr.ectopic_per_min / pr.hr_bpm, 0.3) for pr in profiles])
        self._coupling = np.array([pr.coupling for pr in profiles])
        n_ep = max(1, max(len(pr.af_episodes) for pr in profiles))
        self._af_start = np.full((p, n_ep), np.inf)
        self._af_end = np.full((p, n_ep), np.inf)
        for i, pr in enumerate(profiles):
            for j, (start, end) in enumerate(pr.af_episodes):
                self._af_start[i, j], self._af_end[i, j] = start, end
        self._hrv_amp, self._hrv_w, self._hrv_phase = _hrv_components(profiles, seeds)
        self._rngs = [patient_rng(s, STREAM_BEATS) for s in seeds]
        self._rand = np.empty((p, BLOCK, 3))
        for i in range(p):
            self._rand[i] = self._draw_block(i)
        cap = 64
        self._t = np.full((p, cap), np.inf)
        self._rr = np.zeros((p, cap))
        self._kind = np.zeros((p, cap), dtype=np.int8)
        self._t[:, 0] = -WARMUP_S - self._rand[:, 0, 0] * self._mean_rr
        self._rr[:, 0] = self._mean_rr
        self._n = np.ones(p, dtype=np.int64)
        """Beats in the buffer, per patient."""
        self._k = np.ones(p, dtype=np.int64)
        """Beats generated so far (index of the next beat), per patient."""
        self._cursor = np.zeros(p, dtype=np.int64)
        """Buffer index of the next beat :meth:`take_until` / :meth:`next_beats` returns."""
        self.ensure(0.0)
        self._cursor = (self._t < 0.0).sum(axis=1)

    @property
    def patients(self) -> int:
        return len(self.profiles)

    @property
    def times(self) -> FloatArray:
        """Buffered beat times, ``(patients, capacity)``, each row ascending, padded with ``inf``."""
        return self._t

    @property
    def kinds(self) -> KindArray:
        """Buffered beat kinds, aligned with :attr:`times`."""
        return self._kind

    # ------------------------------------------------------------------ generation

    def _draw_block(self, i: int) -> FloatArray:
        rng = self._rngs[i]
        block = np.empty((BLOCK, 3))
        block[:, 0] = rng.random(BLOCK)  # ectopic draw (beat 0: initial phase)
        block[:, 1:] = rng.standard_normal((BLOCK, 2))  # AF RR, jitter
        return block

    def _step(self, idx: IntArray) -> None:
        """Append one beat to each patient in ``idx``."""
        k = self._k[idx]
        for i in idx[k % BLOCK == 0]:
            self._rand[i] = self._draw_block(int(i))
        r = self._rand[idx, k % BLOCK]
        last = self._n[idx] - 1
        t = self._t[idx, last]
        tc = t[:, None]
        in_af = ((tc >= self._af_start[idx]) & (tc < self._af_end[idx])).any(axis=1)
        hrv = (self._hrv_amp[idx] * np.cos(self._hrv_w[idx] * tc + self._hrv_phase[idx])).sum(axis=1)
        sinus = self._mean_rr[idx] + hrv + JITTER_S * r[:, 2]
        compensatory = (self._kind[idx, last] == BeatKind.ECTOPIC) & ~in_af
        premature = ~in_af & ~compensatory & (r[:, 0] < self._p_ectopic[idx])
        sig = self._af_sigma[idx]
        af_rr = self._af_rr[idx] * np.exp(sig * r[:, 1] - 0.5 * sig**2)
        rr = np.where(
            in_af,
            af_rr,
            np.where(
                compensatory,
                2.0 * sinus - self._rr[idx, last],
                np.where(premature, self._coupling[idx] * sinus, sinus),
            ),
        )
        rr = np.maximum(rr, REFRACTORY_S)
        kind = np.where(in_af, BeatKind.AF, np.where(premature, BeatKind.ECTOPIC, BeatKind.NORMAL))
        if int(self._n[idx].max()) >= self._t.shape[1]:
            self._grow()
        n = self._n[idx]
        self._t[idx, n] = t + rr
        self._rr[idx, n] = rr
        self._kind[idx, n] = kind
        self._n[idx] += 1
        self._k[idx] += 1

    def _grow(self) -> None:
        cap = self._t.shape[1]
        self._t = np.concatenate([self._t, np.full_like(self._t, np.inf)], axis=1)
        self._rr = np.concatenate([self._rr, np.zeros_like(self._rr)], axis=1)
        self._kind = np.concatenate([self._kind, np.zeros_like(self._kind)], axis=1)
        assert self._t.shape[1] == 2 * cap

    def _last_times(self) -> FloatArray:
        return self._t[self._rows, self._n - 1]

    def ensure(self, until_s: float) -> None:
        """Generate beats until every patient has one after ``until_s``."""
        while True:
            idx = np.flatnonzero(self._last_times() <= until_s)
            if idx.size == 0:
                return
            self._step(idx)

    def discard_before(self, t_s: float, *, keep_unread: bool = True) -> None:
        """Forget beats that neither :meth:`heart_rate` at ``>= t_s`` nor the ECG from ``t_s`` need.

        Keeps, per patient, the last beat at or before ``t_s − HR_WINDOW_S`` and all that follow, and
        (with ``keep_unread``) every beat not yet returned by :meth:`take_until` / :meth:`next_beats`.
        """
        drop = np.maximum((self._t <= t_s - HR_WINDOW_S).sum(axis=1) - 1, 0)
        if keep_unread:
            drop = np.minimum(drop, self._cursor)
        if int(drop.max()) < 32:
            return
        cap = self._t.shape[1]
        src = drop[:, None] + np.arange(cap)
        valid = src < cap
        src = np.minimum(src, cap - 1)
        self._t = np.where(valid, np.take_along_axis(self._t, src, axis=1), np.inf)
        self._rr = np.where(valid, np.take_along_axis(self._rr, src, axis=1), 0.0)
        self._kind = np.where(valid, np.take_along_axis(self._kind, src, axis=1), 0).astype(np.int8)
        self._n -= drop
        self._cursor = np.maximum(self._cursor - drop, 0)

    # ------------------------------------------------------------------ consumers

    def _take(self, stop: IntArray) -> list[Beats]:
        out = [
            Beats(self._t[i, c:s].copy(), self._rr[i, c:s].copy(), self._kind[i, c:s].copy())
            for i, (c, s) in enumerate(zip(self._cursor.tolist(), stop.tolist(), strict=True))
        ]
        self._cursor = np.maximum(self._cursor, stop)
        return out

    def take_until(self, t_s: float) -> list[Beats]:
        """Per patient, the beats at or before ``t_s`` (and from t = 0) not returned yet."""
        self.ensure(t_s)
        out = self._take((self._t <= t_s).sum(axis=1))
        self.discard_before(t_s)
        return out

    def next_beats(self, n: int) -> list[Beats]:
        """Per patient, the next ``n`` beats (from t = 0)."""
        while True:
            idx = np.flatnonzero(self._n - self._cursor < n)
            if idx.size == 0:
                break
            self._step(idx)
        out = self._take(self._cursor + n)
        self.discard_before(float(min(b.time_s[-1] for b in out)) if n else 0.0)
        return out

    def heart_rate(self, t_s: float, window_s: float = HR_WINDOW_S) -> FloatArray:
        """Heart rate (/min) of every patient at ``t_s`` (see :func:`heart_rate_from_beats`).

        ``t_s`` must not be earlier than the last time passed to :meth:`take_until` by more than
        ``HR_WINDOW_S`` minus ``window_s`` (older beats may be discarded).
        """
        self.ensure(t_s)
        hi = (self._t <= t_s).sum(axis=1) - 1
        lo = np.clip((self._t <= t_s - window_s).sum(axis=1), 1, hi)
        span = self._t[self._rows, hi] - self._t[self._rows, lo - 1]
        return np.asarray(60.0 * (hi - lo + 1) / span, dtype=np.float64)


def _hrv_components(
    profiles: Sequence[CardiacProfile], seeds: Sequence[Seed]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Amplitudes (s), angular frequencies (rad/s) and phases of the HRV cosines, ``(patients, 2J)``."""
    j = HRV_COMPONENTS
    amp = np.empty((len(profiles), 2 * j))
    freq = np.empty_like(amp)
    phase = np.empty_like(amp)
    for i, (pr, seed) in enumerate(zip(profiles, seeds, strict=True)):
        rng = patient_rng(seed, STREAM_HRV)
        z = rng.standard_normal(2 * j)
        freq[i, :j] = pr.lf_hz + pr.lf_sd_hz * z[:j]
        freq[i, j:] = pr.resp_hz + pr.hf_sd_hz * z[j:]
        phase[i] = rng.uniform(0.0, 2.0 * math.pi, 2 * j)
        var = (pr.rr_sd_ms / 1000.0) ** 2
        lf_var = var * pr.lf_hf_ratio / (1.0 + pr.lf_hf_ratio)
        # each cosine of amplitude a contributes a²/2 to the variance
        amp[i, :j] = math.sqrt(2.0 * lf_var / j)
        amp[i, j:] = math.sqrt(2.0 * (var - lf_var) / j)
    return amp, 2.0 * math.pi * np.abs(freq), phase
