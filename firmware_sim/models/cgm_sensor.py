"""CGM sensors and glucose meters observing a :class:`~firmware_sim.models.glucose.GlucoseSimulation`.

A CGM measures interstitial glucose: a first-order lag of plasma glucose (time constant 5–15 min per
patient), seen through a calibration error that drifts over the days of wear (multiplicative and
additive), coloured sensor noise (AR(1) between readings), a warm-up after insertion during which it
reports nothing, and a reporting range of 40–400 mg/dL. A glucose meter spot check reads the same
plasma trajectory with an error sized to ISO 15197:2013 (±15 mg/dL below 100 mg/dL, ±15 % above, for
95 % of readings; this model keeps ~99 % inside). Both are vectorised across the ward and
deterministic from a seed; sensor readings do not depend on how the calls are split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from firmware_sim.models.glucose import MINUTES_PER_DAY, FloatArray, GlucoseSimulation

CGM_LOW_MG_DL = 40.0
CGM_HIGH_MG_DL = 400.0
METER_LOW_MG_DL = 20.0
METER_HIGH_MG_DL = 600.0


class CgmFlag(IntFlag):
    NONE = 0
    WARMUP = 1
    """Sensor warming up (or not inserted yet): no value."""
    BELOW_RANGE = 2
    """Reading clipped at 40 mg/dL ("LO")."""
    ABOVE_RANGE = 4
    """Reading clipped at 400 mg/dL ("HI")."""


@dataclass(frozen=True, slots=True)
class CgmReadings:
    times_min: FloatArray
    """Shape ``(k,)``: minutes since the simulation start."""
    values: FloatArray
    """Shape ``(n, k)``: mg/dL (whole numbers), NaN when there is no value."""
    flags: npt.NDArray[np.uint8]
    """Shape ``(n, k)``: :class:`CgmFlag` bits."""


class CgmSensor:
    """One CGM per patient, reading every ``period_min`` minutes on a ward-wide grid ``0, P, 2P, …``.

    ``insertion_min`` (scalar or per patient) is when the sensor went in; readings before insertion
    plus the warm-up (60–120 min per patient unless ``warmup_min`` says) are absent and flagged.
    """

    def __init__(
        self,
        sim: GlucoseSimulation,
        seed: int,
        *,
        period_min: int = 5,
        insertion_min: float | FloatArray = 0.0,
        warmup_min: float | None = None,
    ) -> None:
        if not 1 <= period_min <= 15:
            raise ValueError(f"CGM period must be 1–15 min, not {period_min}")
        self._sim = sim
        n = sim.n
        params = np.random.default_rng([seed, 0xC61])
        self._noise_rng = np.random.default_rng([seed, 0xC62])
        self.period_min = period_min
        self.tau_min = params.uniform(5.0, 15.0, n)
        self.insertion_min = np.broadcast_to(np.asarray(insertion_min, dtype=np.float64), (n,)).copy()
        self.warmup_min = params.uniform(60.0, 120.0, n) if warmup_min is None else np.full(n, float(warmup_min))
        self._gain0 = params.normal(0.0, 0.04, n)
        self._gain_per_day = params.normal(0.0, 0.015, n)
        self._offset0 = params.normal(0.0, 4.0, n)
        self._offset_per_day = params.normal(0.0, 1.5, n)
        self._noise_sd_abs = params.uniform(3.0, 6.0, n)
        self._noise_cv = params.uniform(0.03, 0.06, n)
        self._noise_phi = math.exp(-period_min / 20.0)
        self._noise = self._noise_rng.standard_normal(n)
        self._ig = sim.plasma(sim.minute, sim.minute + 1)[:, 0].copy()
        self._ig_minute = sim.minute
        self._next_reading = math.ceil(sim.minute / period_min)

    @property
    def interstitial(self) -> FloatArray:
        """Interstitial glucose (mg/dL) at the last minute the sensor has integrated."""
        return self._ig.copy()

    def readings_until(self, t_min: float) -> CgmReadings:
        """Every reading due at or before ``t_min`` that was not returned yet."""
        last = math.floor(t_min / self.period_min)
        idx = np.arange(self._next_reading, last + 1)
        n = self._sim.n
        values = np.full((n, idx.size), np.nan)
        flags = np.zeros((n, idx.size), dtype=np.uint8)
        for j, r in enumerate(idx.tolist()):
            minute = r * self.period_min
            self._integrate_to(minute)
            values[:, j], flags[:, j] = self._read(float(minute))
        self._next_reading = last + 1
        return CgmReadings(idx.astype(np.float64) * self.period_min, values, flags)

    def _integrate_to(self, minute: int) -> None:
        if minute <= self._ig_minute:
            return
        g = self._sim.plasma(self._ig_minute, minute + 1)
        a = np.exp(-1.0 / self.tau_min)
        ig = self._ig
        for k in range(g.shape[1] - 1):
            ig = a * ig + (1.0 - a) * 0.5 * (g[:, k] + g[:, k + 1])
        self._ig = ig
        self._ig_minute = minute

    def _read(self, t: float) -> tuple[FloatArray, npt.NDArray[np.uint8]]:
        phi = self._noise_phi
        self._noise = phi * self._noise + math.sqrt(1.0 - phi * phi) * self._noise_rng.standard_normal(self._sim.n)
        age_days = np.maximum(t - self.insertion_min, 0.0) / MINUTES_PER_DAY
        gain = 1.0 + self._gain0 + self._gain_per_day * age_days
        offset = self._offset0 + self._offset_per_day * age_days
        raw = gain * self._ig + offset + self._noise * (self._noise_sd_abs + self._noise_cv * self._ig)
        value = np.rint(np.clip(raw, CGM_LOW_MG_DL, CGM_HIGH_MG_DL))
        flags = np.where(raw < CGM_LOW_MG_DL, CgmFlag.BELOW_RANGE, 0) | np.where(
            raw > CGM_HIGH_MG_DL, CgmFlag.ABOVE_RANGE, 0
        )
        warming = t < self.insertion_min + self.warmup_min
        value[warming] = np.nan
        flags = np.where(warming, CgmFlag.WARMUP, flags)
        return value, flags.astype(np.uint8)


def iso15197_within(reference: FloatArray, reading: FloatArray) -> npt.NDArray[np.bool_]:
    """ISO 15197:2013 accuracy: within ±15 mg/dL of the reference below 100 mg/dL, ±15 % above."""
    ref = np.asarray(reference, dtype=np.float64)
    err = np.abs(np.asarray(reading, dtype=np.float64) - ref)
    return np.asarray(np.where(ref < 100.0, err <= 15.0, err <= 0.15 * ref), dtype=np.bool_)


class GlucoseMeter:
    """Capillary spot checks: plasma glucose at ``t`` plus meter error, whole mg/dL in [20, 600].

    The error at a given time is a fixed draw from ``(seed, time)``, so a spot check does not
    depend on which other checks were made.
    """

    def __init__(self, seed: int, *, sd_abs_mg_dl: float = 5.0, cv: float = 0.05) -> None:
        self._seed = seed
        self.sd_abs_mg_dl = sd_abs_mg_dl
        self.cv = cv

    def spot_check(
        self, sim: GlucoseSimulation, t_min: float, patients: npt.NDArray[np.int64] | None = None
    ) -> FloatArray:
        """Meter readings at ``t_min`` for ``patients`` (default: the whole ward)."""
        g = sim.advance_to(t_min)
        z = np.random.default_rng([self._seed, 0xC63, round(t_min * 60.0) % (1 << 64)]).standard_normal(sim.n)
        reading = np.where(g < 100.0, g + self.sd_abs_mg_dl * z, g * (1.0 + self.cv * z))
        out = np.rint(np.clip(reading, METER_LOW_MG_DL, METER_HIGH_MG_DL))
        return np.asarray(out if patients is None else out[patients], dtype=np.float64)
