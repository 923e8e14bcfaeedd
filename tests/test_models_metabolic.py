"""The glucose, CGM, meter, blood-pressure and SpO2 models are physiological, measured from their output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_sim import cli
from firmware_sim.models.cgm_sensor import CgmFlag, CgmSensor, GlucoseMeter, iso15197_within
from firmware_sim.models.glucose import (
    Bolus,
    Exercise,
    GlucosePatients,
    GlucoseSimulation,
    Meal,
    Schedule,
    daily_routine,
    simulate,
    ward_night_with_hypo,
)
from firmware_sim.models.vitals import BloodPressure, Spo2

FloatArray = np.ndarray


def _type1(n: int, seed: int) -> GlucosePatients:
    return GlucosePatients.draw(n, seed, type1_fraction=1.0)


def _meal_with_bolus(p: GlucosePatients, carbs: float, bolus_factor: float, t: float = 120.0) -> list[Schedule]:
    return [
        Schedule(meals=[Meal(t, carbs)], boluses=[Bolus(t, bolus_factor * carbs / float(p.carb_ratio_g_u[i]))])
        for i in range(p.n)
    ]


# ---------------------------------------------------------------------- glucose


def test_glucose_stays_within_physiological_bounds_over_days_for_t1_and_t2() -> None:
    p = GlucosePatients.draw(300, 11, type1_fraction=0.5)
    g = simulate(p, daily_routine(p, 4, 11), 4 * 1440)
    assert np.isfinite(g).all()
    # Bounds held by the dynamics (counter-regulation, renal excretion), not by the safety clip.
    assert g.min() > 25.0 and g.max() < 590.0
    t1, t2 = g[p.type1], g[~p.type1]
    # A routine with occasional mistakes gives both hypos and hypers, mostly in range.
    assert 100.0 < t1.mean() < 180.0 and 110.0 < t2.mean() < 200.0
    assert (t1 < 70.0).any() and (g > 180.0).any()
    assert 0.5 < ((g >= 70.0) & (g <= 180.0)).mean() < 0.95


def test_meal_raises_glucose_with_a_realistic_delay() -> None:
    p = GlucosePatients.draw(40, 2, type1_fraction=0.5)
    g = simulate(p, [Schedule(meals=[Meal(120.0, 60.0)]) for _ in range(p.n)], 480)
    after = g[:, 120:]
    peak_delay = after.argmax(axis=1)
    rise = after.max(axis=1) - g[:, 120]
    assert (peak_delay >= 30).all() and (peak_delay <= 120).all()
    assert 45.0 <= float(np.median(peak_delay)) <= 90.0
    assert (rise > 40.0).all()
    # Glucose barely moves in the first 10 minutes (gastric emptying).
    assert (g[:, 130] - g[:, 120] < 0.2 * rise).all()


def test_insulin_lowers_glucose() -> None:
    p = _type1(30, 3)
    base = simulate(p, None, 300)
    bolus = simulate(p, [Schedule(boluses=[Bolus(60.0, 3.0)]) for _ in range(p.n)], 300)
    assert (np.abs(base[:, :61] - bolus[:, :61]) < 1e-9).all()
    drop = (base - bolus).max(axis=1)
    assert (drop > 15.0).all() and float(np.median(drop)) > 30.0
    fed = simulate(p, [Schedule(meals=[Meal(60.0, 60.0)]) for _ in range(p.n)], 300)
    covered = simulate(p, _meal_with_bolus(p, 60.0, 1.0, t=60.0), 300)
    assert (covered.max(axis=1) < fed.max(axis=1)).all()
    assert (covered[:, 180:].mean(axis=1) < fed[:, 180:].mean(axis=1) - 30.0).all()


def test_over_bolus_gives_a_hypo_and_a_missed_bolus_a_hyper() -> None:
    p = _type1(40, 4)
    over = simulate(p, _meal_with_bolus(p, 60.0, 4.0), 600)
    assert (over.min(axis=1) < 70.0).all()
    missed = simulate(p, [Schedule(meals=[Meal(120.0, 70.0)]) for _ in range(p.n)], 600)
    assert (missed.max(axis=1) > 180.0).all()
    scenario = ward_night_with_hypo(12, 5)
    night = simulate(scenario.patients, scenario.schedules, scenario.minutes, start_clock_min=scenario.start_clock_min)
    assert night[0].min() < 70.0
    assert np.median(night[1:].min(axis=1)) > 70.0


def test_exercise_and_dawn_phenomenon_show_in_the_trajectory() -> None:
    p = _type1(40, 6)
    fasting = simulate(p, None, 600)  # starts at midnight
    assert float(np.median(fasting[:, 7 * 60] - fasting[:, 3 * 60])) > 5.0
    moving = simulate(p, [Schedule(exercise=[Exercise(60.0, 60.0, 0.6)]) for _ in range(p.n)], 600)
    assert (fasting[:, 120] - moving[:, 120] > 10.0).all()


def test_streaming_matches_one_shot() -> None:
    p = GlucosePatients.draw(20, 7)
    sched = daily_routine(p, 1, 7)
    one_shot = simulate(p, sched, 1440)
    sim = GlucoseSimulation(p, sched, history_min=1441)
    for t in (0.0, 17.0, 17.5, 300.25, 301.0, 999.0, 1440.0):
        got = sim.advance_to(t)
        lo, hi = int(np.floor(t)), int(np.ceil(t))
        expected = one_shot[:, lo] + (t - lo) * (one_shot[:, hi] - one_shot[:, lo])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(sim.plasma(0, 1441), one_shot)
    # Inputs added while running act from their time on.
    live = GlucoseSimulation(p, None)
    live.advance_to(100.0)
    live.add(0, Schedule(meals=[Meal(110.0, 50.0)]))
    g = live.plasma(100, 300)
    assert g[0].max() - g[0, 0] > 30.0 and np.ptp(g[1]) < 15.0
    with pytest.raises(ValueError):
        live.add(0, Schedule(meals=[Meal(50.0, 50.0)]))


def test_glucose_is_deterministic_and_seeded() -> None:
    a = GlucosePatients.draw(10, 8)
    b = GlucosePatients.draw(10, 8)
    c = GlucosePatients.draw(10, 9)
    ga = simulate(a, daily_routine(a, 1, 8), 1440)
    np.testing.assert_array_equal(ga, simulate(b, daily_routine(b, 1, 8), 1440))
    gc = simulate(c, daily_routine(c, 1, 9), 1440)
    assert np.abs(ga - gc).mean() > 10.0
    # Different patients of one ward differ too.
    assert np.abs(ga[0] - ga[1]).mean() > 5.0


def test_a_ward_of_500_patients_simulates_a_day() -> None:
    p = GlucosePatients.draw(500, 10)
    g = simulate(p, daily_routine(p, 1, 10), 1440)
    assert g.shape == (500, 1441) and np.isfinite(g).all()


# ---------------------------------------------------------------------- CGM and meter


@pytest.fixture(scope="module")
def cgm_run() -> tuple[FloatArray, FloatArray, FloatArray]:
    p = GlucosePatients.draw(60, 12)
    minutes = 3 * 1440
    sim = GlucoseSimulation(p, daily_routine(p, 3, 12), history_min=minutes + 1)
    readings = CgmSensor(sim, 12, period_min=1).readings_until(minutes)
    return sim.plasma(0, minutes + 1), readings.values, readings.flags


def test_cgm_lags_plasma_glucose(cgm_run: tuple[FloatArray, FloatArray, FloatArray]) -> None:
    plasma, values, _ = cgm_run
    lags = []
    for g, v in zip(plasma, values, strict=True):
        ok = ~np.isnan(v)
        x, y = g[ok] - g[ok].mean(), v[ok] - v[ok].mean()
        xcorr = [
            float(np.dot(x[max(0, -lag) : x.size - max(0, lag)], y[max(0, lag) : y.size - max(0, -lag)]))
            for lag in range(-10, 40)
        ]
        lags.append(int(np.argmax(xcorr)) - 10)
    assert min(lags) > 0
    assert 4.0 <= float(np.median(lags)) <= 15.0


def test_cgm_error_is_realistic_after_warm_up(cgm_run: tuple[FloatArray, FloatArray, FloatArray]) -> None:
    plasma, values, flags = cgm_run
    # Warm-up: at least the first hour has no values, and those readings are flagged.
    assert np.isnan(values[:, :60]).all()
    assert ((flags[:, :60] & CgmFlag.WARMUP) != 0).all()
    assert not np.isnan(values[:, 150:]).any()
    ard = np.abs(values[:, 150:] - plasma[:, 150:]) / plasma[:, 150:]
    assert 0.08 <= float(ard.mean()) <= 0.15
    assert (np.nanmin(values) >= 40.0) and (np.nanmax(values) <= 400.0)


def test_cgm_streaming_matches_one_shot_and_is_seeded() -> None:
    p = GlucosePatients.draw(8, 13)
    sched = daily_routine(p, 1, 13)
    one = CgmSensor(GlucoseSimulation(p, sched), 13).readings_until(1440)
    sim = GlucoseSimulation(p, sched)
    cgm = CgmSensor(sim, 13)
    parts = [cgm.readings_until(t) for t in (3.0, 4.9, 5.0, 333.0, 1440.0)]
    np.testing.assert_array_equal(np.concatenate([r.times_min for r in parts]), one.times_min)
    np.testing.assert_array_equal(np.concatenate([r.values for r in parts], axis=1), one.values)
    assert one.times_min[1] - one.times_min[0] == 5.0
    other = CgmSensor(GlucoseSimulation(p, sched), 14).readings_until(1440)
    assert np.nanmean(np.abs(other.values - one.values)) > 1.0


def test_meter_spot_checks_meet_iso_15197() -> None:
    p = GlucosePatients.draw(100, 15)
    sim = GlucoseSimulation(p, daily_routine(p, 1, 15))
    meter = GlucoseMeter(15)
    refs, reads = [], []
    for t in np.arange(30.0, 1440.0, 47.0):
        reads.append(meter.spot_check(sim, float(t)))
        refs.append(sim.advance_to(float(t)))
    within = iso15197_within(np.array(refs), np.array(reads))
    assert within.mean() >= 0.95
    assert not np.array_equal(np.array(refs), np.array(reads))
    # A spot check for some patients is the same reading as for the whole ward.
    again = GlucoseMeter(15).spot_check(GlucoseSimulation(p, daily_routine(p, 1, 15)), 30.0, np.array([3, 7]))
    np.testing.assert_array_equal(again, reads[0][[3, 7]])


# ---------------------------------------------------------------------- blood pressure and SpO2


def test_blood_pressure_dips_at_night_and_shows_white_coat() -> None:
    bp = BloodPressure(200, 16)
    t = np.arange(0.0, 3 * 1440.0, 15.0)
    s = bp.sample(t)
    clock = t % 1440.0
    night = (clock >= 60.0) & (clock < 300.0)
    day = (clock >= 600.0) & (clock < 1260.0)
    dipping = 1.0 - s.systolic[:, night].mean(axis=1) / s.systolic[:, day].mean(axis=1)
    assert 0.10 <= float(dipping.mean()) <= 0.20
    assert (np.abs(dipping - 0.15) < 0.09).mean() > 0.95
    assert (s.diastolic < s.systolic).all()
    staff = bp.sample(t[:40], by_staff=True)
    first = bp.sample(t[:40], by_staff=True, first=True)
    assert (staff.systolic - s.systolic[:, :40]).mean() > 5.0
    assert (first.systolic >= staff.systolic).all() and (first.systolic > staff.systolic).mean() > 0.95
    # Streaming in pieces gives the same readings; seeds differ.
    np.testing.assert_array_equal(
        np.hstack([bp.sample(t[:7]).systolic, bp.sample(t[7:50]).systolic]), s.systolic[:, :50]
    )
    np.testing.assert_array_equal(BloodPressure(200, 16).sample(t[:50]).systolic, s.systolic[:, :50])
    assert np.abs(BloodPressure(200, 17).sample(t[:50]).systolic - s.systolic[:, :50]).mean() > 5.0


def test_spo2_has_desaturations_during_sleep_and_stays_in_bounds() -> None:
    spo2 = Spo2(80, 18)
    t = np.arange(0.0, 1440.0, 1.0 / 6.0)  # every 10 s for a day from midnight
    v = spo2.sample(t)
    assert v.min() >= 70.0 and v.max() <= 100.0
    assert 95.0 <= float(np.median(v)) <= 99.0
    clock = t % 1440.0
    night = (clock >= 60.0) & (clock < 300.0)
    day = (clock >= 600.0) & (clock < 1200.0)
    apnoeic = spo2.apnoea_per_hour > 10.0
    assert apnoeic.any()
    # Episodes reach 85–91 % at night for apnoeic patients, never by day.
    assert (v[apnoeic][:, night].min(axis=1) < 91.0).all()
    assert v[:, night].min() >= 83.0
    assert (v[:, day] > 92.0).all()
    # Counting dips below 92 % in the night window recovers the apnoea rate's order of magnitude.
    below = v[apnoeic][:, night] < 92.0
    onsets = (below[:, 1:] & ~below[:, :-1]).sum(axis=1) / 4.0
    assert float(np.median(onsets)) > 3.0
    np.testing.assert_array_equal(np.hstack([spo2.sample(t[:1000]), spo2.sample(t[1000:3000])]), v[:, :3000])
    np.testing.assert_array_equal(Spo2(80, 18).sample(t[:3000]), v[:, :3000])
    assert not np.array_equal(Spo2(80, 19).sample(t[:3000]), v[:, :3000])


# ---------------------------------------------------------------------- ds4h-sim signal


def test_cli_signal_metabolic_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--seconds", "86400", "--seed", "3"]
    for kind in ("glucose", "cgm", "bp", "spo2"):
        assert cli.main(["signal", kind, *common, "--out", str(tmp_path / f"{kind}.csv")]) == 0
    capsys.readouterr()
    glucose = np.genfromtxt(tmp_path / "glucose.csv", delimiter=",", names=True)
    assert glucose.size == 1440 and np.ptp(np.diff(glucose["time"])) == 0.0
    assert glucose["value"].min() > 40.0 and glucose["value"].max() < 400.0
    assert np.ptp(glucose["value"]) > 50.0  # meals show
    cgm = np.genfromtxt(tmp_path / "cgm.csv", delimiter=",", names=True)
    assert cgm.size == 288 and np.isnan(cgm["value"][:12]).all() and not np.isnan(cgm["value"][30:]).any()
    bp = np.genfromtxt(tmp_path / "bp.csv", delimiter=",", names=True)
    assert bp.dtype.names == ("time", "systolic", "diastolic") and bp.size == 96
    assert (bp["diastolic"] < bp["systolic"]).all()
    spo2 = np.genfromtxt(tmp_path / "spo2.csv", delimiter=",", names=True)
    assert spo2.size == 86400 and spo2["value"].min() >= 70.0 and spo2["value"].max() <= 100.0
