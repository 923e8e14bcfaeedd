"""Cross-implementation round trips: the simulated firmware's encoders (``firmware_sim/ble/wire``)
produce the bytes, the gateway's decoders (``drivers/*/codec.py``, ``drivers/sdk``) read them.

The two sides were written independently from protocols.md §1–§8, so every field is compared
exactly. Where the two sides legitimately represent a field differently (the simulator keeps a
``Num``/``Special``, the gateway a mantissa/exponent pair with an absent reason; the simulator a
``datetime``, the gateway a ``DateTime``), the comparison is semantic and says so.

The second half builds every simulated device without a radio, generates a few seconds' worth of
its notifications (and reads every readable characteristic), and decodes them all with the gateway.
"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Final, cast

import numpy as np
import pytest
from bumble.gatt import Characteristic
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import catalog
from drivers.blood_pressure import codec as gw_bp
from drivers.blood_pressure import points as gw_bp_points
from drivers.cgm import codec as gw_cgm
from drivers.cgm import socp as gw_socp
from drivers.device_info import codec as gw_info
from drivers.glucose import codec as gw_glu
from drivers.heart_rate import codec as gw_hr
from drivers.polar_pmd import codec as gw_pmd
from drivers.polar_pmd import points as gw_pmd_points
from drivers.pulse_oximeter import codec as gw_plx
from drivers.sdk import racp as gw_racp
from drivers.sdk.clock import DeviceClock as GatewayClock
from drivers.sdk.gatt import DateTime, crc16_mcrf4xx, normalize_uuid
from drivers.sdk.ieee11073 import Number11073, decode_float, decode_sfloat
from firmware_sim.ble.devices.blood_pressure import BloodPressureCuff
from firmware_sim.ble.devices.cgm import Cgm
from firmware_sim.ble.devices.ecg import ECG_RATE_HZ, SAMPLES_PER_FRAME, EcgStrap
from firmware_sim.ble.devices.glucose_meter import GlucoseMeter
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.devices.pulse_oximeter import PulseOximeter
from firmware_sim.ble.identity import DeviceIdentity, Profile, device_identity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ble.wire import blood_pressure as sim_bp
from firmware_sim.ble.wire import cgm as sim_cgm
from firmware_sim.ble.wire import device_info as sim_info
from firmware_sim.ble.wire import glucose as sim_glu
from firmware_sim.ble.wire import heart_rate as sim_hr
from firmware_sim.ble.wire import pmd as sim_pmd
from firmware_sim.ble.wire import pulse_oximeter as sim_plx
from firmware_sim.ble.wire import racp as sim_racp
from firmware_sim.ble.wire import time_fields as sim_time
from firmware_sim.ble.wire.crc import crc16_mcrf4xx as sim_crc16
from firmware_sim.ble.wire.ieee11073 import (
    FLOAT_MANTISSA_MAX,
    FLOAT_MANTISSA_MIN,
    SFLOAT_EXPONENT_MAX,
    SFLOAT_EXPONENT_MIN,
    SFLOAT_MANTISSA_MAX,
    SFLOAT_MANTISSA_MIN,
    Num,
    Special,
    Value,
    float32,
    sfloat,
)
from gateway.errors import PayloadError
from gateway.model import AbsentReason

# --------------------------------------------------------------------------------------------- helpers

FAST = settings(max_examples=60, deadline=None)
SLOW = settings(max_examples=120, deadline=None)

ABSENT: Final[dict[Special, AbsentReason]] = {
    Special.NAN: AbsentReason.NAN,
    Special.NRES: AbsentReason.NRES,
    Special.POSITIVE_INFINITY: AbsentReason.POS_INF,
    Special.NEGATIVE_INFINITY: AbsentReason.NEG_INF,
    Special.RESERVED: AbsentReason.RESERVED,
}
GW_CLOCK: Final = GatewayClock(skew_ns=None, utc_offset_ns=0)
RECEIVED_NS: Final = 1_767_225_600_000_000_000


def u8s() -> st.SearchStrategy[int]:
    return st.integers(0, 0xFF)


def u16s() -> st.SearchStrategy[int]:
    return st.integers(0, 0xFFFF)


finite_sfloats: st.SearchStrategy[Value] = st.builds(
    Num,
    st.integers(SFLOAT_MANTISSA_MIN, SFLOAT_MANTISSA_MAX),
    st.integers(SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX),
)
specials: st.SearchStrategy[Value] = st.sampled_from(list(Special))
sfloats: st.SearchStrategy[Value] = st.one_of(finite_sfloats, specials)
floats32: st.SearchStrategy[Value] = st.one_of(
    st.builds(Num, st.integers(FLOAT_MANTISSA_MIN, FLOAT_MANTISSA_MAX), st.integers(-128, 127)), specials
)
# Date Time: year 1582–9999 (§7.2); the simulator encodes a datetime, microseconds are dropped.
datetimes = st.datetimes(min_value=dt.datetime(1582, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59))


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


def same_number(sim: Value | None, gw: Number11073 | None) -> None:
    """Semantic equality: the simulator's Num/Special vs the gateway's mantissa/exponent/absent.

    A finite number must keep mantissa AND exponent (the precision), and its float value must be the
    correctly rounded ``m × 10^e`` on both sides; a special value must become its absent reason.
    """
    if sim is None:
        assert gw is None
        return
    assert gw is not None
    if isinstance(sim, Special):
        assert gw.absent is ABSENT[sim], (sim, gw)
        assert gw.value is None
        assert gw.precision is None
        return
    assert gw.absent is None, (sim, gw)
    assert (gw.mantissa, gw.exponent) == (sim.mantissa, sim.exponent)
    assert gw.value == float(sim)
    assert gw.precision == max(0, -sim.exponent)


def same_time(sim: dt.datetime | None, gw: DateTime | None) -> None:
    """The simulator's datetime vs the gateway's Date Time fields (whole seconds on the wire)."""
    if sim is None:
        assert gw is None
        return
    assert gw is not None
    assert (gw.year, gw.month, gw.day, gw.hours, gw.minutes, gw.seconds) == (
        sim.year,
        sim.month,
        sim.day,
        sim.hour,
        sim.minute,
        sim.second,
    )
    assert gw.datetime() == sim.replace(microsecond=0)


def same_reading_number(sim: Value, reading_value: float | None, precision: int | None, absent: str | None) -> None:
    """A gateway Reading built from an SFLOAT (points layer): value/precision, or the absent reason."""
    if isinstance(sim, Special):
        assert (reading_value, precision, absent) == (None, None, ABSENT[sim].value)
    else:
        assert (reading_value, precision, absent) == (float(sim), max(0, -sim.exponent), None)


# --------------------------------------------------------------------------------------------- §1 numbers


@SLOW
@given(v=sfloats)
def test_sfloat(v: Value) -> None:
    same_number(v, decode_sfloat(struct.unpack("<H", sfloat(v))[0]))


@SLOW
@given(v=floats32)
def test_float32(v: Value) -> None:
    # The gateway's float value of a FLOAT is m / 10**-e rounded once; Decimal→float is also
    # correctly rounded, so the values must be identical even for extreme exponents.
    same_number(v, decode_float(struct.unpack("<I", float32(v))[0]))


def test_protocol_number_vectors() -> None:
    """The §1 worked examples, encoded by the simulator, decoded by the gateway."""
    assert sfloat(Num.parse("93.3")) == bytes.fromhex("A5F3")
    assert decode_sfloat(0xF3A5).value == 93.3
    assert sfloat(Num(98, -5)) == struct.pack("<H", 0xB062)
    assert float32(Num.parse("3.919")) == bytes.fromhex("4F0F00FD")
    assert decode_float(0xFD000F4F) == Number11073(3919, -3)


# --------------------------------------------------------------------------------------------- §2 heart rate


@SLOW
@given(
    bpm=st.integers(0, 0xFFFF),
    contact=st.sampled_from(list(sim_hr.SensorContact)),
    energy=opt(st.integers(0, 0x1FFFF)),
    rr=st.lists(u16s(), max_size=9).map(tuple),
    wide=st.booleans(),
)
def test_heart_rate(
    bpm: int, contact: sim_hr.SensorContact, energy: int | None, rr: tuple[int, ...], wide: bool
) -> None:
    data = sim_hr.HeartRateMeasurement(bpm, contact, energy, rr, wide).to_bytes()
    m = gw_hr.HeartRateMeasurement.from_bytes(data)
    assert m.heart_rate == bpm
    assert bool(m.flags & gw_hr.HrFlags.HR_UINT16) == (wide or bpm > 0xFF)
    assert int(m.sensor_contact) == int(contact)
    assert m.contact_lost == (contact is sim_hr.SensorContact.NO_CONTACT)
    # The simulator saturates energy expended at 0xFFFF (§2.1), the gateway reads it as sent.
    assert m.energy_expended_kj == (None if energy is None else min(energy, 0xFFFF))
    assert m.rr_intervals == rr
    assert m.rr_ms == tuple(r * 1000 / 1024 for r in rr)


@FAST
@given(rr_ms=st.floats(200.0, 2000.0))
def test_rr_conversion_inverse(rr_ms: float) -> None:
    """sim ms → 1/1024 s → gateway ms: within half a wire unit."""
    raw = sim_hr.rr_ms_to_1024(rr_ms)
    back = gw_hr.HeartRateMeasurement.from_bytes(sim_hr.HeartRateMeasurement(60, rr_1024=(raw,)).to_bytes()).rr_ms[0]
    assert abs(back - rr_ms) <= 1000 / 1024 / 2 + 1e-9


@pytest.mark.parametrize("loc", list(sim_hr.BodySensorLocation))
def test_body_sensor_location(loc: sim_hr.BodySensorLocation) -> None:
    got = gw_hr.BodySensorLocation.from_bytes(sim_hr.body_sensor_location(loc))
    assert got.location == int(loc)
    assert got.name == loc.name.lower()


# --------------------------------------------------------------------------------------------- §3 blood pressure


@SLOW
@given(
    sys_=sfloats,
    dia=sfloats,
    mean=sfloats,
    kpa=st.booleans(),
    ts=opt(datetimes),
    pulse=opt(sfloats),
    user=opt(u8s()),
    status=opt(u16s()),
)
def test_blood_pressure(
    sys_: Value,
    dia: Value,
    mean: Value,
    kpa: bool,
    ts: dt.datetime | None,
    pulse: Value | None,
    user: int | None,
    status: int | None,
) -> None:
    sim_status = None if status is None else sim_bp.BpStatus(status)
    data = sim_bp.BloodPressureMeasurement(sys_, dia, mean, kpa, ts, pulse, user, sim_status).to_bytes()
    m = gw_bp.BloodPressureMeasurement.from_bytes(data)
    same_number(sys_, m.systolic)
    same_number(dia, m.diastolic)
    same_number(mean, m.mean_arterial)
    assert m.unit == ("kPa" if kpa else "mm[Hg]")
    same_time(ts, m.time_stamp)
    same_number(pulse, m.pulse_rate)
    assert m.user_id == user
    # Reserved status bits 6–15 are dropped by the gateway (§ general rules: ignore reserved bits).
    assert (None if m.status is None else int(m.status)) == (None if status is None else status & 0x3F)
    # Points layer: value/precision or the absent reason of each pressure, the pulse in /min.
    rs = gw_bp_points.readings(m, GW_CLOCK, RECEIVED_NS)
    sims = [sys_, dia, mean] + ([] if pulse is None else [pulse])
    assert len(rs) == len(sims)
    for sim_v, r in zip(sims, rs, strict=True):
        same_reading_number(sim_v, r.value, r.precision, r.absent)
    assert [r.unit for r in rs[:3]] == [m.unit] * 3
    if pulse is not None:
        assert rs[3].unit == "/min"


@FAST
@given(cuff=sfloats, kpa=st.booleans(), ts=opt(datetimes))
def test_intermediate_cuff_pressure(cuff: Value, kpa: bool, ts: dt.datetime | None) -> None:
    icp = gw_bp.IntermediateCuffPressure.from_bytes(sim_bp.intermediate_cuff_pressure(cuff, kpa=kpa, time_stamp=ts))
    same_number(cuff, icp.cuff_pressure)
    assert icp.unit == ("kPa" if kpa else "mm[Hg]")
    same_number(Special.NAN, icp.measurement.diastolic)
    same_number(Special.NAN, icp.measurement.mean_arterial)
    same_time(ts, icp.measurement.time_stamp)
    live = gw_bp_points.live_cuff_pressure(icp, RECEIVED_NS)
    same_reading_number(cuff, live.value, live.precision, None if live.absent is None else live.absent.value)


@FAST
@given(bits=st.integers(0, 0x3F))
def test_blood_pressure_feature(bits: int) -> None:
    got = gw_bp.BloodPressureFeature.from_bytes(sim_bp.blood_pressure_feature(sim_bp.BpFeature(bits)))
    assert int(got.features) == bits


def test_blood_pressure_vectors() -> None:
    """§3.1 examples built by the simulator are the documented bytes."""
    m = sim_bp.BloodPressureMeasurement(
        Num(120),
        Num(80),
        Num.parse("93.3"),
        time_stamp=dt.datetime(2024, 3, 15, 8, 30),
        pulse_bpm=Num(72),
        user_id=1,
        status=sim_bp.BpStatus.IRREGULAR_PULSE,
    )
    assert m.to_bytes() == bytes.fromhex("1E 78 00 50 00 A5 F3 E8 07 03 0F 08 1E 00 48 00 01 04 00")
    kpa = sim_bp.BloodPressureMeasurement(Num.parse("16.0"), Num.parse("10.7"), Num.parse("12.4"), kpa=True)
    assert kpa.to_bytes() == bytes.fromhex("01 A0 F0 6B F0 7C F0")
    assert sim_bp.intermediate_cuff_pressure(Num(152)) == bytes.fromhex("00 98 00 FF 07 FF 07")


# --------------------------------------------------------------------------------------------- §4 pulse oximeter


@SLOW
@given(
    spo2=sfloats,
    pr=sfloats,
    ts=opt(datetimes),
    meas=opt(u16s()),
    dev=opt(st.integers(0, 0xFFFFFF)),
    pai=opt(sfloats),
    clock_not_set=st.booleans(),
)
def test_plx_spot_check(
    spo2: Value,
    pr: Value,
    ts: dt.datetime | None,
    meas: int | None,
    dev: int | None,
    pai: Value | None,
    clock_not_set: bool,
) -> None:
    data = sim_plx.PlxSpotCheck(spo2, pr, ts, meas, dev, pai, clock_not_set).to_bytes()
    m = gw_plx.PlxSpotCheck.from_bytes(data)
    same_number(spo2, m.spo2)
    same_number(pr, m.pulse_rate)
    same_time(ts, m.time_stamp)
    # Reserved bits (measurement status 0–4, device/sensor status 16–23) are dropped by the gateway.
    assert (None if m.measurement_status is None else int(m.measurement_status)) == (
        None if meas is None else meas & 0xFFE0
    )
    assert (None if m.device_sensor_status is None else int(m.device_sensor_status)) == (
        None if dev is None else dev & 0xFFFF
    )
    same_number(pai, m.pulse_amplitude_index)
    assert m.clock_not_set == clock_not_set


@SLOW
@given(
    spo2=sfloats,
    pr=sfloats,
    fast=opt(st.tuples(sfloats, sfloats)),
    slow=opt(st.tuples(sfloats, sfloats)),
    meas=opt(u16s()),
    dev=opt(st.integers(0, 0xFFFFFF)),
    pai=opt(sfloats),
)
def test_plx_continuous(
    spo2: Value,
    pr: Value,
    fast: tuple[Value, Value] | None,
    slow: tuple[Value, Value] | None,
    meas: int | None,
    dev: int | None,
    pai: Value | None,
) -> None:
    m = gw_plx.PlxContinuous.from_bytes(sim_plx.PlxContinuous(spo2, pr, fast, slow, meas, dev, pai).to_bytes())
    same_number(spo2, m.spo2)
    same_number(pr, m.pulse_rate)
    same_number(None if fast is None else fast[0], m.spo2_fast)
    same_number(None if fast is None else fast[1], m.pulse_rate_fast)
    same_number(None if slow is None else slow[0], m.spo2_slow)
    same_number(None if slow is None else slow[1], m.pulse_rate_slow)
    assert (None if m.measurement_status is None else int(m.measurement_status)) == (
        None if meas is None else meas & 0xFFE0
    )
    assert (None if m.device_sensor_status is None else int(m.device_sensor_status)) == (
        None if dev is None else dev & 0xFFFF
    )
    same_number(pai, m.pulse_amplitude_index)


@FAST
@given(features=st.integers(0, 0xFF), meas_mask=u16s(), dev_mask=st.integers(0, 0xFFFFFF))
def test_plx_features(features: int, meas_mask: int, dev_mask: int) -> None:
    got = gw_plx.PlxFeatures.from_bytes(sim_plx.plx_features(sim_plx.PlxFeature(features), meas_mask, dev_mask))
    assert int(got.features) == features
    assert got.measurement_status_support == (meas_mask if features & 0x01 else None)
    assert got.device_sensor_status_support == (dev_mask if features & 0x02 else None)


# --------------------------------------------------------------------------------------------- §5 glucose


@SLOW
@given(
    seq=u16s(),
    base=datetimes,
    offset=opt(st.integers(-0x8000, 0x7FFF)),
    conc=opt(sfloats),
    mol=st.booleans(),
    kind=st.integers(0, 15),
    loc=st.integers(0, 15),
    status=opt(u16s()),
    context=st.booleans(),
)
def test_glucose_measurement(
    seq: int,
    base: dt.datetime,
    offset: int | None,
    conc: Value | None,
    mol: bool,
    kind: int,
    loc: int,
    status: int | None,
    context: bool,
) -> None:
    data = sim_glu.GlucoseMeasurement(seq, base, offset, conc, mol, kind, loc, status, context).to_bytes()
    m = gw_glu.GlucoseMeasurement.from_bytes(data)
    assert m.sequence == seq
    same_time(base, m.base_time)
    assert m.time_offset_min == offset
    same_number(conc, m.concentration)
    assert m.context_follows == context
    # Reserved annunciation bits 12–15 are dropped by the gateway.
    assert (None if m.sensor_status is None else int(m.sensor_status)) == (None if status is None else status & 0x0FFF)
    if conc is None:
        assert (m.sample_type, m.sample_location) == (None, None)
        return
    assert (m.sample_type, m.sample_location) == (kind, loc)
    assert m.is_control_solution == (kind == 10 or loc == 4)
    # Unit: the simulator sends kg/L or mol/L; the gateway converts exactly by shifting the exponent
    # (kg/L × 10^5 = mg/dL, mol/L × 10^3 = mmol/L), keeping the mantissa and hence the precision.
    assert m.unit == ("mmol/L" if mol else "mg/dL")
    converted = m.converted
    assert converted is not None
    if isinstance(conc, Num):
        shift = 3 if mol else 5
        assert (converted.mantissa, converted.exponent) == (conc.mantissa, conc.exponent + shift)
        assert Decimal(converted.mantissa).scaleb(converted.exponent) == Decimal(conc.mantissa).scaleb(
            conc.exponent + shift
        )
    else:
        assert converted.absent is ABSENT[conc]


@SLOW
@given(
    seq=u16s(),
    carb=opt(st.tuples(u8s(), sfloats)),
    meal=opt(u8s()),
    tester_health=opt(st.tuples(st.integers(0, 15), st.integers(0, 15))),
    exercise=opt(st.tuples(u16s(), u8s())),
    medication=opt(st.tuples(u8s(), sfloats, st.booleans())),
    hba1c=opt(sfloats),
)
def test_glucose_context(
    seq: int,
    carb: tuple[int, Value] | None,
    meal: int | None,
    tester_health: tuple[int, int] | None,
    exercise: tuple[int, int] | None,
    medication: tuple[int, Value, bool] | None,
    hba1c: Value | None,
) -> None:
    data = sim_glu.GlucoseContext(seq, carb, meal, tester_health, exercise, medication, hba1c).to_bytes()
    c = gw_glu.GlucoseContext.from_bytes(data)
    assert c.sequence == seq
    assert c.extended_flags is None
    assert c.carbohydrate_id == (None if carb is None else carb[0])
    same_number(None if carb is None else carb[1], c.carbohydrate_kg)
    assert c.meal == meal
    assert (c.tester, c.health) == (tester_health or (None, None))
    assert (c.exercise_duration_s, c.exercise_intensity_pct) == (exercise or (None, None))
    assert c.medication_id == (None if medication is None else medication[0])
    same_number(None if medication is None else medication[1], c.medication)
    if medication is not None:
        assert c.medication_unit == ("L" if medication[2] else "kg")
    same_number(hba1c, c.hba1c_pct)


@FAST
@given(bits=st.integers(0, 0x07FF))
def test_glucose_feature(bits: int) -> None:
    got = gw_glu.GlucoseFeature.from_bytes(sim_glu.glucose_feature(sim_glu.GlucoseFeature(bits)))
    assert int(got.features) == bits


def test_glucose_vectors() -> None:
    m = sim_glu.GlucoseMeasurement(
        5, dt.datetime(2024, 3, 15, 7, 45), 2, Num(98, -5), status=0, context_follows=True
    ).to_bytes()
    assert m == bytes.fromhex("1B 05 00 E8 07 03 0F 07 2D 00 02 00 62 B0 11 00 00")
    ctx = sim_glu.GlucoseContext(5, carbohydrate=(1, Num(50, -3)), meal=1, hba1c=Num(65, -1)).to_bytes()
    assert ctx == bytes.fromhex("43 05 00 01 32 D0 01 41 F0")


# --------------------------------------------------------------------------------------------- §5.4 RACP


@FAST
@given(
    op=st.sampled_from(list(sim_racp.RacpOpCode)),
    operator=st.sampled_from(list(sim_racp.RacpOperator)),
    operands=st.lists(u16s(), max_size=2),
    filter_type=opt(st.sampled_from([1, 2])),
)
def test_racp_request_sim_to_gateway(
    op: sim_racp.RacpOpCode, operator: sim_racp.RacpOperator, operands: list[int], filter_type: int | None
) -> None:
    """Collector-side requests built by the simulator's tool encoder, parsed by the gateway."""
    data = sim_racp.racp_request(op, operator, *operands, filter_type=filter_type)
    req = gw_racp.RacpRequest.from_bytes(data)
    assert (req.op, req.operator) == (int(op), int(operator))
    expected = b"" if not operands else bytes([filter_type or 1]) + struct.pack(f"<{len(operands)}H", *operands)
    assert req.operand == expected
    assert req.to_bytes() == data


