"""The research non-invasive glucose sensor (docs/research-sensor.md): the S21 frame codec, the SenML
names, the simulator's transfer model, and the research-only rule."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from drivers.nig.codec import HEADER_SIZE, MAX_POINTS, S21Frame
from drivers.senml.profile import decode_frame
from firmware_sim.models.nig_sensor import NigSensor, encode_s21, resonance_hz
from firmware_sim.senml import CBOR, JSON, Header, encode, frame_records, nig_records
from firmware_sim.ward import ManualClock, Ward
from gateway.config import OutboxSection, PriorityRule
from gateway.errors import PayloadError
from gateway.model import Priority
from gateway.priority import PriorityRules
from gateway.vocabulary import METRICS

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the worked example of docs/research-sensor.md ---------------------------------------------------
EXAMPLE_HEX = (
    "4e 49 01 00 04 00 64 00 64 00 00 00 00 ca 9a 3b 00 00 00 00 00 b4 c4 04"
    " 83 ff a2 fe 2e fb 38 ff e8 03 29 ee 4f 46 b0 b9"
)
EXAMPLE = bytes.fromhex(EXAMPLE_HEX)
EXAMPLE_MAG = [-1.25, -3.5, -12.34, -2.0]
EXAMPLE_PHASE = [10.0, -45.67, 179.99, -180.0]
EXAMPLE_B64 = "TkkBAAQAZABkAAAAAMqaOwAAAAAAtMQEg_-i_i77OP_oAynuT0awuQ"
EXAMPLE_PACK = (
    '[{"bn":"urn:dev:ds4h:nig-01:","bt":1767225600,"n":"boot","vs":"4f2a9c1e"},{"n":"seq","v":7},'
    '{"n":"unacked","v":7},{"n":"nig:s21","vd":"' + EXAMPLE_B64 + '"},'
    '{"n":"nig:estimate","u":"mg/dL","v":112.4}]'
)
NOW_NS = 1_767_225_601 * 10**9


def test_documented_vector_decodes() -> None:
    f = S21Frame.from_bytes(EXAMPLE)
    assert (f.f_start_hz, f.f_step_hz, f.magnitude_scale, f.phase_scale, f.points) == (10**9, 80_000_000, 100, 100, 4)
    assert f.magnitude_counts.tolist() == [-125, -350, -1234, -200]
    assert f.phase_counts.tolist() == [1000, -4567, 17999, -18000]
    assert f.magnitude_db().tolist() == EXAMPLE_MAG
    assert f.phase_deg().tolist() == EXAMPLE_PHASE
    assert f.frequencies_hz().tolist() == [1_000_000_000, 1_080_000_000, 1_160_000_000, 1_240_000_000]
    assert f.to_bytes() == EXAMPLE
    assert S21Frame.from_values(10**9, 80_000_000, EXAMPLE_MAG, EXAMPLE_PHASE).to_bytes() == EXAMPLE
    # the simulator's encoder, written from the spec, gives the same bytes
    assert encode_s21(10**9, 80_000_000, EXAMPLE_MAG, EXAMPLE_PHASE) == EXAMPLE
    assert base64.urlsafe_b64encode(EXAMPLE).rstrip(b"=").decode() == EXAMPLE_B64


def test_documented_example_is_in_the_docs() -> None:
    doc = (ROOT / "docs" / "research-sensor.md").read_text(encoding="utf-8")
    assert EXAMPLE_HEX in doc
    assert EXAMPLE_PACK in doc
    rec = nig_records(EXAMPLE, 112.4)
    assert encode(frame_records("nig-01", Header("4f2a9c1e", 7, 7), 1767225600, rec), JSON).decode() == EXAMPLE_PACK


def test_documented_pack_becomes_spectra_and_a_research_reading() -> None:
    frame = decode_frame(EXAMPLE_PACK.encode(), JSON, "nig-01", NOW_NS)
    (est,) = frame.readings
    assert (est.metric, est.value, est.unit, est.device_time_ns) == (
        "glucose_research_estimate",
        112.4,
        "mg/dL",
        NOW_NS - 10**9,
    )
    mag, phase = frame.spectra
    assert (mag.metric, mag.unit, mag.axis_start, mag.axis_step, mag.axis_unit) == (
        "nig_s21_magnitude",
        "dB",
        1e9,
        8e7,
        "Hz",
    )
    assert mag.values.dtype == np.float32
    assert mag.values.tolist() == np.array(EXAMPLE_MAG, dtype=np.float32).tolist()
    assert (phase.metric, phase.unit) == ("nig_s21_phase", "deg")
    assert phase.values.tolist() == np.array(EXAMPLE_PHASE, dtype=np.float32).tolist()
    assert mag.time_ns == phase.time_ns == est.device_time_ns


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "header"),
        (EXAMPLE[:23], "header"),
        (b"NX" + EXAMPLE[2:], "magic"),
        (EXAMPLE[:2] + b"\x02" + EXAMPLE[3:], "version"),
        (EXAMPLE[:3] + b"\x01" + EXAMPLE[4:], "reserved"),
        (EXAMPLE[:10] + b"\x01\x00" + EXAMPLE[12:], "reserved"),
        (EXAMPLE[:-1], "needs"),
        (EXAMPLE + b"\x00", "needs"),
        (EXAMPLE[:4] + b"\x00\x00" + EXAMPLE[6:24], "points"),
        (EXAMPLE[:6] + b"\x00\x00" + EXAMPLE[8:], "scales"),
        (EXAMPLE[:20] + b"\x00\x00\x00\x00" + EXAMPLE[24:], "f_step"),
        (EXAMPLE[:12] + b"\xff" * 8 + EXAMPLE[20:], "2\\*\\*53"),
    ],
)
def test_bad_frames_are_malformed(data: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why) as info:
        S21Frame.from_bytes(data)
    assert info.value.reason == "malformed"


def test_too_many_points_is_malformed() -> None:
    k = MAX_POINTS + 1
    data = EXAMPLE[:4] + k.to_bytes(2, "little") + EXAMPLE[6:24] + bytes(4 * k)
    with pytest.raises(PayloadError, match="points") as info:
        S21Frame.from_bytes(data)
    assert info.value.reason == "malformed"


_counts = st.integers(1, 128).flatmap(
    lambda k: st.tuples(
        hnp.arrays(np.int16, k, elements=st.integers(-32768, 32767)),
        hnp.arrays(np.int16, k, elements=st.integers(-32768, 32767)),
    )
)


@given(
    counts=_counts,
    f_start=st.integers(0, 10**12),
    f_step=st.integers(1, 2**32 - 1),
    mag_scale=st.integers(1, 65535),
    phase_scale=st.integers(1, 65535),
)
@SETTINGS
def test_frames_round_trip(
    counts: tuple[np.ndarray, np.ndarray], f_start: int, f_step: int, mag_scale: int, phase_scale: int
) -> None:
    mag, phase = counts
    f = S21Frame(f_start, f_step, mag_scale, phase_scale, mag, phase)
    data = f.to_bytes()
    assert len(data) == HEADER_SIZE + 4 * mag.size
    assert S21Frame.from_bytes(data) == f


@given(
    values=st.integers(1, 96).flatmap(
        lambda k: st.tuples(
            hnp.arrays(np.float64, k, elements=st.floats(-300, 300)),
            hnp.arrays(np.float64, k, elements=st.floats(-180, 180)),
        )
    ),
    f_start=st.integers(0, 10**10),
    f_step=st.integers(1, 10**9),
    fmt=st.sampled_from([CBOR, JSON]),
    estimate=st.floats(0, 2000),
)
@SETTINGS
def test_simulator_encoder_to_gateway_decoder(
    values: tuple[np.ndarray, np.ndarray], f_start: int, f_step: int, fmt: str, estimate: float
) -> None:
    mag, phase = values
    data = encode_s21(f_start, f_step, mag, phase)
    f = S21Frame.from_bytes(data)
    assert np.array_equal(f.magnitude_db(), np.rint(mag * 100) / 100)
    assert np.array_equal(f.phase_deg(), np.rint(phase * 100) / 100)
    assert f.frequencies_hz()[-1] == f_start + (mag.size - 1) * f_step
    pack = encode(frame_records("nig-02", Header("b", 1, 1), 1_767_225_600.0, nig_records(data, estimate)), fmt)
    frame = decode_frame(pack, fmt, "nig-02", NOW_NS)
    m, p = frame.spectra
    assert np.array_equal(m.values, f.magnitude_db().astype(np.float32))
    assert np.array_equal(p.values, f.phase_deg().astype(np.float32))
    assert m.axis_start == f_start and m.axis_step == f_step
    assert frame.readings[0].value == round(estimate, 1)


@given(st.binary(max_size=600))
@example(EXAMPLE[:24] + bytes(16))
@SETTINGS
def test_random_bytes_raise_only_payload_errors(data: bytes) -> None:
    try:
        f = S21Frame.from_bytes(data)
    except PayloadError as e:
        assert e.reason == "malformed"
    else:
        assert f.to_bytes() == data
    with_magic = b"NI\x01\x00" + data
    try:
        S21Frame.from_bytes(with_magic)
    except PayloadError as e:
        assert e.reason == "malformed"


@given(st.binary(max_size=300))
@SETTINGS
def test_random_vd_in_a_pack_is_quarantined_as_malformed(data: bytes) -> None:
    pack = encode(frame_records("nig-03", Header("b", 1, 1), 1_767_225_600.0, [{"n": "nig:s21", "vd": data}]), CBOR)
    try:
        decode_frame(pack, CBOR, "nig-03", NOW_NS)
    except PayloadError as e:
        assert e.reason == "malformed"


# --- SenML profile rules ------------------------------------------------------------------------------
def _pack(records: list[dict[str, object]]) -> bytes:
    return encode(frame_records("nig-04", Header("b", 1, 1), 1_767_225_600.0, records), CBOR)


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        ([{"n": "nig:s21", "v": 1.0}], "wrong_type"),
        ([{"n": "nig:s21", "vd": EXAMPLE, "u": "dB"}], "bad_unit"),
        ([{"n": "nig:estimate", "v": 100.0}], "bad_unit"),
        ([{"n": "nig:estimate", "v": 100.0, "u": "mmol/l"}], "bad_unit"),
        ([{"n": "nig:estimate", "v": -1.0, "u": "mg/dL"}], "out_of_range"),
        ([{"n": "nig:other", "v": 1.0}], "unknown_name"),
        ([{"n": "nig:s21", "vd": EXAMPLE}, {"n": "nig:s21", "vd": EXAMPLE}], "duplicate_point"),
    ],
)
def test_profile_refuses(records: list[dict[str, object]], reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_frame(_pack(records), CBOR, "nig-04", NOW_NS)
    assert info.value.reason == reason


def test_two_sweeps_with_their_own_times() -> None:
    frame = decode_frame(
        _pack([{"n": "nig:s21", "vd": EXAMPLE, "t": -60}, {"n": "nig:s21", "vd": EXAMPLE}]), CBOR, "nig-04", NOW_NS
    )
    assert [s.metric for s in frame.spectra] == ["nig_s21_magnitude", "nig_s21_phase"] * 2
    assert frame.spectra[0].time_ns == frame.spectra[2].time_ns - 60 * 10**9
    assert frame.readings == ()


# --- research-only ------------------------------------------------------------------------------------
def test_research_metrics_are_private_and_never_clinical() -> None:
    for name in ("nig_s21_magnitude", "nig_s21_phase", "glucose_research_estimate"):
        m = METRICS[name]
        assert m.research_only and m.loinc is None
        assert m.mdc >> 16 == 2 and 0xF000 <= m.mdc & 0xFFFF <= 0xFBFF, "IEEE 11073 private range"
    assert METRICS["nig_s21_magnitude"].spectrum and METRICS["nig_s21_phase"].spectrum
    clinical = [m for m in METRICS.values() if m.name.startswith("glucose_") and m.name != "glucose_research_estimate"]
    assert all(not m.research_only for m in clinical)
    assert all(r.metric != "glucose_research_estimate" for r in OutboxSection().priority_rules)
    with pytest.raises(ValidationError, match="research-only"):
        PriorityRule(metric="glucose_research_estimate", below=70)
    with pytest.raises(ValidationError, match="not a scalar"):
        PriorityRule(metric="nig_s21_magnitude", below=-10)


def test_a_hypoglycaemic_estimate_does_not_make_a_batch_urgent() -> None:
    frame = decode_frame(_pack([{"n": "nig:estimate", "v": 40.0, "u": "mg/dL"}]), CBOR, "nig-04", NOW_NS)
    (r,) = frame.readings
    assert r.metric == "glucose_research_estimate" and r.value == 40.0 and not r.alert
    assert PriorityRules(OutboxSection().priority_rules).classify(frame.readings) == Priority.BULK


def test_the_profile_names_no_clinical_glucose_metric_for_nig_records() -> None:
    from drivers.senml.profile import HANDLERS, Scalar

    handler = HANDLERS["nig:estimate"]
    assert isinstance(handler, Scalar) and handler.metric == "glucose_research_estimate"


# --- the simulated sensor -----------------------------------------------------------------------------
def test_sensor_is_deterministic_and_vectorised() -> None:
    a, b = NigSensor(5, 42), NigSensor(5, 42)
    g = np.array([80.0, 120.0, 160.0, 200.0, 240.0])
    for t in (0.0, 60.0, 120.0):
        sa, sb = a.sweep(t, g), b.sweep(t, g)
        assert np.array_equal(sa.magnitude_db, sb.magnitude_db) and np.array_equal(sa.phase_deg, sb.phase_deg)
    assert sa.magnitude_db.shape == (5, 64) and sa.estimate_mg_dl.shape == (5,)
    assert sa.frequencies_hz[0] == 1_000_000_000 and sa.frequencies_hz[-1] == 1_000_000_000 + 63 * 80_000_000
    assert not np.array_equal(NigSensor(5, 43).sweep(0.0, g).magnitude_db, a.sweep(180.0, g).magnitude_db)
    # higher glucose: lower resonance frequency (the synthetic model's negative shift)
    f0 = resonance_hz(sa.frequencies_hz, sa.magnitude_db)
    assert f0[0] > f0[-1]


def test_frame_features_track_glucose_over_a_day() -> None:
    """The notch centre estimated from the quantised frames follows the ward patients' glucose."""
    clock = ManualClock()
    n = 4
    ward = Ward(n, seed=9, clock=clock, epoch_s=1_767_225_600.0, start_clock_min=7 * 60.0)
    sensor = NigSensor(n, 7)
    plasma, f0, estimate = [], [], []
    for minute in range(24 * 60):
        t = minute * 60.0
        g = ward.plasma(t)
        sw = sensor.sweep(t, g)
        frames = [
            S21Frame.from_bytes(encode_s21(1_000_000_000, 80_000_000, sw.magnitude_db[i], sw.phase_deg[i]))
            for i in range(n)
        ]
        mag = np.stack([f.magnitude_db() for f in frames])
        plasma.append(g)
        f0.append(resonance_hz(frames[0].frequencies_hz(), mag))
        estimate.append(sw.estimate_mg_dl)
    p, f, e = np.array(plasma), np.array(f0), np.array(estimate)
    for i in range(n):
        assert p[:, i].max() - p[:, i].min() > 80, "the day has a glucose excursion"
        assert np.corrcoef(-f[:, i], p[:, i])[0, 1] > 0.9
        assert np.corrcoef(e[:, i], p[:, i])[0, 1] > 0.9
        mard = float(np.mean(np.abs(e[:, i] - p[:, i]) / p[:, i]))
        assert 0.005 < mard < 0.2, "the estimate has its own error"


def test_docs_state_the_model_is_synthetic_and_research_only() -> None:
    doc = (ROOT / "docs" / "research-sensor.md").read_text(encoding="utf-8")
    assert re.search(r"synthetic", doc, re.I)
    assert "research-only" in doc.lower()
    for name in ("nig:s21", "nig:estimate", "nig_s21_magnitude", "nig_s21_phase", "glucose_research_estimate"):
        assert f"`{name}`" in doc
    mqtt = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    assert "`nig:s21`" in mqtt and "`nig:estimate`" in mqtt
