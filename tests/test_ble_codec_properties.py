"""Property tests of the BLE codecs: random bytes raise only PayloadError; encode → decode round trips."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import catalog
from drivers.cgm.codec import CgmFlags, CgmMeasurement, CgmRecord, CgmSessionStartTime
from drivers.cgm.points import readings as cgm_readings
from drivers.glucose.codec import GlucoseMeasurement
from drivers.glucose.points import readings as glucose_readings
from drivers.heart_rate.codec import HeartRateMeasurement, HrFlags
from drivers.polar_pmd.codec import EcgFrame
from drivers.sdk.clock import DeviceClock
from drivers.sdk.gatt import DateTime
from drivers.sdk.ieee11073 import (
    FLOAT_SPECIAL,
    SFLOAT_SPECIAL,
    Number11073,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    float_special,
    sfloat_special,
)
from gateway.errors import PayloadError
from gateway.model import AbsentReason

CLOCK = DeviceClock(skew_ns=1_000_000_000, utc_offset_ns=3_600_000_000_000)
RECEIVED = 1_767_225_600_000_000_000


@pytest.mark.parametrize("uuid", sorted(catalog.DECODERS))
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=40))
def test_random_bytes_raise_only_payload_error(uuid: str, data: bytes) -> None:
    """Every codec (and its points function, through the decode catalog) fails only with PayloadError."""
    with contextlib.suppress(PayloadError):
        catalog.decode(uuid, data)


PARSERS: list[Callable[[bytes], object]] = [
    lambda d: CgmMeasurement.from_bytes(d, crc=True),
    lambda d: CgmMeasurement.from_bytes(d, crc=False, warning_first=True),
    lambda d: CgmSessionStartTime.from_bytes(d, crc=False),
]


@pytest.mark.parametrize("parse", PARSERS)
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40))
def test_parser_variants_raise_only_payload_error(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse(data)


@given(data=st.binary(min_size=10, max_size=40), start=st.binary(min_size=9, max_size=9))
def test_cgm_points_from_random_records_raise_only_payload_error(data: bytes, start: bytes) -> None:
    try:
        m = CgmMeasurement.from_bytes(data)
        cgm_readings(m, CgmSessionStartTime.from_bytes(start), CLOCK, RECEIVED)
    except PayloadError:
        pass


@given(data=st.binary(min_size=10, max_size=20))
def test_glucose_points_from_random_bytes_raise_only_payload_error(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        glucose_readings(GlucoseMeasurement.from_bytes(data), CLOCK, RECEIVED)


# --- SFLOAT / FLOAT ---------------------------------------------------------------------------------
@given(m=st.integers(-0x800, 0x7FF), e=st.integers(-8, 7))
def test_sfloat_round_trip(m: int, e: int) -> None:
    try:
        raw = encode_sfloat(m, e)
    except PayloadError:
        assert e == 0 and (m & 0xFFF) in SFLOAT_SPECIAL
        return
    assert decode_sfloat(raw) == Number11073(m, e)
    assert decode_sfloat(raw).precision == max(0, -e)


@given(m=st.integers(-0x800000, 0x7FFFFF), e=st.integers(-128, 127))
def test_float_round_trip(m: int, e: int) -> None:
    try:
        raw = encode_float(m, e)
    except PayloadError:
        assert e == 0 and (m & 0xFFFFFF) in FLOAT_SPECIAL
        return
    assert decode_float(raw) == Number11073(m, e)


@given(raw=st.integers(0, 0xFFFF))
def test_every_sfloat_word_decodes_and_re_encodes(raw: int) -> None:
    n = decode_sfloat(raw)
    if n.absent is not None:
        assert sfloat_special(n.absent) == raw
    else:
        assert encode_sfloat(n.mantissa, n.exponent) == raw


@pytest.mark.parametrize("reason", list(AbsentReason))
def test_specials_round_trip(reason: AbsentReason) -> None:
    assert decode_sfloat(sfloat_special(reason)).absent is reason
    assert decode_float(float_special(reason)).absent is reason


# --- encoders --------------------------------------------------------------------------------------
@given(
    uint16=st.booleans(),
    hr=st.integers(0, 0xFF),
    contact=st.sampled_from([0, 4, 6]),
    energy=st.none() | st.integers(0, 0xFFFF),
    rr=st.lists(st.integers(0, 0xFFFF), max_size=8),
)
def test_heart_rate_round_trip(uint16: bool, hr: int, contact: int, energy: int | None, rr: list[int]) -> None:
    flags = HrFlags(contact | (HrFlags.HR_UINT16 if uint16 else 0))
    m = HeartRateMeasurement(flags, hr, energy, tuple(rr))
    back = HeartRateMeasurement.from_bytes(m.to_bytes())
    assert (back.heart_rate, back.energy_expended_kj, back.rr_intervals) == (hr, energy, tuple(rr))
    assert back.sensor_contact == m.sensor_contact


sfloats = st.builds(Number11073, st.integers(-2000, 2000), st.integers(-8, 7)).filter(
    lambda n: not (n.exponent == 0 and (n.mantissa & 0xFFF) in SFLOAT_SPECIAL)
)
octets = st.none() | st.integers(0, 255)


@given(
    glucose=sfloats,
    offset=st.integers(0, 0xFFFF),
    status=octets,
    cal=octets,
    warning=octets,
    trend=st.none() | sfloats,
    quality=st.none() | sfloats,
    crc=st.booleans(),
    n=st.integers(1, 3),
)
def test_cgm_round_trip(
    glucose: Number11073,
    offset: int,
    status: int | None,
    cal: int | None,
    warning: int | None,
    trend: Number11073 | None,
    quality: Number11073 | None,
    crc: bool,
    n: int,
) -> None:
    rec = CgmRecord(CgmFlags(0), glucose, offset, status, cal, warning, trend, quality)
    data = CgmMeasurement((rec,) * n).to_bytes(crc=crc)
    back = CgmMeasurement.from_bytes(data, crc=crc).records
    assert len(back) == n
    for b in back:
        assert (b.glucose_mg_dl, b.time_offset_min, b.status_octet, b.cal_temp_octet, b.warning_octet) == (
            glucose,
            offset,
            status,
            cal,
            warning,
        )
        assert (b.trend, b.quality_pct) == (trend, quality)


@given(
    seq=st.integers(0, 0xFFFF),
    offset=st.none() | st.integers(-0x8000, 0x7FFF),
    conc=st.none() | sfloats,
    type_loc=st.integers(0, 255),
    status=st.none() | st.integers(0, 0x0FFF),
)
def test_glucose_round_trip(
    seq: int, offset: int | None, conc: Number11073 | None, type_loc: int, status: int | None
) -> None:
    from drivers.glucose.codec import GlucoseFlags, SensorStatus

    kind, loc = (type_loc & 0xF, type_loc >> 4) if conc is not None else (None, None)
    m = GlucoseMeasurement(
        GlucoseFlags(0),
        seq,
        DateTime(2024, 3, 15, 7, 45, 0),
        offset,
        conc,
        kind,
        loc,
        None if status is None else SensorStatus(status),
    )
    back = GlucoseMeasurement.from_bytes(m.to_bytes())
    assert dataclasses.replace(back, flags=m.flags) == m
    assert back.to_bytes() == m.to_bytes()


@given(samples=st.lists(st.integers(-(2**23), 2**23 - 1), min_size=1, max_size=80), ts=st.integers(0, 2**63 - 1))
def test_ecg_frame_round_trip(samples: list[int], ts: int) -> None:
    f = EcgFrame(ts, np.asarray(samples, dtype=np.int32))
    back = EcgFrame.from_bytes(f.to_bytes())
    assert back == f
    assert back.samples.dtype == np.int32
    times = back.sample_times_ns()
    assert int(times[-1]) == ts and bool(np.all(np.diff(times) > 0))