@FAST
@given(seq=u16s())
def test_racp_request_gateway_to_sim(seq: int) -> None:
    """The gateway's requests, parsed by the simulated device (its side of RACP)."""
    parse = sim_racp.RacpRequest.parse
    Op, Opr = sim_racp.RacpOpCode, sim_racp.RacpOperator
    cases: list[tuple[gw_racp.RacpRequest, sim_racp.RacpRequest]] = [
        (gw_racp.RacpRequest.report_all(), sim_racp.RacpRequest(Op.REPORT_STORED_RECORDS, Opr.ALL)),
        (gw_racp.RacpRequest.report_first(), sim_racp.RacpRequest(Op.REPORT_STORED_RECORDS, Opr.FIRST)),
        (gw_racp.RacpRequest.report_last(), sim_racp.RacpRequest(Op.REPORT_STORED_RECORDS, Opr.LAST)),
        (gw_racp.RacpRequest.count_all(), sim_racp.RacpRequest(Op.REPORT_NUMBER_OF_RECORDS, Opr.ALL)),
        (gw_racp.RacpRequest.delete_all(), sim_racp.RacpRequest(Op.DELETE_STORED_RECORDS, Opr.ALL)),
        (gw_racp.RacpRequest.abort(), sim_racp.RacpRequest(Op.ABORT, Opr.NULL)),
        (
            gw_racp.RacpRequest.report_from_sequence(seq),
            sim_racp.RacpRequest(Op.REPORT_STORED_RECORDS, Opr.GREATER_OR_EQUAL, seq, None),
        ),
        (
            gw_racp.RacpRequest.count_from_sequence(seq),
            sim_racp.RacpRequest(Op.REPORT_NUMBER_OF_RECORDS, Opr.GREATER_OR_EQUAL, seq, None),
        ),
        (
            gw_racp.RacpRequest.report_from_time_offset(seq),
            sim_racp.RacpRequest(Op.REPORT_STORED_RECORDS, Opr.GREATER_OR_EQUAL, seq, None),
        ),
        (
            gw_racp.RacpRequest.count_from_time_offset(seq),
            sim_racp.RacpRequest(Op.REPORT_NUMBER_OF_RECORDS, Opr.GREATER_OR_EQUAL, seq, None),
        ),
    ]
    for gw_req, want in cases:
        assert parse(gw_req.to_bytes()) == want
        # Byte-identical with the simulator's own encoder of the same request.
        operands = () if want.low is None else (want.low,)
        assert sim_racp.racp_request(want.op, want.operator, *operands) == gw_req.to_bytes()


