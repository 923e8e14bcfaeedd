"""Simple, deterministic models of one patient's signals.

Every model draws from its own ``numpy.random.Generator`` so a patient is reproducible from
``(seed, patient_index)``. Nothing here knows about devices or the wire: :mod:`firmware_sim.fleet`
turns these values into batch maps.

- heart rate (/min): bounded random walk around a per-patient baseline, one value per second;
- glucose (mg/dL): slow meal-driven curve (rise, then a post-prandial undershoot) that sometimes
  falls below 70 mg/dL, sampled by a CGM (correlated sensor noise) and by spot checks;
- SpO2 (%): integer 94–99 with slow drift, one value per second;
- ECG (µV, 250 Hz): a PQRST beat train built as a sum of Gaussians on a continuous beat phase,
  generated one frame (normally 1 s) at a time, continuous across frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ECG_FS_HZ = 250
ECG_PERIOD_NS = 1_000_000_000 // ECG_FS_HZ

HR_MIN = 40.0
HR_MAX = 180.0
SPO2_MIN = 94
SPO2_MAX = 99
HYPO_MG_DL = 70.0
"""Readings below this glucose level are flagged ``alert: true`` by the device."""

_SIM_MINUTE = 60.0


class HeartRate:
    """Mean-reverting random walk around ``baseline`` bpm, clamped to [40, 180], stepped once a second."""

    def __init__(self, rng: np.random.Generator, baseline: float, *, step_sd: float = 1.2) -> None:
        self._rng = rng
        self.baseline = float(baseline)
        self._step_sd = step_sd
        self.value = float(baseline)

    def step(self) -> float:
        """Advance one second and return the new heart rate (bpm, float)."""
        pull = 0.05 * (self.baseline - self.value)
        self.value = float(np.clip(self.value + pull + self._rng.normal(0.0, self._step_sd), HR_MIN, HR_MAX))
        return self.value


class Spo2:
    """Oxygen saturation, integer percent in [94, 99], slow drift plus occasional dips."""

    def __init__(self, rng: np.random.Generator, baseline: float) -> None:
        self._rng = rng
        self.baseline = float(baseline)
        self._level = float(baseline)

    def step(self) -> int:
        self._level += 0.02 * (self.baseline - self._level) + self._rng.normal(0.0, 0.15)
        noisy = self._level + self._rng.normal(0.0, 0.4)
        return int(np.clip(round(noisy), SPO2_MIN, SPO2_MAX))


class Glucose:
    """Blood glucose as a function of simulated time (seconds since the patient's start).

    ``level(t)`` is a baseline plus one response per meal: a rise peaking about 45 min after the
    meal and an undershoot about 2.5 h after it, deep enough that a patient with a low baseline
    dips under 70 mg/dL now and then. Meals are drawn lazily, in time order, from the model's own
    generator, so the curve is deterministic for a seed whatever the sampling pattern.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        baseline: float,
        *,
        meal_interval_s: float = 5 * 3600.0,
        meal_rise: tuple[float, float] = (40.0, 90.0),
        undershoot_ratio: float = 0.55,
    ) -> None:
        self._rng, self._cgm_rng, self._meter_rng = rng.spawn(3)
        self.baseline = float(baseline)
        self._meal_interval_s = meal_interval_s
        self._meal_rise = meal_rise
        self._undershoot_ratio = undershoot_ratio
        self._meals: list[tuple[float, float]] = []
        """(time_s, rise mg/dL), in time order."""
        self._next_meal_s = float(self._rng.uniform(0.1, 1.0) * meal_interval_s)
        self._cgm_noise = 0.0

    def _meals_until(self, t_s: float) -> None:
        while self._next_meal_s <= t_s:
            self._meals.append((self._next_meal_s, float(self._rng.uniform(*self._meal_rise))))
            self._next_meal_s += float(self._rng.uniform(0.6, 1.4) * self._meal_interval_s)
        # Meals older than 8 h no longer contribute (both kernels have decayed to ~0).
        while self._meals and self._meals[0][0] < t_s - 8 * 3600.0:
            self._meals.pop(0)

    def level(self, t_s: float) -> float:
        """True glucose (mg/dL) at simulated time ``t_s`` (non-decreasing across calls)."""
        self._meals_until(t_s)
        g = self.baseline
        for meal_t, rise in self._meals:
            tau = (t_s - meal_t) / _SIM_MINUTE
            if tau <= 0:
                continue
            g += rise * _gamma_kernel(tau, 45.0)
            g -= rise * self._undershoot_ratio * _gamma_kernel(tau, 150.0, order=3.0)
        return max(g, 30.0)

    def cgm(self, t_s: float) -> int:
        """A CGM (interstitial) reading: the level plus correlated sensor noise, integer mg/dL."""
        self._cgm_noise = 0.7 * self._cgm_noise + float(self._cgm_rng.normal(0.0, 3.0))
        return int(np.clip(round(self.level(t_s) + self._cgm_noise), 40, 400))

    def spot_check(self, t_s: float) -> int:
        """A capillary finger-stick reading: the level plus independent meter noise, integer mg/dL."""
        return int(np.clip(round(self.level(t_s) * float(self._meter_rng.normal(1.0, 0.04))), 20, 600))


