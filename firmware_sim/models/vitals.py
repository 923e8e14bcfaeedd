"""Blood pressure and SpO2 of a ward, vectorised across patients, deterministic from a seed.

Blood pressure follows a circadian profile — day level, nocturnal dipping of 10–20 % while asleep, a
morning surge after waking — plus slow variability (a sum of random-phase sinusoids, periods
10 min–6 h), beat-to-beat / measurement noise, and a white-coat effect when staff take the reading
(more so for the first reading of a session). SpO2 sits at a per-patient baseline of 95.5–98.5 %
with slow drift and noise, and dips during sleep in apnoea-like desaturation episodes (30–90 s,
nadir 85–91 %, slow fall and faster recovery) whose rate depends on the patient's apnoea severity.

Values are pure functions of ``(seed, patient, time)``: sampling at the same times gives the same
values however the calls are split, so a device can pull samples as time passes. Times are minutes
since the simulation start, which is ``start_clock_min`` after midnight. Synthetic, not validated:
see ``docs/physiology.md`` ("Blood pressure and SpO2").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MINUTES_PER_DAY = 1440.0
SPO2_MIN = 70.0
SPO2_MAX = 100.0
_TRANSITION_MIN = 20.0
"""Width (logistic scale) of the fall-asleep / wake-up transitions."""


def _times(t_min: float | npt.ArrayLike) -> FloatArray:
    t = np.atleast_1d(np.asarray(t_min, dtype=np.float64))
    if t.ndim != 1:
        raise ValueError("times must be a scalar or a 1-D array")
    return t


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def _keyed_normal(seed: int, stream: int, times: FloatArray, n: int) -> FloatArray:
    """Standard normals, shape ``(n, k)``: a fixed function of (seed, stream, patient, time).

    A counter-based generator (splitmix64 hash of the key, then Box–Muller), so a sample's noise does
    not depend on which other times were sampled.
    """
    base = _splitmix(np.array([((seed << 20) ^ stream) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    t_key = np.rint(times * 1000.0).astype(np.int64).astype(np.uint64)
    patient = _splitmix(np.arange(n, dtype=np.uint64) + base)
    h1 = _splitmix(patient[:, None] ^ _splitmix(t_key)[None, :])
    h2 = _splitmix(h1)
    scale = 1.0 / float(1 << 53)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) * scale
    u2 = (h2 >> np.uint64(11)).astype(np.float64) * scale
    return np.asarray(np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2), dtype=np.float64)


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def _circular(d: FloatArray) -> FloatArray:
    """Minutes folded into (-720, 720]."""
    return np.asarray(-((-d + MINUTES_PER_DAY / 2) % MINUTES_PER_DAY - MINUTES_PER_DAY / 2), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SleepSchedule:
    """When each patient falls asleep and wakes (minutes after midnight); shared by BP and SpO2."""

    sleep_clock_min: FloatArray
    wake_clock_min: FloatArray

    @classmethod
    def draw(cls, n: int, seed: int) -> SleepSchedule:
        rng = np.random.default_rng([seed, 0x51E])
        return cls(rng.uniform(22.0, 23.5, n) * 60.0, rng.uniform(6.0, 7.5, n) * 60.0)

    def asleep(self, clock_min: FloatArray) -> FloatArray:
        """Fraction asleep (0–1), shape ``(n, k)`` for clock times ``(k,)`` (minutes after midnight)."""
        c = clock_min[None, :]
        since_sleep = _circular(c - self.sleep_clock_min[:, None])
        since_wake = _circular(c - self.wake_clock_min[:, None])
        return _sigmoid(since_sleep / _TRANSITION_MIN * 4.0) * _sigmoid(-since_wake / _TRANSITION_MIN * 4.0)

    def minutes_since_wake(self, clock_min: FloatArray) -> FloatArray:
        return np.asarray((clock_min[None, :] - self.wake_clock_min[:, None]) % MINUTES_PER_DAY, dtype=np.float64)


class _SlowVariation:
    """Zero-mean slow fluctuation with standard deviation ``sd``: a sum of random-phase sinusoids."""

    def __init__(self, rng: np.random.Generator, n: int, sd: FloatArray, components: int = 6) -> None:
        self.period = np.exp(rng.uniform(math.log(10.0), math.log(360.0), (n, components)))
        self.phase = rng.uniform(0.0, 2.0 * math.pi, (n, components))
        self.amp = sd[:, None] * math.sqrt(2.0 / components)

    def __call__(self, t: FloatArray) -> FloatArray:
        out = np.zeros((self.period.shape[0], t.size), dtype=np.float64)
        for c in range(self.period.shape[1]):
            out += self.amp * np.sin(2.0 * math.pi * t[None, :] / self.period[:, c, None] + self.phase[:, c, None])
        return out


@dataclass(frozen=True, slots=True)
class BpSamples:
    systolic: FloatArray
    """mmHg, shape ``(n, k)``."""
    diastolic: FloatArray
    mean_arterial: FloatArray


class BloodPressure:
    """Arterial blood pressure of ``n`` patients; :meth:`sample` gives readings at any times."""

    def __init__(self, n: int, seed: int, *, start_clock_min: float = 0.0) -> None:
        rng = np.random.default_rng([seed, 0xB90])
        self.n = n
        self._seed = seed
        self.start_clock_min = float(start_clock_min)
        self.sleep = SleepSchedule.draw(n, seed)
        self.day_systolic = rng.uniform(110.0, 160.0, n)
        self.day_diastolic = 0.45 * self.day_systolic + rng.uniform(15.0, 30.0, n)
        self.dipping = rng.uniform(0.10, 0.20, n)
        """Fractional nocturnal fall of both pressures while asleep."""
        self.surge_systolic = rng.uniform(10.0, 25.0, n)
        """Peak of the morning surge (mmHg), about ``surge_tau`` after waking."""
        self.surge_tau_min = rng.uniform(45.0, 90.0, n)
        self.white_coat_systolic = rng.uniform(5.0, 25.0, n)
        self.first_reading_systolic = rng.uniform(3.0, 8.0, n)
        self._slow = _SlowVariation(rng, n, rng.uniform(3.0, 6.0, n))
        self.noise_systolic = 4.0
        self.noise_diastolic = 3.0

    def sample(
        self,
        t_min: float | npt.ArrayLike,
        *,
        by_staff: bool | npt.ArrayLike = False,
        first: bool | npt.ArrayLike = False,
    ) -> BpSamples:
        """Readings at times ``t_min`` (shape ``(k,)``) for every patient: arrays ``(n, k)``.

        ``by_staff`` / ``first`` (scalar, per patient ``(n,)`` or per reading ``(n, k)``) add the
        white-coat effect: a reading taken by staff, more so the first of a session.
        """
        t = _times(t_min)
        clock = (self.start_clock_min + t) % MINUTES_PER_DAY
        asleep = self.sleep.asleep(clock)
        since_wake = self.sleep.minutes_since_wake(clock) / self.surge_tau_min[:, None]
        surge = self.surge_systolic[:, None] * since_wake * np.exp(1.0 - since_wake)
        factor = 1.0 - self.dipping[:, None] * asleep
        slow = self._slow(t)
        staff = _per_reading(by_staff, self.n, t.size)
        first_r = _per_reading(first, self.n, t.size) * staff
        wc = staff * self.white_coat_systolic[:, None] + first_r * self.first_reading_systolic[:, None]
        noise_s = _keyed_normal(self._seed, 0xB91, t, self.n)
        noise_d = _keyed_normal(self._seed, 0xB92, t, self.n)
        sys = self.day_systolic[:, None] * factor + surge + slow + wc + self.noise_systolic * noise_s
        dia = (
            self.day_diastolic[:, None] * factor
            + 0.5 * (surge + slow + wc)
            + self.noise_diastolic * (0.5 * noise_s + math.sqrt(0.75) * noise_d)
        )
        sys = np.clip(sys, 70.0, 250.0)
        dia = np.clip(np.minimum(dia, sys - 15.0), 35.0, 150.0)
        return BpSamples(sys, dia, dia + (sys - dia) / 3.0)


def _per_reading(flag: bool | npt.ArrayLike, n: int, k: int) -> FloatArray:
    a = np.asarray(flag, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    return np.asarray(np.broadcast_to(a, (n, k)), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Episodes:
    patient: npt.NDArray[np.int64]
    start: FloatArray
    duration: FloatArray
    depth: FloatArray


class Spo2:
    """Peripheral oxygen saturation (%) of ``n`` patients; :meth:`sample` gives values at any times.

    Desaturation episodes are drawn per hour of simulated time from ``(seed, hour)``, at each
    patient's apnoea rate (events per hour asleep: none/mild for most, 5–35 for some).
    """

    _EPISODE_MAX_MIN = 1.5

    def __init__(self, n: int, seed: int, *, start_clock_min: float = 0.0) -> None:
        rng = np.random.default_rng([seed, 0x5B0])
        self.n = n
        self._seed = seed
        self.start_clock_min = float(start_clock_min)
        self.sleep = SleepSchedule.draw(n, seed)
        self.baseline = rng.uniform(95.5, 98.5, n)
        severity = rng.uniform(0.0, 1.0, n)
        self.apnoea_per_hour = np.where(
            severity < 0.4, rng.uniform(0.0, 2.0, n), np.where(severity < 0.8, rng.uniform(5.0, 15.0, n), 0.0)
        )
        self.apnoea_per_hour = np.where(severity >= 0.8, rng.uniform(15.0, 35.0, n), self.apnoea_per_hour)
        self._slow = _SlowVariation(rng, n, np.full(n, 0.4))
        self.noise = 0.3
        self._episodes: dict[int, _Episodes] = {}

    def episodes(self, hour: int) -> _Episodes:
        """The desaturation episodes starting in simulated hour ``hour`` (minutes ``60h … 60h+60``)."""
        cached = self._episodes.get(hour)
        if cached is not None:
            return cached
        rng = np.random.default_rng([self._seed, 0x5B1, hour % (1 << 64)])
        mid_clock = np.array([(self.start_clock_min + 60.0 * hour + 30.0) % MINUTES_PER_DAY])
        rate = self.apnoea_per_hour * self.sleep.asleep(mid_clock)[:, 0]
        counts = rng.poisson(rate)
        m = int(counts.sum())
        ep = _Episodes(
            patient=np.repeat(np.arange(self.n, dtype=np.int64), counts),
            start=60.0 * hour + rng.uniform(0.0, 60.0, m),
            duration=rng.uniform(0.5, self._EPISODE_MAX_MIN, m),
            depth=np.zeros(m),
        )
        nadir = rng.uniform(85.0, 91.0, m)
        ep.depth[:] = np.maximum(self.baseline[ep.patient] - nadir, 0.0)
        if len(self._episodes) > 64:
            self._episodes.clear()
        self._episodes[hour] = ep
        return ep

    def sample(self, t_min: float | npt.ArrayLike) -> FloatArray:
        """SpO2 (%) at sorted times ``t_min`` (shape ``(k,)``) for every patient: ``(n, k)``."""
        t = _times(t_min)
        if t.size > 1 and np.any(np.diff(t) < 0):
            raise ValueError("times must be sorted")
        values = self.baseline[:, None] + self._slow(t) + self.noise * _keyed_normal(self._seed, 0x5B2, t, self.n)
        if t.size:
            dip = np.zeros((self.n, t.size), dtype=np.float64)
            first = math.floor((t[0] - self._EPISODE_MAX_MIN) / 60.0)
            for hour in range(first, math.floor(t[-1] / 60.0) + 1):
                self._add_dips(dip, t, self.episodes(hour))
            values -= dip
        return np.asarray(np.clip(values, SPO2_MIN, SPO2_MAX), dtype=np.float64)

    @staticmethod
    def _add_dips(dip: FloatArray, t: FloatArray, ep: _Episodes) -> None:
        j0 = np.searchsorted(t, ep.start, side="left")
        j1 = np.searchsorted(t, ep.start + ep.duration, side="right")
        lengths = j1 - j0
        total = int(lengths.sum())
        if total == 0:
            return
        ev = np.repeat(np.arange(lengths.size), lengths)
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        j = j0[ev] + offsets
        u = np.clip((t[j] - ep.start[ev]) / ep.duration[ev], 0.0, 1.0)
        # Slow fall to the nadir at 70 % of the episode, faster recovery.
        shape = np.where(u < 0.7, 0.5 - 0.5 * np.cos(math.pi * u / 0.7), 0.5 + 0.5 * np.cos(math.pi * (u - 0.7) / 0.3))
        np.maximum.at(dip, (ep.patient[ev], j), ep.depth[ev] * shape)