def test_racp_user_facing_time_filter_is_refused_with_a_response_code() -> None:
    """The simulated meter supports only filter 0x01 (sequence number / time offset): the gateway's
    user-facing-time request gets 'operand not supported' (a valid §5.4 answer, not a disagreement)."""
    req = gw_racp.RacpRequest.report_from_time(DateTime(2024, 3, 15, 7, 0, 0))
    with pytest.raises(sim_racp.RacpRequestError) as err:
        sim_racp.RacpRequest.parse(req.to_bytes())
    assert err.value.code is sim_racp.RacpResponse.OPERAND_NOT_SUPPORTED


@FAST
@given(count=u16s(), request_op=u8s(), code=st.sampled_from(list(sim_racp.RacpResponse)))
def test_racp_indications(count: int, request_op: int, code: sim_racp.RacpResponse) -> None:
    n = gw_racp.parse_racp_indication(sim_racp.racp_number_of_records(count))
    assert n == gw_racp.RacpNumberOfRecords(count)
    assert n.to_bytes() == sim_racp.racp_number_of_records(count)
    r = gw_racp.parse_racp_indication(sim_racp.racp_response_code(request_op, code))
    assert isinstance(r, gw_racp.RacpResponse)
    assert (r.request_op, r.code) == (request_op, int(code))
    assert r.success == (code is sim_racp.RacpResponse.SUCCESS)
    assert r.no_records == (code is sim_racp.RacpResponse.NO_RECORDS_FOUND)
    assert r.to_bytes() == sim_racp.racp_response_code(request_op, code)


