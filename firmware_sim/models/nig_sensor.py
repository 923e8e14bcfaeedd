"""A research non-invasive glucose sensor: a microwave resonator on the skin, vectorised across a ward.

Every sweep (one a minute on the device) measures S21 — magnitude (dB) and phase (degrees) — at K
frequencies (64 points from 1.00 GHz in 80 MHz steps by default) and derives a glucose estimate
(mg/dL) from it. See ``docs/research-sensor.md`` for the frame format and the rules around it.

**The transfer model is SYNTHETIC.** It is made up so that a simulated trial has raw spectra whose
features follow the patient's glucose; it is not a model of any real sensor and says nothing about
whether microwave glucose sensing works. Per patient ``i`` and sweep:

- interstitial glucose ``G`` follows plasma glucose with a first-order lag (time constant 6–12 min);
- skin temperature ``T`` = 33.5 °C + a daily swing (±0.6 °C) + a slow random walk (Ornstein–Uhlenbeck,
  σ 0.3 °C, 30 min);
- contact (probe pressure, sweat) is an Ornstein–Uhlenbeck process ``c`` (σ 1, 10 min) that moves the
  resonance by ``CONTACT_HZ`` per unit and changes the notch depth;
- the resonance is a notch with a Lorentzian response::

      f0 = F0_HZ + SHIFT_HZ_PER_MG_DL · (G − 100) + TEMP_HZ_PER_C · (T − 33.5) + CONTACT_HZ · c + offset_i
      Q  = Q0 + Q_PER_MG_DL · (G − 100)
      S21(f) = L_i · (1 − d / (1 + 2jQ (f − f0) / f0)) · exp(−j 2π f τ_i) + noise

  with depth ``d`` (0.75 + 0.05·c, clipped), insertion loss ``L_i`` (−0.5 to −1.5 dB), cable delay
  ``τ_i`` (0.15–0.25 ns) and complex Gaussian noise (σ 0.004, about −48 dB);
- the device's estimate inverts that model from the frame alone: the notch centre is the centroid of
  the absorption ``1 − |S21|²`` around its maximum, corrected for its own skin-temperature reading
  (σ 0.1 °C), and mapped back to mg/dL with the nominal coefficients — so contact, the per-patient
  offset and the notch shape show up as its own error.

Deterministic from the seed: the same seed, patients and sweep times give the same frames.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

POINTS: Final = 64
F_START_HZ: Final = 1_000_000_000
F_STEP_HZ: Final = 80_000_000
F0_HZ: Final = 3.5e9
"""Resonance at 100 mg/dL, 33.5 °C, nominal contact."""
SHIFT_HZ_PER_MG_DL: Final = -2.0e6
Q0: Final = 25.0
Q_PER_MG_DL: Final = -0.02
TEMP_REF_C: Final = 33.5
TEMP_HZ_PER_C: Final = -3.0e6
CONTACT_HZ: Final = 4.0e6
NOISE: Final = 0.004
MAGNITUDE_SCALE: Final = 100
"""Counts per dB in the frame (0.01 dB steps)."""
PHASE_SCALE: Final = 100
"""Counts per degree in the frame (0.01° steps)."""

_DAY_S: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Sweeps:
    """One sweep of every patient: arrays of shape ``(n, K)`` or ``(n,)``."""

    t_s: float
    frequencies_hz: npt.NDArray[np.int64]
    magnitude_db: FloatArray
    phase_deg: FloatArray
    estimate_mg_dl: FloatArray
    """The device's derived estimate (research-only)."""
    interstitial_mg_dl: FloatArray
    """Ground truth the sweep was made from (not sent)."""
    f0_hz: FloatArray
    q: FloatArray
    skin_temp_c: FloatArray


