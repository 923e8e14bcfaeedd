"""``ds4h-sim signal KIND … --out FILE.csv``: write one generated signal as CSV for other tools.

The CSV has a header ``time,value`` and one row per sample (or beat): ``time`` in seconds from the
start of the signal, ``value`` in the kind's unit. A one-line JSON summary goes to stdout.

A kind is one entry of :data:`KINDS`: a function taking the parsed arguments and returning a
:class:`Signal`. To add a kind, write its generator (import its model lazily inside the function) and
add it to the table; kind-specific options go in :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from firmware_sim.argtypes import non_negative_float, non_negative_int, positive_float

if TYPE_CHECKING:
    from firmware_sim.models.beats import CardiacProfile
    from firmware_sim.models.glucose import GlucosePatients, Schedule


@dataclass(frozen=True, slots=True)
class Signal:
    """A generated signal: sample (or beat) times and values."""

    time_s: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    unit: str
    """UCUM-ish unit of ``value``: ``uV``, ``ms``, ``/min`` …"""
    decimals: int = 3
    """Decimals written for ``value``."""
    columns: tuple[str, ...] = ("value",)
    """CSV column names of ``value``; with more than one, ``value`` has shape ``(rows, columns)``."""


SignalGenerator = Callable[[argparse.Namespace], Signal]


# ---------------------------------------------------------------------- cardiac kinds


def _cardiac_profile(args: argparse.Namespace) -> CardiacProfile:
    from firmware_sim.models.beats import STREAM_SCENARIO, CardiacProfile, patient_rng, random_af_episodes

    episodes = random_af_episodes(patient_rng(args.seed, STREAM_SCENARIO), args.af_episodes, args.seconds)
    return CardiacProfile.draw(
        args.seed,
        hr_bpm=args.hr,
        ectopic_per_min=args.ectopic_per_min,
        af_episodes=episodes,
    )


def _ecg(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.ecg import EcgProfile, EcgSynth

    cardiac = _cardiac_profile(args)
    rate = int(args.rate or 250)
    ecg = EcgProfile.draw(args.seed, motion_per_hour=args.motion_per_hour, lead_off_per_hour=args.lead_off_per_hour)
    synth = EcgSynth([cardiac], [ecg], [args.seed], fs=rate)
    n = round(args.seconds * rate)
    chunk = synth.next(n)
    return Signal(np.arange(n, dtype=np.float64) / rate, np.rint(chunk.uv[0]), "uV", decimals=0)


def _rr(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.beats import BeatTrain

    cardiac = _cardiac_profile(args)
    beats = BeatTrain([cardiac], [args.seed]).take_until(args.seconds)[0]
    return Signal(beats.time_s, beats.rr_s * 1000.0, "ms", decimals=1)


def _hr(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.beats import BeatTrain

    cardiac = _cardiac_profile(args)
    rate = float(args.rate or 1.0)
    train = BeatTrain([cardiac], [args.seed])
    times = np.arange(round(args.seconds * rate), dtype=np.float64) / rate
    hr = np.array([train.heart_rate(float(t))[0] for t in times])
    return Signal(times, hr, "/min", decimals=1)


# ---------------------------------------------------------------------- metabolic and vascular kinds
# Time 0 is midnight; glucose kinds follow the patient's seeded daily routine (meals, boluses, exercise).


def _sample_times(args: argparse.Namespace, default_rate_hz: float) -> npt.NDArray[np.float64]:
    rate = float(args.rate or default_rate_hz)
    return np.arange(math.ceil(args.seconds * rate - 1e-9), dtype=np.float64) / rate


def _glucose_patient(args: argparse.Namespace) -> tuple[GlucosePatients, list[Schedule]]:
    from firmware_sim.models.glucose import GlucosePatients, daily_routine

    patients = GlucosePatients.draw(1, args.seed, type1_fraction=1.0 if args.diabetes_type == 1 else 0.0)
    return patients, daily_routine(patients, args.seconds / 86400.0, args.seed)


def _glucose(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.glucose import simulate

    patients, schedules = _glucose_patient(args)
    times = _sample_times(args, 1.0 / 60.0)
    minutes = math.ceil(args.seconds / 60.0)
    trajectory = simulate(patients, schedules, minutes)[0]
    value = np.interp(times / 60.0, np.arange(minutes + 1, dtype=np.float64), trajectory)
    return Signal(times, value, "mg/dL", decimals=1)


def _cgm(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.cgm_sensor import CgmSensor
    from firmware_sim.models.glucose import GlucoseSimulation

    patients, schedules = _glucose_patient(args)
    period_min = max(1, min(15, round(1.0 / float(args.rate or 1.0 / 300.0) / 60.0)))
    sim = GlucoseSimulation(patients, schedules)
    readings = CgmSensor(sim, args.seed, period_min=period_min).readings_until((args.seconds - 1e-6) / 60.0)
    # Warm-up readings are written as nan.
    return Signal(readings.times_min * 60.0, readings.values[0], "mg/dL", decimals=0)


def _bp(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.vitals import BloodPressure

    times = _sample_times(args, 1.0 / 900.0)
    bp = BloodPressure(1, args.seed).sample(times / 60.0)
    value = np.column_stack([bp.systolic[0], bp.diastolic[0]])
    return Signal(times, np.rint(value), "mm[Hg]", decimals=0, columns=("systolic", "diastolic"))


def _spo2(args: argparse.Namespace) -> Signal:
    from firmware_sim.models.vitals import Spo2

    times = _sample_times(args, 1.0)
    return Signal(times, Spo2(1, args.seed).sample(times / 60.0)[0], "%", decimals=1)


KINDS: dict[str, SignalGenerator] = {
    "ecg": _ecg,  # µV at --rate Hz (default 250)
    "rr": _rr,  # beat (R-peak) times and the RR interval ending at each beat, ms
    "hr": _hr,  # heart rate (/min) over the last 5 s of beats, at --rate Hz (default 1)
    "glucose": _glucose,  # plasma glucose, mg/dL, at --rate Hz (default 1/60: one per minute)
    "cgm": _cgm,  # CGM readings, mg/dL, every 1/--rate s (default 300 s), nan while warming up
    "bp": _bp,  # systolic and diastolic columns, mmHg, at --rate Hz (default 1/900: every 15 min)
    "spo2": _spo2,  # SpO2, %, at --rate Hz (default 1)
}


# ---------------------------------------------------------------------- argument parsing


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "signal",
        help="write a generated signal (time, value) as CSV",
        description="Generate one patient's signal from the physiology models and write it as CSV "
        "(header `time,value`; time in seconds, value in the kind's unit). Deterministic from --seed.",
    )
    p.add_argument("kind", choices=sorted(KINDS), help="signal to generate")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--seconds", type=positive_float, default=60.0, help="duration, s (default: 60)")
    p.add_argument("--rate", type=positive_float, help="sampling rate, Hz (default: the kind's own)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="patient seed (default: 1)")
    # cardiac options (ecg, rr, hr)
    p.add_argument("--hr", type=positive_float, help="mean sinus heart rate, /min (default: the patient's)")
    p.add_argument("--af-episodes", type=non_negative_int, default=0, help="atrial-fibrillation episodes")
    p.add_argument("--ectopic-per-min", type=non_negative_float, default=0.0, help="ectopic beats per minute")
    p.add_argument("--motion-per-hour", type=non_negative_float, default=0.0, help="ECG motion-artefact bursts")
    p.add_argument("--lead-off-per-hour", type=non_negative_float, default=0.0, help="ECG lead-off segments")
    # glucose options (glucose, cgm)
    p.add_argument("--diabetes-type", type=int, choices=(1, 2), default=1, help="type 1 or 2 (default: 1)")


def write_csv(path: Path, signal: Signal) -> None:
    data = np.column_stack([signal.time_s, signal.value])
    fmt = ("%.6f", *([f"%.{signal.decimals}f"] * len(signal.columns)))
    header = ",".join(("time", *signal.columns))
    np.savetxt(path, data, fmt=fmt, delimiter=",", header=header, comments="")


def run(args: argparse.Namespace) -> int:
    signal = KINDS[args.kind](args)
    write_csv(args.out, signal)
    summary = {"kind": args.kind, "rows": len(signal.time_s), "unit": signal.unit, "out": str(args.out)}
    print(json.dumps(summary), flush=True)
    return 0