# --------------------------------------------------------------------------------------------- §6 CGM

cgm_records = st.builds(
    sim_cgm.CgmMeasurement,
    sfloats,
    u16s(),
    opt(u8s()),
    opt(u8s()),
    opt(u8s()),
    opt(sfloats),
    opt(sfloats),
)


def same_cgm_record(sim: sim_cgm.CgmMeasurement, gw: gw_cgm.CgmRecord, encoded: bytes, e2e: bool) -> None:
    same_number(sim.glucose, gw.glucose_mg_dl)
    assert gw.time_offset_min == sim.time_offset_min
    assert (gw.status_octet, gw.cal_temp_octet, gw.warning_octet) == (sim.status, sim.cal_temp, sim.warning)
    assert int(gw.annunciation) == (sim.status or 0) | (sim.cal_temp or 0) << 8 | (sim.warning or 0) << 16
    same_number(sim.trend, gw.trend)
    same_number(sim.quality, gw.quality_pct)
    assert gw.crc == (crc16_mcrf4xx(encoded[:-2]) if e2e else None)


@SLOW
@given(records=st.lists(cgm_records, min_size=1, max_size=5), e2e=st.booleans())
def test_cgm_measurement_multi_record(records: list[sim_cgm.CgmMeasurement], e2e: bool) -> None:
    encoded = [r.to_bytes(e2e_crc=e2e) for r in records]
    data = sim_cgm.cgm_notification(encoded)
    # Decoded with the CRC mode known from CGM Feature, and with the mode inferred per record.
    for crc in (e2e, None):
        m = gw_cgm.CgmMeasurement.from_bytes(data, crc=crc)
        assert len(m.records) == len(records)
        for sim, gw, enc in zip(records, m.records, encoded, strict=True):
            same_cgm_record(sim, gw, enc, e2e)


