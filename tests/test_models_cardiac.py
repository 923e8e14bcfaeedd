"""The cardiac models (beat train and ECG) are physiological, measured from the generated signals.

R peaks are found by a small detector written here (band-pass by a difference of moving averages,
threshold, refractory period), not read from the model; heart rate, RR irregularity, ectopic
short–long pairs and P waves are measured on what it finds.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from firmware_sim import cli
from firmware_sim.models.beats import BeatKind, BeatTrain, CardiacProfile, heart_rate_from_beats
from firmware_sim.models.ecg import EcgProfile, EcgSynth

REPO = Path(__file__).resolve().parent.parent
FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------- measuring tools


def _moving_average(x: FloatArray, width: int) -> FloatArray:
    return np.convolve(x, np.ones(max(width, 1)) / max(width, 1), mode="same")


def detect_r_peaks(x: FloatArray, fs: float) -> FloatArray:
    """R-peak times (s): QRS band by a difference of moving averages, threshold, 250 ms refractory."""
    band = _moving_average(x, round(0.016 * fs)) - _moving_average(x, round(0.12 * fs))
    threshold = 0.4 * np.percentile(band, 99.5)
    above = np.flatnonzero(band > threshold)
    groups = np.split(above, np.flatnonzero(np.diff(above) > 1) + 1)
    half = round(0.04 * fs)
    peaks: list[int] = []
    for g in groups:
        if g.size == 0:
            continue
        c = int(g[np.argmax(band[g])])
        lo, hi = max(c - half, 0), min(c + half + 1, x.size)
        r = lo + int(np.argmax(x[lo:hi]))
        if peaks and r - peaks[-1] < 0.25 * fs:
            if x[r] > x[peaks[-1]]:
                peaks[-1] = r
            continue
        peaks.append(r)
    result: FloatArray = np.asarray(peaks, dtype=np.float64) / fs
    return result


def ecg(profile: CardiacProfile, seed: int, seconds: float, fs: int, **ecg_overrides: float) -> FloatArray:
    synth = EcgSynth([profile], [EcgProfile.draw(seed, **ecg_overrides)], [seed], fs=fs)
    uv: FloatArray = synth.next(round(seconds * fs)).uv[0]
    return uv


def rolling_cv_af(peaks: FloatArray, *, beats: int = 12, threshold: float = 0.12) -> list[tuple[float, float]]:
    """AF detector: intervals where the CV of the last ``beats`` RR intervals exceeds ``threshold``."""
    rr = np.diff(peaks)
    found: list[tuple[float, float]] = []
    for i in range(beats, rr.size + 1):
        w = rr[i - beats : i]
        if w.std() / w.mean() > threshold:
            start, end = float(peaks[i - beats]), float(peaks[i])
            if found and start <= found[-1][1]:
                found[-1] = (found[-1][0], end)
            else:
                found.append((start, end))
    return found


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]], total: float) -> float:
    """Intersection over union of two sets of intervals, on a 10 ms grid."""
    grid = np.arange(0.0, total, 0.01)
    ma = np.zeros(grid.size, dtype=bool)
    mb = np.zeros(grid.size, dtype=bool)
    for s, e in a:
        ma |= (grid >= s) & (grid < e)
    for s, e in b:
        mb |= (grid >= s) & (grid < e)
    return float((ma & mb).sum() / (ma | mb).sum())


# ---------------------------------------------------------------------------- heart rate


@pytest.mark.parametrize("fs", [130, 250, 500])
@pytest.mark.parametrize(("seed", "hr"), [(1, 72.0), (2, 48.0), (3, 115.0)])
def test_r_peaks_recover_the_set_heart_rate(fs: int, seed: int, hr: float) -> None:
    x = ecg(CardiacProfile.draw(seed, hr_bpm=hr), seed, 60.0, fs)
    peaks = detect_r_peaks(x, fs)
    measured = 60.0 / float(np.mean(np.diff(peaks)))
    assert abs(measured - hr) <= 2.0, (measured, hr)


def test_the_strap_and_the_ecg_of_a_patient_agree() -> None:
    seed, fs = 11, 250
    profile = CardiacProfile.draw(seed, ectopic_per_min=2.0)
    strap = BeatTrain([profile], [seed])
    beats = strap.take_until(120.0)[0]
    peaks = detect_r_peaks(ecg(profile, seed, 120.0, fs), fs)
    # the same beats: every detected R peak is within 8 ms of a beat of the train, and none is missed
    assert peaks.size == beats.time_s.size
    assert np.max(np.abs(peaks - beats.time_s)) < 0.008
    at = np.arange(6.0, 119.0)
    hr_strap = heart_rate_from_beats(beats.time_s, at)
    hr_ecg = heart_rate_from_beats(peaks, at)
    # a beat detected a few ms off can cross a window edge, so allow the odd second a little more
    assert np.median(np.abs(hr_strap - hr_ecg)) < 0.1
    assert np.max(np.abs(hr_strap - hr_ecg)) < 2.0
    # the strap's streaming heart rate is the same rule on the same beats
    again = BeatTrain([profile], [seed])
    streamed = np.array([again.heart_rate(float(t))[0] for t in at])
    np.testing.assert_allclose(streamed, hr_strap, rtol=1e-12)


# ---------------------------------------------------------------------------- rhythm


def test_af_episodes_are_irregular_without_p_waves_and_a_detector_finds_them() -> None:
    seed, fs, seconds = 5, 130, 480.0
    episodes = ((100.0, 200.0), (300.0, 400.0))
    x = ecg(CardiacProfile.draw(seed, hr_bpm=70.0, af_episodes=episodes), seed, seconds, fs)
    peaks = detect_r_peaks(x, fs)
    rr = np.diff(peaks)
    in_af = np.zeros(rr.size, dtype=bool)
    for s, e in episodes:
        in_af |= (peaks[:-1] >= s + 2.0) & (peaks[1:] < e)
    sinus = ~in_af
    for s, e in episodes:
        sinus &= (peaks[1:] < s) | (peaks[:-1] > e + 2.0)
    cv_af = rr[in_af].std() / rr[in_af].mean()
    cv_sinus = rr[sinus].std() / rr[sinus].mean()
    assert cv_af > 0.15 and cv_af > 3.0 * cv_sinus, (cv_af, cv_sinus)
    # irregularly irregular: successive AF intervals are uncorrelated
    a, b = rr[in_af][:-1], rr[in_af][1:]
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.25
    found = rolling_cv_af(peaks)
    assert overlap(found, list(episodes), seconds) > 0.8, found

    # P waves: the average of the 300–80 ms before each R peak has a P bump in sinus, none in AF
    def p_bump(times: FloatArray) -> float:
        idx = np.round(times * fs).astype(int)
        win = np.arange(round(-0.3 * fs), round(-0.08 * fs))
        template = x[idx[:, None] + win].mean(axis=0)
        return float(template.max() - np.median(template))

    sinus_beats = peaks[1:][sinus]
    af_beats = peaks[1:][in_af]
    assert p_bump(sinus_beats[sinus_beats > 1.0]) > 50.0
    assert p_bump(af_beats) < 0.5 * p_bump(sinus_beats[sinus_beats > 1.0])


def test_ectopic_beats_make_short_long_pairs() -> None:
    seed, fs = 8, 250
    profile = CardiacProfile.draw(seed, hr_bpm=66.0, ectopic_per_min=5.0)
    x = ecg(profile, seed, 300.0, fs)
    rr = np.diff(detect_r_peaks(x, fs))
    median = float(np.median(rr))
    short = np.flatnonzero(rr[:-1] < 0.8 * median)
    ectopics = int(np.sum(BeatTrain([profile], [seed]).take_until(300.0)[0].kind == BeatKind.ECTOPIC))
    assert ectopics >= 10
    assert abs(short.size - ectopics) <= 1
    assert np.all(rr[short + 1] > 1.2 * median)  # compensatory pause
    pair = (rr[short] + rr[short + 1]) / (2.0 * median)
    assert np.all(np.abs(pair - 1.0) < 0.12), pair


# ---------------------------------------------------------------------------- artefacts


def test_lead_off_is_flagged_and_flat_and_motion_adds_bursts() -> None:
    seed, fs = 4, 250
    profile = CardiacProfile.draw(seed)
    synth = EcgSynth([profile], [EcgProfile.draw(seed, lead_off_per_hour=60.0)], [seed], fs=fs)
    chunk = synth.next(600 * fs)
    off = chunk.lead_off[0]
    assert 0.01 < off.mean() < 0.5
    edges = np.flatnonzero(np.diff(off.astype(np.int8)))
    for s, e in zip(edges[::2] + 1, edges[1::2] + 1, strict=False):
        assert np.ptp(chunk.uv[0, s:e]) == 0.0  # flat line (at 0 or a rail)
    assert np.ptp(chunk.uv[0][~off]) < 4000.0

    quiet = ecg(profile, seed, 600.0, fs)
    moving = ecg(profile, seed, 600.0, fs, motion_per_hour=60.0)
    diff = np.abs(moving - quiet)
    assert np.mean(diff > 50.0) > 0.005  # bursts …
    assert np.median(diff) == 0.0  # … and only bursts


# ---------------------------------------------------------------------------- determinism, streaming


def test_same_seed_same_patient_different_seed_different_patient() -> None:
    a = ecg(CardiacProfile.draw(21), 21, 20.0, 250)
    b = ecg(CardiacProfile.draw(21), 21, 20.0, 250)
    c = ecg(CardiacProfile.draw(22), 22, 20.0, 250)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    hr = [CardiacProfile.draw(s).hr_bpm for s in range(20)]
    assert len(set(hr)) == 20 and np.ptp(hr) > 15.0
    rr21 = BeatTrain([CardiacProfile.draw(21, hr_bpm=70.0)], [21]).take_until(60.0)[0].rr_s
    rr22 = BeatTrain([CardiacProfile.draw(22, hr_bpm=70.0)], [22]).take_until(60.0)[0].rr_s
    assert not np.allclose(rr21[:40], rr22[:40])


def _ward() -> tuple[list[CardiacProfile], list[EcgProfile], list[tuple[int, int]]]:
    seeds = [(3, i) for i in range(4)]
    cardiac = [
        CardiacProfile.draw(s, ectopic_per_min=6.0, af_episodes=((20.0, 45.0),) if i % 2 else ())
        for i, s in enumerate(seeds)
    ]
    ecgs = [EcgProfile.draw(s, motion_per_hour=400.0, lead_off_per_hour=200.0) for s in seeds]
    return cardiac, ecgs, seeds


@pytest.mark.parametrize(("fs", "chunk"), [(130, 73), (250, 250), (500, 1)])
def test_streaming_in_chunks_equals_one_shot(fs: int, chunk: int) -> None:
    cardiac, ecgs, seeds = _ward()
    total = 60 * fs if chunk > 1 else 6 * fs
    one = EcgSynth(cardiac, ecgs, seeds, fs=fs).next(total)
    synth = EcgSynth(cardiac, ecgs, seeds, fs=fs)
    parts = [synth.next(min(chunk, total - i)) for i in range(0, total, chunk)]
    np.testing.assert_array_equal(np.concatenate([p.uv for p in parts], axis=1), one.uv)
    np.testing.assert_array_equal(np.concatenate([p.lead_off for p in parts], axis=1), one.lead_off)
    assert parts[-1].start + parts[-1].uv.shape[1] == total


def test_long_streams_keep_bounded_buffers() -> None:
    cardiac, ecgs, seeds = _ward()
    synth = EcgSynth(cardiac, ecgs, seeds, fs=130)
    strap = BeatTrain(cardiac, seeds)
    for second in range(1, 1801):
        synth.next(130)
        strap.take_until(float(second))
        strap.heart_rate(float(second))
    assert synth.beats.times.shape[1] <= 128
    assert strap.times.shape[1] <= 128


def test_beats_stream_by_time_and_by_count_equal_one_shot() -> None:
    cardiac, _, seeds = _ward()
    one = BeatTrain(cardiac, seeds).take_until(600.0)
    stepped = BeatTrain(cardiac, seeds)
    parts = [stepped.take_until(t) for t in np.arange(0.7, 600.0, 0.7)] + [stepped.take_until(600.0)]
    counted = BeatTrain(cardiac, seeds)
    by_count = [counted.next_beats(1) for _ in range(300)]
    for i in range(len(seeds)):
        np.testing.assert_array_equal(np.concatenate([p[i].time_s for p in parts]), one[i].time_s)
        np.testing.assert_array_equal(np.concatenate([p[i].rr_s for p in parts]), one[i].rr_s)
        np.testing.assert_array_equal(np.concatenate([p[i].kind for p in parts]), one[i].kind)
        np.testing.assert_array_equal(np.concatenate([p[i].time_s for p in by_count]), one[i].time_s[:300])
        # a patient does not depend on the ward it is simulated in
        alone = BeatTrain([cardiac[i]], [seeds[i]]).take_until(600.0)[0]
        np.testing.assert_array_equal(alone.time_s, one[i].time_s)
    assert {BeatKind.AF, BeatKind.ECTOPIC} <= set(np.concatenate([b.kind for b in one]).tolist())


# ---------------------------------------------------------------------------- CLI


def read_csv(path: Path) -> tuple[list[str], FloatArray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def test_cli_signal_ecg_example(tmp_path: Path) -> None:
    out = tmp_path / "ecg.csv"
    args = ["signal", "ecg", "--seconds", "60", "--rate", "250", "--hr", "72", "--seed", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_sim", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    header, data = read_csv(out)
    assert header == ["time", "value"]
    assert data.shape == (15000, 2)
    np.testing.assert_allclose(np.diff(data[:, 0]), 1 / 250, atol=1e-6)
    mean_rr = float(np.mean(np.diff(detect_r_peaks(data[:, 1], 250.0))))
    assert abs(mean_rr / (60.0 / 72.0) - 1.0) < 0.03, mean_rr


def test_cli_signal_rr_and_hr_come_from_the_same_beats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--seconds", "120", "--hr", "80", "--seed", "3", "--af-episodes", "1"]
    assert cli.main(["signal", "rr", *common, "--out", str(tmp_path / "rr.csv")]) == 0
    assert cli.main(["signal", "hr", *common, "--out", str(tmp_path / "hr.csv")]) == 0
    assert '"kind": "hr"' in capsys.readouterr().out
    _, rr = read_csv(tmp_path / "rr.csv")
    _, hr = read_csv(tmp_path / "hr.csv")
    assert hr.shape == (120, 2) and rr[0, 0] >= 0.0 and rr[-1, 0] <= 120.0
    np.testing.assert_allclose(np.diff(rr[:, 0]) * 1000.0, rr[1:, 1], atol=0.2)  # RR (ms) = Δ beat time
    expected = heart_rate_from_beats(rr[:, 0], hr[10:, 0])  # once the window holds only listed beats
    np.testing.assert_allclose(hr[10:, 1], expected, atol=0.06)
    cv = np.std(rr[:, 1]) / np.mean(rr[:, 1])
    assert cv > 0.08  # the AF episode shows
