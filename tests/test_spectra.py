"""Spectra in the core: the Batch layouts (v1 unchanged, v2 with spectra), line protocol, local history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.batchcodec import decode_batch, encode_batch
from gateway.errors import PayloadError
from gateway.model import Batch, Priority, Reading, SourceKey, Spectrum, Waveform
from gateway.sinks.lineproto import count_points
from gateway.sinks.lineproto import encode_batch as line_protocol
from gateway.sinks.local import LocalSink

T = 1_700_000_000_000_000_000

# Computed with the encoder as it was before spectra existed: layout version 1 must stay byte-identical.
V1_SAMPLE_HEX = (
    "870183666e69672d763165626f6f7431071b17979cfe3d85cd1501636e6967828a7819676c75636f73655f72657365617263685f"
    "657374696d617465f95688656d672f644c1b17979cfe362a000001f6030100f48a6473706f32f661251b17979cfe362a0001f663"
    "6e616ef60000f481866a6563675f6c6561645f696275561b17979cfe362a00001a00773594024c01000000feffffffe0930400"
)
V1_EMPTY_HEX = "870182656465762d61010500608080"


def v1_sample() -> Batch:
    return Batch(
        SourceKey("nig-v1", ("boot1", 7)),
        1_700_000_000_123_456_789,
        (
            Reading("glucose_research_estimate", 104.5, "mg/dL", 1_700_000_000_000_000_000, 1, None, 3, 1, 0, False),
            Reading("spo2", None, "%", 1_700_000_000_000_000_001, None, "nan"),
        ),
        (Waveform("ecg_lead_i", "uV", 1_700_000_000_000_000_000, 7_812_500, np.array([1, -2, 300000], np.int32), 2),),
        Priority.URGENT,
        "nig",
    )


def spectrum(metric: str = "nig_s21_magnitude", unit: str = "dB", tq: int = 0, t: int = T) -> Spectrum:
    return Spectrum(metric, unit, t, 1e9, 8e7, "Hz", np.array([-1.25, -3.5, -12.34, -2.0], np.float32), tq)


def test_layout_v1_is_byte_identical_without_spectra() -> None:
    assert encode_batch(v1_sample()).hex() == V1_SAMPLE_HEX
    assert encode_batch(Batch(SourceKey("dev-a", (1,)), 5)).hex() == V1_EMPTY_HEX
    assert decode_batch(bytes.fromhex(V1_SAMPLE_HEX)) == v1_sample()


def test_layout_v2_round_trip() -> None:
    base = v1_sample()
    b = Batch(base.key, base.received_ns, base.readings, base.waveforms, base.priority, base.kind,
              (spectrum(), spectrum("nig_s21_phase", "deg", tq=2)))  # fmt: skip
    data = encode_batch(b)
    assert data[:2] == bytes([0x88, 0x02])  # an array of 8, layout version 2
    back = decode_batch(data)
    assert back == b and back.spectra[1].time_quality == 2
    assert back.n_points == 2 + 3 + 8 and back.n_samples == 11
    assert back.spectra[0].values.dtype == np.float32
    assert encode_batch(back) == data


def test_decoder_refuses_unknown_layouts() -> None:
    import cbor2

    obj = cbor2.loads(bytes.fromhex(V1_EMPTY_HEX))
    for bad in ([3, *obj[1:]], [2, *obj[1:]], obj[:-1], [*obj, []]):
        with pytest.raises(PayloadError):
            decode_batch(cbor2.dumps(bad))
    with pytest.raises(PayloadError):  # values not whole float32s
        decode_batch(cbor2.dumps([2, *obj[1:], [["m", "dB", T, 1.0, 1.0, "Hz", 0, b"\x00\x01\x02"]]]))


_values = st.integers(0, 64).flatmap(
    lambda k: hnp.arrays(np.float32, k, elements=st.floats(-1e6, 1e6, width=32, allow_nan=False))
)


@given(
    values=_values,
    start=st.floats(0, 1e12, allow_nan=False),
    step=st.floats(1e-3, 1e9, allow_nan=False),
    tq=st.integers(0, 7),
    t=st.integers(0, 2**63 - 1),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_spectra_round_trip(values: np.ndarray, start: float, step: float, tq: int, t: int) -> None:
    s = Spectrum("nig_s21_phase", "deg", t, start, step, "Hz", values, tq)
    b = Batch(SourceKey("nig-p", ("b", 1)), 1, spectra=(s,))
    assert decode_batch(encode_batch(b)) == b


def test_spectrum_invariants() -> None:
    ok = np.zeros(2, np.float32)
    for bad in (
        dict(values=np.zeros(2, np.float64)),
        dict(values=np.zeros((2, 2), np.float32)),
        dict(values=np.array([np.nan, 1], np.float32)),
        dict(axis_step=0.0),
        dict(axis_start=float("inf")),
        dict(axis_unit="s"),
    ):
        kw = {"values": ok, "axis_start": 1.0, "axis_step": 1.0, "axis_unit": "Hz", **bad}
        with pytest.raises(PayloadError):
            Spectrum("m", "dB", T, kw["axis_start"], kw["axis_step"], kw["axis_unit"], kw["values"])  # type: ignore[arg-type]


# --- line protocol -------------------------------------------------------------------------------------
def test_line_protocol_one_point_per_bin() -> None:
    b = Batch(
        SourceKey("nig-01", ("b", 1)),
        T,
        (Reading("glucose_research_estimate", 112.4, "mg/dL", T),),
        spectra=(spectrum(), spectrum("nig_s21_phase", "deg", tq=2)),
    )
    chunk = line_protocol(b).decode()
    lines = chunk.split("\n")
    assert count_points(chunk.encode()) == b.n_points == 9
    assert lines[0] == f"glucose_research_estimate,device=nig-01,unit=mg/dL value=112.4 {T}"
    assert lines[1:5] == [
        f"nig_s21_magnitude,device=nig-01,hz=1000000000,unit=dB value=-1.25 {T}",
        f"nig_s21_magnitude,device=nig-01,hz=1080000000,unit=dB value=-3.5 {T}",
        f"nig_s21_magnitude,device=nig-01,hz=1160000000,unit=dB value=-12.34 {T}",
        f"nig_s21_magnitude,device=nig-01,hz=1240000000,unit=dB value=-2.0 {T}",
    ]
    assert lines[5] == f"nig_s21_phase,device=nig-01,hz=1000000000,unit=deg value=-1.25,tq=2i {T}"
    empty = Spectrum("nig_s21_phase", "deg", T, 1.0, 1.0, "Hz", np.zeros(0, np.float32))
    assert line_protocol(Batch(SourceKey("nig-01", ("b", 2)), T, spectra=(empty,))) == b""


# --- local history -------------------------------------------------------------------------------------
async def test_local_sink_stores_counts_and_prunes_spectra(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path, retention_days=1.0)
    try:
        b = Batch(
            SourceKey("nig-01", ("b", 1)),
            T,
            (Reading("glucose_research_estimate", 112.4, "mg/dL", T),),
            spectra=(spectrum(), spectrum("nig_s21_phase", "deg", tq=2)),
        )
        await sink.write([b])
        await sink.write([b])  # idempotent: same rows
        assert sink.count() == (1, 8)
        assert sink.count_spectra() == (2, 8)
        conn = sqlite3.connect(tmp_path / "history.db")
        row = conn.execute(
            'SELECT device, metric, t_ns, unit, axis_start, axis_step, axis_unit, n, "values", tq FROM spectra'
            " WHERE metric = 'nig_s21_phase'"
        ).fetchone()
        conn.close()
        assert row[:8] == ("nig-01", "nig_s21_phase", T, "deg", 1e9, 8e7, "Hz", 4) and row[9] == 2
        assert np.frombuffer(row[8], "<f4").tolist() == spectrum().values.tolist()
        assert sink.prune_oldest(1) >= 1  # the oldest stored rows go, spectra among them
        assert sink.count_spectra() == (0, 0)
        await sink.write([b])
        assert sink.prune_expired() == 0
        assert sink._delete_before(2**62) == 3
        assert sink.count() == (0, 0) and sink.count_spectra() == (0, 0)
    finally:
        await sink.close()