@FAST
@given(records=st.lists(cgm_records, min_size=1, max_size=3), bad=st.integers(0, 2))
def test_cgm_corrupt_crc_is_rejected(records: list[sim_cgm.CgmMeasurement], bad: int) -> None:
    bad %= len(records)
    data = b"".join(r.to_bytes(e2e_crc=True, corrupt_crc=i == bad) for i, r in enumerate(records))
    with pytest.raises(PayloadError) as err:
        gw_cgm.CgmMeasurement.from_bytes(data, crc=True)
    assert err.value.reason == "bad_crc"


@FAST
@given(features=st.integers(0, 0x1FFFF), kind=st.integers(0, 15), loc=st.integers(0, 15))
def test_cgm_feature(features: int, kind: int, loc: int) -> None:
    data = sim_cgm.cgm_feature(sim_cgm.CgmFeature(features), kind, loc)
    f = gw_cgm.CgmFeature.from_bytes(data)
    assert int(f.features) == features
    assert (f.sample_type, f.sample_location) == (kind, loc)
    assert f.e2e_crc == bool(features & sim_cgm.CgmFeature.E2E_CRC)
    assert f.crc == (crc16_mcrf4xx(data[:4]) if f.e2e_crc else 0xFFFF)


@FAST
@given(offset=u16s(), status=u8s(), cal=u8s(), warning=u8s(), e2e=st.booleans())
def test_cgm_status(offset: int, status: int, cal: int, warning: int, e2e: bool) -> None:
    data = sim_cgm.cgm_status(offset, status, cal, warning, e2e_crc=e2e)
    for crc in (e2e, None):
        s = gw_cgm.CgmStatus.from_bytes(data, crc=crc)
        assert s.time_offset_min == offset
        assert int(s.status) == status | cal << 8 | warning << 16


@FAST
@given(start=datetimes, tz=st.integers(-128, 127), dst=u8s(), hours=u16s(), e2e=st.booleans())
def test_cgm_session_start_and_run_time(start: dt.datetime, tz: int, dst: int, hours: int, e2e: bool) -> None:
    for crc in (e2e, None):
        s = gw_cgm.CgmSessionStartTime.from_bytes(sim_cgm.cgm_session_start_time(start, tz, dst, e2e_crc=e2e), crc=crc)
        same_time(start, s.start)
        assert (s.time_zone, s.dst_offset) == (tz, dst)
        # Semantic: the UTC offset implied by zone (15-min steps) and DST code (§6.4, §7.3).
        dst_min = {0: 0, 2: 30, 4: 60, 8: 120}.get(dst)
        want = None if tz == -128 or dst_min is None else (tz * 15 + dst_min) * 60_000_000_000
        assert s.utc_offset_ns == want
        rt = gw_cgm.CgmSessionRunTime.from_bytes(sim_cgm.cgm_session_run_time(hours, e2e_crc=e2e), crc=crc)
        assert rt.hours == hours


@FAST
@given(
    request_op=u8s(),
    code=st.sampled_from(list(sim_cgm.SocpResponse)),
    interval=u8s(),
    level_op=st.sampled_from(sorted(gw_socp.LEVEL_RESPONSES)),
    level=sfloats,
    e2e=st.booleans(),
)
def test_socp_indications(
    request_op: int, code: sim_cgm.SocpResponse, interval: int, level_op: int, level: Value, e2e: bool
) -> None:
    for crc in (e2e, None):
        r = gw_socp.SocpIndication.from_bytes(sim_cgm.socp_response(request_op, code, e2e_crc=e2e), crc=crc)
        assert r.response == (request_op, int(code))
        ci = sim_cgm.socp(sim_cgm.SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE, bytes([interval]), e2e_crc=e2e)
        assert gw_socp.SocpIndication.from_bytes(ci, crc=crc).communication_interval_min == interval
        lv = gw_socp.SocpIndication.from_bytes(sim_cgm.socp(level_op, sfloat(level), e2e_crc=e2e), crc=crc)
        same_number(level, lv.level)


@FAST
@given(minutes=u8s(), e2e=st.booleans())
def test_socp_requests_byte_identical(minutes: int, e2e: bool) -> None:
    """Collector writes: the gateway's SOCP requests equal the simulator's encoding of the same op."""
    Socp = sim_cgm.SocpOpCode
    assert gw_socp.SocpRequest.start_session().to_bytes(crc=e2e) == sim_cgm.socp(Socp.START_SESSION, e2e_crc=e2e)
    assert gw_socp.SocpRequest.stop_session().to_bytes(crc=e2e) == sim_cgm.socp(Socp.STOP_SESSION, e2e_crc=e2e)
    assert gw_socp.SocpRequest.set_communication_interval(minutes).to_bytes(crc=e2e) == sim_cgm.socp(
        Socp.SET_COMMUNICATION_INTERVAL, bytes([minutes]), e2e_crc=e2e
    )
    assert gw_socp.SocpRequest.get_communication_interval().to_bytes(crc=e2e) == sim_cgm.socp(
        Socp.GET_COMMUNICATION_INTERVAL, e2e_crc=e2e
    )