def _gamma_kernel(tau_min: float, peak_min: float, order: float = 1.0) -> float:
    """A gamma-shaped bump of height 1 peaking at ``peak_min`` minutes."""
    x = tau_min / peak_min
    return float((x * math.exp(1.0 - x)) ** order)


@dataclass(frozen=True, slots=True)
class _Wave:
    centre: float
    """Position in the beat, as a fraction of the RR interval (R at 0.4)."""
    width: float
    """Gaussian sigma, seconds."""
    amplitude: float
    """µV."""


_PQRST = (
    _Wave(0.22, 0.025, 120.0),  # P
    _Wave(0.37, 0.008, -120.0),  # Q
    _Wave(0.40, 0.010, 1100.0),  # R
    _Wave(0.43, 0.010, -250.0),  # S
    _Wave(0.68, 0.045, 280.0),  # T
)


class Ecg:
    """Synthetic single-lead ECG (250 Hz unless ``fs`` says otherwise), int32 µV.

    The beat phase is accumulated across samples (``cumsum`` of HR/60/fs), so the beat train is
    continuous across frames and its rate follows the heart rate given for each frame. Each wave is
    a Gaussian in time around its place in the beat; the wave widths are in seconds and stay put
    when the heart rate changes, as in a real ECG.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        gain: float = 1.0,
        noise_uv: float = 8.0,
        wander_uv: float = 40.0,
        fs: int = ECG_FS_HZ,
    ) -> None:
        self._rng = rng
        self.fs = fs
        self.gain = gain
        self.noise_uv = noise_uv
        self.wander_uv = wander_uv
        self._phase = float(rng.uniform(0.0, 1.0))
        """Beats elapsed (fractional), at the next sample to generate."""
        self._n = 0
        """Samples generated so far (for the baseline wander)."""

    def frame(self, hr_bpm: float, n: int | None = None) -> npt.NDArray[np.int32]:
        """The next ``n`` samples (default: one second) at a heart rate of ``hr_bpm``."""
        n = self.fs if n is None else n
        beats_per_sample = hr_bpm / 60.0 / self.fs
        phase = self._phase + beats_per_sample * np.arange(n, dtype=np.float64)
        self._phase = float(self._phase + beats_per_sample * n)
        rr_s = 60.0 / hr_bpm
        frac = phase - np.floor(phase)
        sig = np.zeros(n, dtype=np.float64)
        for w in _PQRST:
            # Signed distance to the wave centre in the nearest beat, in seconds.
            d = ((frac - w.centre + 0.5) % 1.0 - 0.5) * rr_s
            sig += w.amplitude * np.exp(-0.5 * (d / w.width) ** 2)
        idx = self._n + np.arange(n, dtype=np.float64)
        self._n += n
        if self.wander_uv:
            sig += self.wander_uv * np.sin(2.0 * math.pi * 0.25 * idx / self.fs)
        sig *= self.gain
        if self.noise_uv:
            sig += self._rng.normal(0.0, self.noise_uv, n)
        return np.rint(sig).astype(np.int32)


class Patient:
    """One simulated patient: the models above with per-patient parameters drawn from the seed."""

    def __init__(self, index: int, seed: int) -> None:
        self.index = index
        root = np.random.default_rng([seed, index])
        params, hr_rng, spo2_rng, glu_rng, ecg_rng, self._schedule_rng = root.spawn(6)
        self.hr_baseline = float(params.uniform(60.0, 90.0))
        self.spo2_baseline = float(params.uniform(95.5, 98.5))
        # A third of the patients run low, so hypoglycaemia alerts show up in a demo.
        low = bool(params.uniform() < 0.34)
        self.glucose_baseline = float(params.uniform(78.0, 92.0) if low else params.uniform(95.0, 130.0))
        self.heart_rate = HeartRate(hr_rng, self.hr_baseline)
        self.spo2 = Spo2(spo2_rng, self.spo2_baseline)
        self.glucose = Glucose(glu_rng, self.glucose_baseline)
        self.ecg = Ecg(ecg_rng, gain=float(params.uniform(0.8, 1.2)))

    def schedule_uniform(self, low: float, high: float) -> float:
        """A draw for the patient's own routine (e.g. when the next spot check happens)."""
        return float(self._schedule_rng.uniform(low, high))