class NigSensor:
    """``n`` sensors (one per patient) sharing one random generator; call :meth:`sweep` in time order."""

    def __init__(
        self,
        n: int,
        seed: int,
        *,
        points: int = POINTS,
        f_start_hz: int = F_START_HZ,
        f_step_hz: int = F_STEP_HZ,
    ) -> None:
        if n < 1 or points < 3:
            raise ValueError("need at least one sensor and three frequency points")
        self.n = n
        self.points = points
        self.f_start_hz = f_start_hz
        self.f_step_hz = f_step_hz
        self.frequencies_hz = f_start_hz + np.arange(points, dtype=np.int64) * f_step_hz
        params, self._rng = np.random.default_rng([seed, 0x4E16]).spawn(2)
        self.tau_isf_s = params.uniform(6.0, 12.0, n) * 60.0
        self.offset_hz = params.normal(0.0, 4.0e6, n)
        self.loss = 10 ** (params.uniform(-1.5, -0.5, n) / 20)
        self.delay_s = params.uniform(0.15e-9, 0.25e-9, n)
        self.temp_phase = params.uniform(0.0, 2 * math.pi, n)
        self._t: float | None = None
        self._isf = np.zeros(n)
        self._temp_walk = params.normal(0.0, 0.3, n)
        self._contact = params.normal(0.0, 1.0, n)

    def _ou(self, x: FloatArray, dt: float, tau_s: float, sigma: float) -> FloatArray:
        a = math.exp(-dt / tau_s)
        return x * a + self._rng.normal(0.0, sigma * math.sqrt(1 - a * a), self.n)

    def sweep(self, t_s: float, plasma_mg_dl: npt.ArrayLike) -> Sweeps:
        """The sweep of every patient at time ``t_s`` (seconds, non-decreasing), given plasma glucose now."""
        plasma = np.broadcast_to(np.asarray(plasma_mg_dl, dtype=np.float64), (self.n,))
        if self._t is None:
            self._isf = plasma.copy()
        else:
            dt = t_s - self._t
            if dt < 0:
                raise ValueError("sweeps must come in time order")
            self._isf = self._isf + (plasma - self._isf) * (1 - np.exp(-dt / self.tau_isf_s))
            self._temp_walk = self._ou(self._temp_walk, dt, 1800.0, 0.3)
            self._contact = self._ou(self._contact, dt, 600.0, 1.0)
        self._t = t_s
        g = self._isf
        temp = TEMP_REF_C + 0.6 * np.sin(2 * math.pi * t_s / _DAY_S + self.temp_phase) + self._temp_walk
        f0 = (
            F0_HZ
            + SHIFT_HZ_PER_MG_DL * (g - 100.0)
            + TEMP_HZ_PER_C * (temp - TEMP_REF_C)
            + CONTACT_HZ * self._contact
            + self.offset_hz
        )
        q = Q0 + Q_PER_MG_DL * (g - 100.0)
        depth = np.clip(0.75 + 0.05 * self._contact, 0.4, 0.95)
        f = self.frequencies_hz.astype(np.float64)[None, :]
        x = 2j * q[:, None] * (f - f0[:, None]) / f0[:, None]
        s21 = self.loss[:, None] * (1 - depth[:, None] / (1 + x)) * np.exp(-2j * math.pi * f * self.delay_s[:, None])
        s21 = s21 + self._rng.normal(0.0, NOISE, s21.shape) + 1j * self._rng.normal(0.0, NOISE, s21.shape)
        mag_db = 20 * np.log10(np.maximum(np.abs(s21), 1e-6))
        phase = np.angle(s21, deg=True)
        temp_read = temp + self._rng.normal(0.0, 0.1, self.n)
        estimate = self.estimate(mag_db, temp_read)
        return Sweeps(t_s, self.frequencies_hz, mag_db, phase, estimate, g.copy(), f0, q, temp)

    def estimate(self, magnitude_db: FloatArray, skin_temp_c: FloatArray) -> FloatArray:
        """The device's glucose estimate (mg/dL) from its magnitude sweeps and skin-temperature readings."""
        f0 = resonance_hz(self.frequencies_hz, magnitude_db)
        g = 100.0 + (f0 - F0_HZ - TEMP_HZ_PER_C * (skin_temp_c - TEMP_REF_C)) / SHIFT_HZ_PER_MG_DL
        return np.clip(g, 0.0, 2000.0)


def resonance_hz(frequencies_hz: npt.ArrayLike, magnitude_db: npt.ArrayLike, half_width: int = 3) -> FloatArray:
    """Notch centre per row: the centroid of the absorption ``1 − |S21|²/max|S21|²`` within ``half_width``
    points of the deepest point (vectorised over rows)."""
    freqs = np.asarray(frequencies_hz, dtype=np.float64)
    mag = np.atleast_2d(np.asarray(magnitude_db, dtype=np.float64))
    power = 10 ** (mag / 10)
    absorption = 1 - power / power.max(axis=1, keepdims=True)
    k = np.argmax(absorption, axis=1)
    offsets = np.arange(-half_width, half_width + 1)
    idx = np.clip(k[:, None] + offsets[None, :], 0, freqs.size - 1)
    w = np.take_along_axis(absorption, idx, axis=1)
    f0: FloatArray = (w * freqs[idx]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return f0


# --- the wire frame (docs/research-sensor.md), written from the spec, independently of the gateway ----
_HEADER = struct.Struct("<2sBBHHHHQI")


def encode_s21(
    f_start_hz: int,
    f_step_hz: int,
    magnitude_db: npt.ArrayLike,
    phase_deg: npt.ArrayLike,
    *,
    magnitude_scale: int = MAGNITUDE_SCALE,
    phase_scale: int = PHASE_SCALE,
) -> bytes:
    """One sweep as the binary ``nig:s21`` frame: 24-byte header, K int16 magnitudes, K int16 phases."""
    mag = np.clip(np.rint(np.asarray(magnitude_db, dtype=np.float64) * magnitude_scale), -32768, 32767)
    ph = np.clip(np.rint(np.asarray(phase_deg, dtype=np.float64) * phase_scale), -32768, 32767)
    head = _HEADER.pack(b"NI", 1, 0, mag.size, magnitude_scale, phase_scale, 0, f_start_hz, f_step_hz)
    return head + mag.astype("<i2").tobytes() + ph.astype("<i2").tobytes()