@FAST
@given(data=st.binary(max_size=40))
def test_e2e_crc_implementations_agree(data: bytes) -> None:
    assert sim_crc16(data) == crc16_mcrf4xx(data)


def test_cgm_vectors() -> None:
    """§6 examples built by the simulator."""
    assert sim_cgm.CgmMeasurement(Num(120), 60).to_bytes(e2e_crc=True) == bytes.fromhex("08 00 78 00 3C 00 B7 89")
    two = sim_cgm.cgm_notification(
        [
            sim_cgm.CgmMeasurement(Num(120), 30).to_bytes(e2e_crc=False),
            sim_cgm.CgmMeasurement(Num(119), 29).to_bytes(e2e_crc=False),
        ]
    )
    assert two == bytes.fromhex("06 00 78 00 1E 00 06 00 77 00 1D 00")
    assert sim_cgm.cgm_feature(sim_cgm.CgmFeature.E2E_CRC, 9, 5) == bytes.fromhex("00 10 00 59 F0 49")
    assert sim_cgm.cgm_status(300, 0, 0x02, 0, e2e_crc=True) == bytes.fromhex("2C 01 00 02 00 22 08")
    assert sim_cgm.cgm_session_run_time(336, e2e_crc=True) == bytes.fromhex("50 01 C6 32")
    start = sim_cgm.cgm_session_start_time(dt.datetime(2024, 3, 15, 7), 4, 0, e2e_crc=True)
    assert start == bytes.fromhex("E8 07 03 0F 07 00 00 04 00 0A BA")
    assert sim_cgm.socp_response(0x1A, sim_cgm.SocpResponse.SUCCESS, e2e_crc=True) == bytes.fromhex("1C 1A 01 6D 60")
    ext = sim_cgm.CgmMeasurement(Num(115), 300, cal_temp=0x03, trend=Num(36), quality=Num(26))
    assert ext.to_bytes(e2e_crc=True) == bytes.fromhex("0D 43 73 00 2C 01 03 24 00 1A 00 3E 04")


# --------------------------------------------------------------------------------------------- §7 time, DIS, battery


@SLOW
@given(
    when=st.datetimes(min_value=dt.datetime(1582, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    reason=st.integers(0, 15),
)
def test_current_time_sim_to_gateway(when: dt.datetime, reason: int) -> None:
    data = sim_time.CurrentTime(when, sim_time.AdjustReason(reason)).to_bytes()
    ct = gw_info.CurrentTime.from_bytes(data)
    same_time(when, ct.date_time)
    assert ct.day_of_week == when.isoweekday()
    assert ct.fractions256 == when.microsecond * 256 // 1_000_000
    assert int(ct.adjust_reason) == reason
    # Semantic: the gateway's datetime is the simulator's, truncated to the 1/256 s wire resolution.
    got = ct.datetime()
    assert got is not None
    assert 0 <= (when - got) / dt.timedelta(microseconds=1) < 1_000_000 / 256
    assert ct.to_bytes() == data


@FAST
@given(when=datetimes, frac=u8s(), reason=st.integers(0, 15))
def test_current_time_gateway_to_sim(when: dt.datetime, frac: int, reason: int) -> None:
    """A collector write of Current Time (gateway encoder) as the simulated device reads it."""
    gw = gw_info.CurrentTime(DateTime.of(when), when.isoweekday(), frac, gw_info.AdjustReason(reason))
    sim = sim_time.CurrentTime.from_bytes(gw.to_bytes())
    assert sim.time == gw.datetime()
    assert int(sim.adjust_reason) == reason


@FAST
@given(tz=st.integers(-128, 127), dst=u8s())
def test_local_time_information(tz: int, dst: int) -> None:
    lti = gw_info.LocalTimeInformation.from_bytes(sim_time.local_time_information(tz, dst))
    assert (lti.time_zone, lti.dst_offset) == (tz, dst)


@FAST
@given(percent=st.integers(0, 100))
def test_battery_level(percent: int) -> None:
    b = gw_info.BatteryLevel.from_bytes(sim_info.battery_level(percent))
    assert b.percent == percent
    assert b.valid


@FAST
@given(text=st.text(max_size=40), manufacturer=st.integers(0, 2**40 - 1), oui=st.integers(0, 2**24 - 1))
def test_device_information(text: str, manufacturer: int, oui: int) -> None:
    # The gateway strips trailing NULs some devices append (documented in decode_string): the only
    # legitimate difference from the simulator's plain UTF-8.
    assert gw_info.decode_string(sim_info.utf8(text)) == text.rstrip("\x00")
    sid = gw_info.SystemId.from_bytes(sim_info.system_id(manufacturer, oui))
    assert (sid.manufacturer_id, sid.oui) == (manufacturer, oui)


# --------------------------------------------------------------------------------------------- §8 Polar PMD


@FAST
@given(
    op=u8s(),
    kind=st.integers(0, 63),
    status=st.sampled_from(list(sim_pmd.PmdStatus)),
    more=st.booleans(),
    rate=u16s(),
    resolution=u16s(),
    range_=u16s(),
)
def test_pmd_control_point_response(
    op: int, kind: int, status: sim_pmd.PmdStatus, more: bool, rate: int, resolution: int, range_: int
) -> None:
    params = sim_pmd.pmd_settings(
        [
            (sim_pmd.PmdSetting.SAMPLE_RATE, [rate]),
            (sim_pmd.PmdSetting.RESOLUTION, [resolution]),
            (sim_pmd.PmdSetting.RANGE, [range_, rate]),
        ]
    )
    r = gw_pmd.PmdControlPointResponse.from_bytes(sim_pmd.pmd_response(op, kind, status, more, params))
    assert (r.op, r.measurement_type, r.status, r.more) == (op, kind, int(status), more)
    assert r.ok == (status is sim_pmd.PmdStatus.SUCCESS)
    assert r.status_name == status.name.lower()
    assert r.settings() == {0: (rate,), 1: (resolution,), 2: (range_, rate)}


@FAST
@given(channels=st.integers(1, 4), factor=st.sampled_from([1.0, 0.5, 0.25, 2.0, 1.5]))
def test_pmd_settings_channels_and_conversion_factor(channels: int, factor: float) -> None:
    """§8: channels are u8 and the conversion factor an IEEE-754 float32, not u16."""
    params = sim_pmd.pmd_settings(
        [(sim_pmd.PmdSetting.CHANNELS, [channels]), (sim_pmd.PmdSetting.CONVERSION_FACTOR, [factor])]
    )
    assert gw_pmd.parse_settings(params) == {4: (channels,), 5: (factor,)}


@FAST
@given(types=st.sets(st.sampled_from(list(sim_pmd.PmdType))))
def test_pmd_features(types: set[sim_pmd.PmdType]) -> None:
    f = gw_pmd.PmdFeatures.from_bytes(sim_pmd.pmd_features(types))
    for t in sim_pmd.PmdType:
        assert f.supports(t) == (t in types)


def test_pmd_requests_byte_identical() -> None:
    start = sim_pmd.pmd_start_request(
        sim_pmd.PmdType.ECG, [(sim_pmd.PmdSetting.SAMPLE_RATE, [130]), (sim_pmd.PmdSetting.RESOLUTION, [14])]
    )
    assert gw_pmd.PmdRequest.start_ecg().to_bytes() == start == bytes.fromhex("02 00 00 01 82 00 01 01 0E 00")
    assert gw_pmd.PmdRequest.stop().to_bytes() == sim_pmd.pmd_stop_request(sim_pmd.PmdType.ECG)
    # The simulated strap accepts the gateway's start settings.
    assert EcgStrap._check_start(gw_pmd.PmdRequest.start_ecg().to_bytes()[2:]) is sim_pmd.PmdStatus.SUCCESS


@SLOW
@given(
    when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    samples=st.lists(st.integers(-(2**23), 2**23 - 1), min_size=1, max_size=80),
)
def test_ecg_frame(when: dt.datetime, samples: list[int]) -> None:
    # The gateway rejects frames without samples and time stamps beyond int64 ns (year 2292);
    # the simulator never sends either, so the generated inputs stay inside both.
    ts = sim_pmd.polar_ns(when)
    data = sim_pmd.EcgFrame(ts, samples).to_bytes()
    f = gw_pmd.EcgFrame.from_bytes(data)
    assert f.timestamp_ns == ts
    assert f.samples.tolist() == samples
    times = f.sample_times_ns()
    assert int(times[-1]) == ts
    if len(samples) > 1:
        assert np.all(np.abs(np.diff(times) - 1e9 / 130) <= 1)
    assert f.to_bytes() == data
    # Semantic: Polar ns since 2000-01-01 → Unix ns when the strap clock was set to UTC; the
    # waveform's last sample lands on the simulator's wall-clock instant (within rounding).
    w = gw_pmd_points.waveform(f, gw_pmd_points.PolarTimebase.device_utc())
    unix_ns = (when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) * 1000
    assert abs(w.start_ns + round((len(samples) - 1) * 1e9 / 130) - unix_ns) <= 1
    assert w.samples.tolist() == samples
    entry = catalog.decode(normalize_uuid("fb005c82-02e7-f387-1cad-8acd2d8df0c8"), data)[0]
    assert entry["samples"] == samples


def test_ecg_vector() -> None:
    frame = sim_pmd.EcgFrame(599_616_023_171_427_290, [-32766, 32770, 400]).to_bytes()
    assert frame == bytes.fromhex("00 DA EB C3 9E 98 43 52 08 00 02 80 FF 02 80 00 90 01 00")
    times = gw_pmd.EcgFrame.from_bytes(frame).sample_times_ns().tolist()
    assert times == [599_616_023_156_042_675, 599_616_023_163_734_982, 599_616_023_171_427_290]


# --------------------------------------------------------------------------------------------- simulated devices

SECONDS: Final = 5
CONNECTION: Final = cast(Any, SimpleNamespace(att_mtu=185, encryption=True, authenticated=True))
"""Stands in for a bumble Connection where the simulator only needs the ATT MTU."""


def uuid_of(ch: Characteristic[bytes]) -> str:
    return normalize_uuid(ch.uuid.to_hex_str())


def decode_all(uuid: str, data: bytes) -> list[dict[str, Any]]:
    entries = catalog.decode(uuid, data)
    assert entries, (uuid, data.hex())
    return entries


async def read_everything(device: SimPeripheral) -> dict[str, bytes]:
    """Read every readable characteristic of ``device`` (as a central would) and decode it."""
    seen: dict[str, bytes] = {}
    for service in device.standard_services() + device.profile_services():
        for ch in service.characteristics:
            assert isinstance(ch, Characteristic)
            if ch.properties & Characteristic.Properties.READ:
                uuid = uuid_of(ch)
                seen[uuid] = value = await ch.read_value(CONNECTION)
                decode_all(uuid, value)
    return seen


def ident(profile: Profile, index: int = 0) -> DeviceIdentity:
    return device_identity(profile, index, 11)


async def test_heart_rate_strap_stream() -> None:
    strap = HeartRateStrap(ident(Profile.HEART_RATE), seed=1)
    await read_everything(strap)
    energies = []
    for _ in range(SECONDS * 3):
        sim = strap.next_measurement()
        m = gw_hr.HeartRateMeasurement.from_bytes(sim.to_bytes())
        assert (m.heart_rate, m.rr_intervals, m.energy_expended_kj) == (sim.bpm, sim.rr_1024, sim.energy_kj)
        assert m.sensor_contact is gw_hr.SensorContact.CONTACT
        energies.append(m.energy_expended_kj)
        decode_all(uuid_of(strap.measurement_char), sim.to_bytes())
    assert any(e is not None for e in energies)
    # measure() without a radio pushes nothing and returns the encoded notification.
    gw_hr.HeartRateMeasurement.from_bytes(await strap.measure())


async def test_blood_pressure_cuff_cycle() -> None:
    cuff = BloodPressureCuff(ident(Profile.BLOOD_PRESSURE), seed=2, cuff_step_s=0.0)
    await read_everything(cuff)
    for _ in range(SECONDS):
        sim = cuff.next_result()
        m = gw_bp.BloodPressureMeasurement.from_bytes(sim.to_bytes())
        same_number(sim.systolic, m.systolic)
        same_number(sim.diastolic, m.diastolic)
        same_number(sim.mean_arterial, m.mean_arterial)
        same_number(sim.pulse_bpm, m.pulse_rate)
        same_time(sim.time_stamp, m.time_stamp)
        assert m.user_id == sim.user_id
        assert int(m.status or 0) == int(sim.status or 0)
        decode_all(uuid_of(cuff.measurement_char), sim.to_bytes())
    for pressure in range(180, 40, -20):  # the cuff pressures of one measure() cycle
        data = sim_bp.intermediate_cuff_pressure(Num(pressure))
        assert gw_bp.IntermediateCuffPressure.from_bytes(data).cuff_pressure.value == pressure
        decode_all(uuid_of(cuff.cuff_char), data)
    gw_bp.BloodPressureMeasurement.from_bytes(await cuff.measure())


async def test_pulse_oximeter_stream() -> None:
    plx = PulseOximeter(ident(Profile.PULSE_OXIMETER), seed=3, spot_check_every=2)
    await read_everything(plx)
    for _ in range(SECONDS):
        c = gw_plx.PlxContinuous.from_bytes(data := await plx.measure())
        assert c.spo2.value is not None and 70 <= c.spo2.value <= 100
        assert c.measurement_status == gw_plx.PlxMeasurementStatus.MEASUREMENT_ONGOING
        assert c.pulse_amplitude_index is not None and c.pulse_amplitude_index.exponent == -1
        decode_all(uuid_of(plx.continuous_char), data)
        spo2, pr = plx.next_reading()
        s = gw_plx.PlxSpotCheck.from_bytes(spot := plx.spot_check(spo2, pr))
        assert (s.spo2.value, s.pulse_rate.value) == (spo2, pr)
        assert s.time_stamp is not None and s.measurement_status == gw_plx.PlxMeasurementStatus.VALIDATED
        decode_all(uuid_of(plx.spot_check_char), spot)


@pytest.mark.parametrize("mol_per_l", [False, True])
async def test_glucose_meter_records(mol_per_l: bool) -> None:
    meter = GlucoseMeter(ident(Profile.GLUCOSE_METER), seed=4, records=SECONDS * 2, mol_per_l=mol_per_l)
    meter.add_control_solution()
    await read_everything(meter)
    pending: gw_glu.GlucoseMeasurement | None = None
    seen: set[str] = set()
    for ch, value, _ in meter.notifications(range(len(meter.records)), CONNECTION):
        uuid = uuid_of(ch)
        seen.add(uuid)
        decode_all(uuid, value)
        if ch is meter.measurement_char:
            m = gw_glu.GlucoseMeasurement.from_bytes(value)
            stored = meter.records[m.sequence]
            assert stored.sequence == m.sequence
            same_time(stored.base_time, m.base_time)
            assert m.unit == ("mmol/L" if mol_per_l else "mg/dL")
            assert m.converted is not None and m.converted.value is not None
            mg_dl = m.converted.value * (18.016 if mol_per_l else 1.0)
            assert abs(mg_dl - stored.mg_dl) <= (1.0 if mol_per_l else 0.0)
            assert m.is_control_solution == (stored.type == 10)
            pending = m if m.context_follows else None
        else:
            ctx = gw_glu.GlucoseContext.from_bytes(value)
            assert pending is not None and ctx.sequence == pending.sequence
            assert ctx.carbohydrate_kg is not None and ctx.carbohydrate_kg.exponent == -3
            pending = None
    assert seen == {uuid_of(meter.measurement_char), uuid_of(meter.context_char)}


@pytest.mark.parametrize("e2e", [True, False])
async def test_cgm_records_and_reads(e2e: bool) -> None:
    cgm = Cgm(ident(Profile.CGM), seed=5, records=SECONDS * 4, e2e_crc=e2e)
    seen = await read_everything(cgm)
    feature = gw_cgm.CgmFeature.from_bytes(seen[normalize_uuid("2aa8")])
    assert feature.e2e_crc == e2e
    decoded: list[gw_cgm.CgmRecord] = []
    multi = False
    for ch, value, count in cgm.notifications(range(len(cgm.records)), CONNECTION):
        assert ch is cgm.measurement_char
        m = gw_cgm.CgmMeasurement.from_bytes(value, crc=feature.e2e_crc)
        assert len(m.records) == count
        multi |= count > 1
        decoded.extend(m.records)
        decode_all(uuid_of(ch), value)
    assert multi
    assert len(decoded) == len(cgm.records)
    for sim, gw in zip(cgm.records, decoded, strict=True):
        same_cgm_record(sim, gw, cgm.encode(sim), e2e)
    # A fresh reading (live notification) and the gateway's SOCP write, as the device checks it.
    record = await cgm.measure()
    same_cgm_record(
        record, gw_cgm.CgmMeasurement.from_bytes(cgm.encode(record), crc=e2e).records[0], cgm.encode(record), e2e
    )
    assert cgm._check_crc(gw_socp.SocpRequest.start_session().to_bytes(crc=e2e)) == b"\x1a"


async def test_ecg_strap_stream() -> None:
    strap = EcgStrap(ident(Profile.ECG), seed=6)
    seen = await read_everything(strap)
    assert gw_pmd.PmdFeatures.from_bytes(await strap._read_control(CONNECTION)).supports(0)
    assert normalize_uuid("fb005c81-02e7-f387-1cad-8acd2d8df0c8") in seen
    # Control point: settings, stop, and a refused measurement type, each decoded by the gateway.
    settings_reply = gw_pmd.PmdControlPointResponse.from_bytes(
        strap._control(CONNECTION, gw_pmd.PmdRequest.get_settings().to_bytes())
    )
    assert settings_reply.ok and settings_reply.settings() == {0: (ECG_RATE_HZ,), 1: (14,)}
    stop = gw_pmd.PmdControlPointResponse.from_bytes(strap._control(CONNECTION, gw_pmd.PmdRequest.stop().to_bytes()))
    assert stop.ok and (stop.op, stop.measurement_type) == (gw_pmd.PmdOp.STOP, 0)
    acc = gw_pmd.PmdControlPointResponse.from_bytes(strap._control(CONNECTION, bytes([2, 2])))
    assert acc.status_name == "not_supported"
    # Data frames exactly as the strap's stream builds them (73 samples, time stamp of the last).
    period_ns = 1e9 / ECG_RATE_HZ
    start_ns = sim_pmd.polar_ns(strap.clock.now())
    total = 0
    previous: int | None = None
    for _ in range(SECONDS * ECG_RATE_HZ // SAMPLES_PER_FRAME):
        samples = strap.ecg.frame(float(strap.source.model.value), SAMPLES_PER_FRAME).tolist()
        total += len(samples)
        data = sim_pmd.EcgFrame(start_ns + round(total * period_ns), samples).to_bytes()
        f = gw_pmd.EcgFrame.from_bytes(data)
        assert f.samples.tolist() == samples
        assert f.timestamp_ns == start_ns + round(total * period_ns)
        if previous is not None:
            assert abs((f.timestamp_ns - previous) / len(samples) - period_ns) < 1
        previous = f.timestamp_ns
        decode_all(uuid_of(strap.data_char), data)
    # The strap's heart-rate service too.
    decode_all(uuid_of(strap.measurement_char), strap.next_measurement().to_bytes())


def test_every_device_built_without_radio() -> None:
    """Guard: the device tests above cover every simulated profile."""
    covered = {Profile.HEART_RATE, Profile.BLOOD_PRESSURE, Profile.PULSE_OXIMETER, Profile.GLUCOSE_METER}
    covered |= {Profile.CGM, Profile.ECG}
    assert covered == set(Profile)
