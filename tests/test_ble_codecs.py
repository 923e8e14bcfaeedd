"""BLE codecs against the verified byte vectors of protocols.md §1–§8, byte for byte."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import numpy as np
import pytest

from drivers.blood_pressure.codec import BloodPressureMeasurement, BpStatus, IntermediateCuffPressure
from drivers.blood_pressure.points import LiveCuffPressure, live_cuff_pressure
from drivers.blood_pressure.points import readings as bp_readings
from drivers.cgm.codec import (
    CgmAnnunciation,
    CgmFeature,
    CgmMeasurement,
    CgmSessionRunTime,
    CgmSessionStartTime,
    CgmStatus,
)
from drivers.cgm.crc import with_crc
from drivers.cgm.points import readings as cgm_readings
from drivers.cgm.socp import SocpIndication, SocpOpCode, SocpRequest
from drivers.device_info.codec import BatteryLevel, CurrentTime, LocalTimeInformation, PnpId, SystemId, decode_string
from drivers.device_info.points import battery_readings
from drivers.glucose.codec import GlucoseContext, GlucoseMeasurement
from drivers.glucose.points import readings as glucose_readings
from drivers.heart_rate.codec import BodySensorLocation, HeartRateMeasurement, SensorContact
from drivers.heart_rate.points import readings as hr_readings
from drivers.polar_pmd.codec import EcgFrame, PmdControlPointResponse, PmdRequest
from drivers.polar_pmd.points import POLAR_EPOCH_UNIX_NS, PolarTimebase, waveform
from drivers.pulse_oximeter.codec import PlxContinuous, PlxMeasurementStatus, PlxSpotCheck
from drivers.pulse_oximeter.points import is_demo_or_test
from drivers.pulse_oximeter.points import readings as plx_readings
from drivers.sdk.clock import DeviceClock, naive_to_ns
from drivers.sdk.gatt import crc16_mcrf4xx, normalize_uuid
from drivers.sdk.ieee11073 import decode_float, decode_sfloat
from drivers.sdk.racp import RacpNumberOfRecords, RacpRequest, RacpResponse, parse_racp_indication
from gateway.errors import PayloadError
from gateway.model import AbsentReason, TimeQuality, check_reading
from gateway.vocabulary import METRICS, check_unit

RAW = DeviceClock()  # no skew, UTC offset 0: device stamps as sent
RECEIVED = 1_767_225_600_000_000_000


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def ns(*args: int) -> int:
    return naive_to_ns(dt.datetime(*args))  # type: ignore[arg-type]


def assert_prefixes_rejected(
    parse: Callable[[bytes], object], data: bytes, valid: frozenset[int] = frozenset()
) -> None:
    """Every truncated prefix raises PayloadError — except ``valid`` lengths (a shorter list is legal)."""
    for n in range(len(data)):
        if n in valid:
            parse(data[:n])
            continue
        with pytest.raises(PayloadError):
            parse(data[:n])


def check_readings_valid(readings: tuple[object, ...]) -> None:
    for r in readings:
        from gateway.model import Reading

        assert isinstance(r, Reading)
        check_reading(r)
        check_unit(METRICS[r.metric], r.unit)


# --- §1 SFLOAT / FLOAT ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "value", "precision"),
    [
        (0xF3A5, 93.3, 1),
        (0xB062, 0.00098, 5),
        (0x0B2E, -1234.0, 0),
        (0x1002, 20.0, 0),
        (0xF014, 2.0, 1),
        (0x0002, 2.0, 0),
    ],
)
def test_sfloat_values_and_precision(raw: int, value: float, precision: int) -> None:
    n = decode_sfloat(raw)
    assert n.value == value
    assert n.precision == precision
    assert n.absent is None


@pytest.mark.parametrize(
    ("raw", "value", "precision"), [(0xFF000014, 2.0, 1), (0x00FFFB2E, -1234.0, 0), (0xFD000F4F, 3.919, 3)]
)
def test_float_values_and_precision(raw: int, value: float, precision: int) -> None:
    n = decode_float(raw)
    assert (n.value, n.precision, n.absent) == (value, precision, None)


@pytest.mark.parametrize(
    ("sfloat", "float32", "reason"),
    [
        (0x07FF, 0x007FFFFF, AbsentReason.NAN),
        (0x0800, 0x00800000, AbsentReason.NRES),
        (0x07FE, 0x007FFFFE, AbsentReason.POS_INF),
        (0x0802, 0x00800002, AbsentReason.NEG_INF),
        (0x0801, 0x00800001, AbsentReason.RESERVED),
    ],
)
def test_special_values_are_absent(sfloat: int, float32: int, reason: AbsentReason) -> None:
    for n in (decode_sfloat(sfloat), decode_float(float32)):
        assert n.absent is reason
        assert n.value is None and n.precision is None


def test_special_codes_with_nonzero_exponent_are_numbers() -> None:
    assert decode_sfloat(0x17FF).value == 20470.0
    assert decode_sfloat(0xF800).value == -204.8


def test_float_wire_order() -> None:
    from drivers.sdk.gatt import ByteReader

    assert ByteReader(h("4F 0F 00 FD"), "x").float32("v").value == 3.919


# --- gatt helpers ----------------------------------------------------------------------------------
def test_uuid_normalisation() -> None:
    full = "00002a37-0000-1000-8000-00805f9b34fb"
    for form in ("2a37", "0x2A37", "2A37", "00002a37", full.upper(), full.replace("-", "")):
        assert normalize_uuid(form) == full
    assert normalize_uuid(0x2A37) == full
    with pytest.raises(PayloadError):
        normalize_uuid("hr")


def test_crc16_mcrf4xx_check_value() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91


def test_short_packet_message_names_field_and_offset() -> None:
    with pytest.raises(PayloadError, match=r"diastolic needs 2 byte\(s\) at offset 3, 1 left") as e:
        BloodPressureMeasurement.from_bytes(h("00 78 00 50"))
    assert e.value.reason == "malformed"


# --- §2 heart rate ---------------------------------------------------------------------------------
def test_hr_vector_uint8_with_rr() -> None:
    data = h("16 48 20 03 0A 03")
    m = HeartRateMeasurement.from_bytes(data)
    assert m.heart_rate == 72
    assert m.sensor_contact is SensorContact.CONTACT
    assert m.energy_expended_kj is None
    assert m.rr_intervals == (800, 778)
    assert m.rr_ms == (781.25, 759.765625)
    assert m.to_bytes() == data
    assert_prefixes_rejected(HeartRateMeasurement.from_bytes, data, valid=frozenset({4}))


def test_hr_vector_uint16_energy() -> None:
    data = h("19 91 00 A4 01 A8 01")
    m = HeartRateMeasurement.from_bytes(data)
    assert (m.heart_rate, m.energy_expended_kj, m.rr_intervals) == (145, 420, (424,))
    assert round(m.rr_ms[0], 3) == 414.062
    assert m.sensor_contact is SensorContact.NOT_SUPPORTED
    assert m.to_bytes() == data
    assert_prefixes_rejected(HeartRateMeasurement.from_bytes, data)


def test_hr_vector_no_contact() -> None:
    m = HeartRateMeasurement.from_bytes(h("04 3C"))
    assert m.heart_rate == 60 and m.sensor_contact is SensorContact.NO_CONTACT and m.contact_lost
    (r,) = hr_readings(m, RAW, RECEIVED)
    assert r.status == 0b100
    assert_prefixes_rejected(HeartRateMeasurement.from_bytes, h("04 3C"))


def test_hr_reserved_flag_bits_change_nothing() -> None:
    for text in ("16 48 20 03 0A 03", "19 91 00 A4 01 A8 01", "04 3C"):
        data = h(text)
        assert HeartRateMeasurement.from_bytes(bytes([data[0] | 0xE0]) + data[1:]) == HeartRateMeasurement.from_bytes(
            data
        )


def test_hr_rr_flag_without_rr_values_is_malformed() -> None:
    with pytest.raises(PayloadError, match="RR intervals"):
        HeartRateMeasurement.from_bytes(h("10 48"))


def test_hr_points_each_rr_timed_at_its_beat() -> None:
    m = HeartRateMeasurement.from_bytes(h("16 48 20 03 0A 03"))
    rs = hr_readings(m, RAW, RECEIVED)
    check_readings_valid(rs)
    hr, rr1, rr2 = rs
    assert (hr.metric, hr.value, hr.unit, hr.device_time_ns) == ("heart_rate", 72.0, "/min", RECEIVED)
    assert hr.time_quality == TimeQuality.RECEIVE_TIME
    assert (rr1.metric, rr1.value, rr2.value) == ("rr_interval", 781.25, 759.765625)
    assert rr2.device_time_ns == RECEIVED  # newest RR ends at the notification
    assert rr1.device_time_ns == RECEIVED - 778 * 1_000_000_000 // 1024  # ends one (later) RR earlier
    assert rr1.device_time_ns != rr2.device_time_ns


def test_hr_points_energy_expended() -> None:
    rs = hr_readings(HeartRateMeasurement.from_bytes(h("19 91 00 A4 01 A8 01")), RAW, RECEIVED)
    check_readings_valid(rs)
    assert [(r.metric, r.value) for r in rs] == [
        ("heart_rate", 145.0),
        ("energy_expended", 420.0),
        ("rr_interval", 414.0625),
    ]


def test_body_sensor_location() -> None:
    assert BodySensorLocation.from_bytes(b"\x01").name == "chest"
    assert BodySensorLocation.from_bytes(b"\x09").name == "reserved(9)"
    assert_prefixes_rejected(BodySensorLocation.from_bytes, b"\x01")


# --- §3 blood pressure -------------------------------------------------------------------------------
BPM = h("1E 78 00 50 00 A5 F3 E8 07 03 0F 08 1E 00 48 00 01 04 00")


def test_bp_vector_mmhg_full() -> None:
    m = BloodPressureMeasurement.from_bytes(BPM)
    assert m.unit == "mm[Hg]"
    assert (m.systolic.value, m.diastolic.value, m.mean_arterial.value) == (120.0, 80.0, 93.3)
    assert m.time_stamp is not None and m.time_stamp.datetime() == dt.datetime(2024, 3, 15, 8, 30)
    assert m.pulse_rate is not None and m.pulse_rate.value == 72.0
    assert m.user_id == 1
    assert m.status == BpStatus.IRREGULAR_PULSE
    assert m.to_bytes() == BPM
    assert_prefixes_rejected(BloodPressureMeasurement.from_bytes, BPM)


def test_bp_points() -> None:
    rs = bp_readings(BloodPressureMeasurement.from_bytes(BPM), RAW, RECEIVED)
    check_readings_valid(rs)
    assert [(r.metric, r.value, r.unit, r.precision) for r in rs] == [
        ("bp_systolic", 120.0, "mm[Hg]", 0),
        ("bp_diastolic", 80.0, "mm[Hg]", 0),
        ("bp_mean", 93.3, "mm[Hg]", 1),
        ("pulse_rate_bp", 72.0, "/min", 0),
    ]
    assert all(r.device_time_ns == ns(2024, 3, 15, 8, 30) for r in rs)
    assert all(r.time_quality == TimeQuality.DEVICE_UNCORRECTED and r.status == 4 and r.alert for r in rs)


def test_bp_points_clock_correction() -> None:
    clock = DeviceClock(skew_ns=5_000_000_000, utc_offset_ns=3_600_000_000_000)
    r = bp_readings(BloodPressureMeasurement.from_bytes(BPM), clock, RECEIVED)[0]
    assert r.device_time_ns == ns(2024, 3, 15, 7, 30, 5)
    assert r.time_quality == 0


def test_bp_vector_kpa() -> None:
    data = h("01 A0 F0 6B F0 7C F0")
    m = BloodPressureMeasurement.from_bytes(data)
    assert m.unit == "kPa"
    assert (m.systolic.value, m.diastolic.value, m.mean_arterial.value) == (16.0, 10.7, 12.4)
    assert m.systolic.precision == 1
    assert m.to_bytes() == data
    assert_prefixes_rejected(BloodPressureMeasurement.from_bytes, data)
    rs = bp_readings(m, RAW, RECEIVED)
    check_readings_valid(rs)
    assert [r.unit for r in rs] == ["kPa"] * 3


def test_bp_reserved_bits_change_nothing() -> None:
    reserved = bytes([BPM[0] | 0xE0]) + BPM[1:17] + bytes([BPM[17] | 0xC0, BPM[18] | 0xFF])
    assert BloodPressureMeasurement.from_bytes(reserved) == BloodPressureMeasurement.from_bytes(BPM)


def test_intermediate_cuff_pressure_is_live_only() -> None:
    data = h("00 98 00 FF 07 FF 07")
    icp = IntermediateCuffPressure.from_bytes(data)
    assert icp.cuff_pressure.value == 152.0
    assert icp.measurement.diastolic.absent is AbsentReason.NAN
    assert icp.measurement.mean_arterial.absent is AbsentReason.NAN
    live = live_cuff_pressure(icp, RECEIVED)
    assert isinstance(live, LiveCuffPressure)
    assert (live.value, live.unit) == (152.0, "mm[Hg]")
    assert not isinstance(live, tuple)  # not a Reading: it cannot enter a batch
    assert_prefixes_rejected(IntermediateCuffPressure.from_bytes, data)


# --- §4 pulse oximeter -------------------------------------------------------------------------------
def test_plx_spot_check_vector() -> None:
    data = h("03 61 00 48 00 E8 07 03 0F 09 00 00 80 00")
    m = PlxSpotCheck.from_bytes(data)
    assert (m.spo2.value, m.pulse_rate.value) == (97.0, 72.0)
    assert m.time_stamp is not None and m.time_stamp.datetime() == dt.datetime(2024, 3, 15, 9, 0)
    assert m.measurement_status == PlxMeasurementStatus.VALIDATED
    assert m.to_bytes() == data
    assert_prefixes_rejected(PlxSpotCheck.from_bytes, data)
    rs = plx_readings(m, RAW, RECEIVED)
    check_readings_valid(rs)
    assert [(r.metric, r.value, r.status) for r in rs] == [("spo2", 97.0, 0x80), ("pulse_rate_oximeter", 72.0, 0x80)]
    assert rs[0].device_time_ns == ns(2024, 3, 15, 9, 0)
    assert not is_demo_or_test(m)
    reserved = bytes([data[0] | 0xE0]) + data[1:12] + bytes([data[12] | 0x1F, data[13]])
    assert PlxSpotCheck.from_bytes(reserved) == m


def test_plx_continuous_vectors() -> None:
    pai = h("10 62 00 4B 00 19 F0")
    m = PlxContinuous.from_bytes(pai)
    assert m.pulse_amplitude_index is not None
    assert (m.spo2.value, m.pulse_rate.value, m.pulse_amplitude_index.value) == (98.0, 75.0, 2.5)
    assert m.to_bytes() == pai
    rs = plx_readings(m, RAW, RECEIVED)
    check_readings_valid(rs)
    assert [(r.metric, r.value, r.precision) for r in rs] == [
        ("spo2", 98.0, 0),
        ("pulse_rate_oximeter", 75.0, 0),
        ("perfusion_index", 2.5, 1),
    ]
    fast = h("01 62 00 4B 00 61 00 4D 00")
    f = PlxContinuous.from_bytes(fast)
    assert f.spo2_fast is not None and f.pulse_rate_fast is not None
    assert (f.spo2.value, f.pulse_rate.value, f.spo2_fast.value, f.pulse_rate_fast.value) == (98.0, 75.0, 97.0, 77.0)
    assert f.to_bytes() == fast
    for data in (pai, fast):
        assert_prefixes_rejected(PlxContinuous.from_bytes, data)
        assert PlxContinuous.from_bytes(bytes([data[0] | 0xE0]) + data[1:]) == PlxContinuous.from_bytes(data)


@pytest.mark.parametrize("bit", [PlxMeasurementStatus.DEMONSTRATION, PlxMeasurementStatus.TESTING])
def test_plx_demo_and_test_data_is_flagged(bit: PlxMeasurementStatus) -> None:
    data = h("04 62 00 4B 00") + int(bit).to_bytes(2, "little")
    m = PlxContinuous.from_bytes(data)
    assert is_demo_or_test(m)


# --- §5 glucose -------------------------------------------------------------------------------------
GLU1 = h("1B 05 00 E8 07 03 0F 07 2D 00 02 00 62 B0 11 00 00")
GLU2 = h("06 06 00 E8 07 03 0F 0C 00 00 36 C0 12")


def test_glucose_vector_kg_per_l() -> None:
    m = GlucoseMeasurement.from_bytes(GLU1)
    assert (m.sequence, m.time_offset_min, m.sample_type, m.sample_location) == (5, 2, 1, 1)
    assert m.base_time.datetime() == dt.datetime(2024, 3, 15, 7, 45)
    assert m.concentration is not None and m.concentration.value == 0.00098
    assert m.sensor_status == 0 and m.context_follows and not m.is_control_solution
    assert m.to_bytes() == GLU1
    assert_prefixes_rejected(GlucoseMeasurement.from_bytes, GLU1)
    (r,) = glucose_readings(m, RAW, RECEIVED)
    check_reading(r)
    assert (r.metric, r.value, r.unit, r.precision, r.seq) == ("glucose_capillary_whole_blood", 98.0, "mg/dL", 0, 5)
    assert r.device_time_ns == ns(2024, 3, 15, 7, 47)


def test_glucose_vector_mol_per_l() -> None:
    m = GlucoseMeasurement.from_bytes(GLU2)
    assert m.to_bytes() == GLU2
    assert_prefixes_rejected(GlucoseMeasurement.from_bytes, GLU2)
    (r,) = glucose_readings(m, RAW, RECEIVED)
    assert (r.metric, r.value, r.unit, r.precision, r.seq) == ("glucose_capillary_plasma", 5.4, "mmol/L", 1, 6)
    assert r.device_time_ns == ns(2024, 3, 15, 12, 0)


def test_glucose_reserved_flag_bits_change_nothing() -> None:
    for data in (GLU1, GLU2):
        assert GlucoseMeasurement.from_bytes(bytes([data[0] | 0xE0]) + data[1:]) == GlucoseMeasurement.from_bytes(data)


@pytest.mark.parametrize("type_loc", [0x1A, 0x41, 0x4A])
def test_glucose_control_solution_never_becomes_a_reading(type_loc: int) -> None:
    data = GLU2[:-1] + bytes([type_loc])
    m = GlucoseMeasurement.from_bytes(data)
    assert m.is_control_solution
    assert glucose_readings(m, RAW, RECEIVED) == ()


def test_glucose_special_value_is_absent() -> None:
    m = GlucoseMeasurement.from_bytes(GLU2[:10] + h("FF 07 12"))
    (r,) = glucose_readings(m, RAW, RECEIVED)
    check_reading(r)
    assert (r.value, r.absent, r.unit) == (None, "nan", "mmol/L")


def test_glucose_reserved_sample_type_is_quarantined() -> None:
    m = GlucoseMeasurement.from_bytes(GLU2[:-1] + b"\x1b")
    with pytest.raises(PayloadError) as e:
        glucose_readings(m, RAW, RECEIVED)
    assert e.value.reason == "unknown_sample_type"


def test_glucose_context_vector() -> None:
    data = h("43 05 00 01 32 D0 01 41 F0")
    c = GlucoseContext.from_bytes(data)
    assert (c.sequence, c.carbohydrate_id, c.meal) == (5, 1, 1)
    assert c.carbohydrate_kg is not None and c.carbohydrate_kg.value == 0.05
    assert c.hba1c_pct is not None and c.hba1c_pct.value == 6.5
    assert_prefixes_rejected(GlucoseContext.from_bytes, data)


# --- §5.4 RACP -------------------------------------------------------------------------------------
def test_racp_requests() -> None:
    assert RacpRequest.report_all().to_bytes() == h("01 01")
    assert RacpRequest.report_last().to_bytes() == h("01 06")
    assert RacpRequest.abort().to_bytes() == h("03 00")
    assert RacpRequest.count_all().to_bytes() == h("04 01")
    assert RacpRequest.report_from_sequence(6).to_bytes() == h("01 03 01 06 00")
    assert RacpRequest.count_from_sequence(6).to_bytes() == h("04 03 01 06 00")
    assert RacpRequest.report_from_time_offset(300).to_bytes() == h("01 03 01 2C 01")
    assert RacpRequest.delete_all().to_bytes() == h("02 01")


def test_racp_indications() -> None:
    assert parse_racp_indication(h("05 00 03 00")) == RacpNumberOfRecords(3)
    ok = parse_racp_indication(h("06 00 01 01"))
    assert ok == RacpResponse(1, 1) and isinstance(ok, RacpResponse) and ok.success
    none = parse_racp_indication(h("06 00 01 06"))
    assert isinstance(none, RacpResponse) and none.no_records
    for data in (h("05 00 03 00"), h("06 00 01 01")):
        assert_prefixes_rejected(parse_racp_indication, data)
    with pytest.raises(PayloadError):
        parse_racp_indication(h("01 01"))


# --- §6 CGM ----------------------------------------------------------------------------------------
CGM_EXT1 = h("0D 43 73 00 2C 01 03 24 00 1A 00 3E 04")
CGM_EXT2 = h("0F E3 78 00 1E 00 01 02 03 50 00 60 00 EC AC")
CGM_TWO = h("06 00 78 00 1E 00 06 00 77 00 1D 00")
CGM_CRC = h("08 00 78 00 3C 00 B7 89")


def test_cgm_vector_with_crc_ext1() -> None:
    (rec,) = CgmMeasurement.from_bytes(CGM_EXT1, crc=True).records
    assert (rec.glucose_mg_dl.value, rec.time_offset_min, rec.cal_temp_octet) == (115.0, 300, 0x03)
    assert rec.annunciation == CgmAnnunciation.TIME_SYNC_REQUIRED | CgmAnnunciation.CALIBRATION_NOT_ALLOWED
    assert rec.trend is not None and rec.trend.value == 36.0
    assert rec.quality_pct is not None and rec.quality_pct.value == 26.0
    assert rec.crc == 0x043E
    assert CgmMeasurement((rec,)).to_bytes(crc=True) == CGM_EXT1
    assert_prefixes_rejected(lambda d: CgmMeasurement.from_bytes(d, crc=True), CGM_EXT1)


def test_cgm_vector_with_crc_ext2() -> None:
    (rec,) = CgmMeasurement.from_bytes(CGM_EXT2, crc=True).records
    assert (rec.glucose_mg_dl.value, rec.time_offset_min) == (120.0, 30)
    assert (rec.status_octet, rec.cal_temp_octet, rec.warning_octet) == (0x01, 0x02, 0x03)
    assert rec.annunciation & CgmAnnunciation.SESSION_STOPPED
    assert rec.annunciation & CgmAnnunciation.BELOW_PATIENT_LOW and rec.alert
    assert rec.trend is not None and rec.quality_pct is not None
    assert (rec.trend.value, rec.quality_pct.value, rec.crc) == (80.0, 96.0, 0xACEC)
    assert CgmMeasurement((rec,)).to_bytes(crc=True) == CGM_EXT2
    assert_prefixes_rejected(lambda d: CgmMeasurement.from_bytes(d, crc=True), CGM_EXT2)


def test_cgm_warning_first_override() -> None:
    (rec,) = CgmMeasurement.from_bytes(CGM_EXT2, crc=True, warning_first=True).records
    assert (rec.status_octet, rec.cal_temp_octet, rec.warning_octet) == (0x03, 0x02, 0x01)


def test_cgm_multi_record_notification() -> None:
    m = CgmMeasurement.from_bytes(CGM_TWO)
    assert [(r.glucose_mg_dl.value, r.time_offset_min) for r in m.records] == [(120.0, 30), (119.0, 29)]
    assert m.to_bytes() == CGM_TWO
    assert_prefixes_rejected(CgmMeasurement.from_bytes, CGM_TWO, valid=frozenset({6}))


def test_cgm_built_crc_vector_and_bad_crc() -> None:
    (rec,) = CgmMeasurement.from_bytes(CGM_CRC, crc=True).records
    assert (rec.glucose_mg_dl.value, rec.time_offset_min, rec.crc) == (120.0, 60, 0x89B7)
    assert CgmMeasurement.from_bytes(CGM_CRC).records == (rec,)  # inferred from the size
    for bad in (CGM_CRC[:-1] + b"\x88", CGM_CRC[:2] + b"\x79" + CGM_CRC[3:]):
        with pytest.raises(PayloadError) as e:
            CgmMeasurement.from_bytes(bad, crc=True)
        assert e.value.reason == "bad_crc"
    with pytest.raises(PayloadError) as e:
        CgmMeasurement.from_bytes(CGM_TWO, crc=True)  # CRC required but absent
    assert e.value.reason == "malformed"
    with pytest.raises(PayloadError):
        CgmMeasurement.from_bytes(CGM_CRC, crc=False)


def test_cgm_reserved_flag_bits_change_nothing() -> None:
    reserved = bytes([CGM_TWO[0], CGM_TWO[1] | 0x1C]) + CGM_TWO[2:]
    assert CgmMeasurement.from_bytes(reserved) == CgmMeasurement.from_bytes(CGM_TWO)
    body = bytes([CGM_EXT1[0], CGM_EXT1[1] | 0x1C]) + CGM_EXT1[2:-2]
    (with_reserved,) = CgmMeasurement.from_bytes(with_crc(body), crc=True).records
    (plain,) = CgmMeasurement.from_bytes(CGM_EXT1, crc=True).records
    assert dataclasses.replace(with_reserved, crc=None) == dataclasses.replace(plain, crc=None)


def test_cgm_feature_status_session_vectors() -> None:
    feature = h("00 10 00 59 F0 49")
    f = CgmFeature.from_bytes(feature)
    assert f.e2e_crc and (f.sample_type, f.sample_location, f.crc) == (9, 5, 0x49F0)
    assert f.to_bytes() == feature
    assert_prefixes_rejected(CgmFeature.from_bytes, feature)
    with pytest.raises(PayloadError, match="E2E-CRC"):
        CgmFeature.from_bytes(feature[:-1] + b"\x48")

    status = h("2C 01 00 02 00 22 08")
    s = CgmStatus.from_bytes(status, crc=True)
    assert (s.time_offset_min, s.status) == (300, CgmAnnunciation.CALIBRATION_NOT_ALLOWED)
    assert s.to_bytes(crc=True) == status
    assert_prefixes_rejected(lambda d: CgmStatus.from_bytes(d, crc=True), status)

    run = h("50 01 C6 32")
    assert CgmSessionRunTime.from_bytes(run, crc=True).hours == 336
    assert_prefixes_rejected(lambda d: CgmSessionRunTime.from_bytes(d, crc=True), run)

    start = h("E8 07 03 0F 07 00 00 04 00 0A BA")
    sst = CgmSessionStartTime.from_bytes(start, crc=True)
    assert sst.local_start() == dt.datetime(2024, 3, 15, 7, 0)
    assert (sst.time_zone, sst.dst_offset, sst.utc_offset_ns) == (4, 0, 3_600_000_000_000)
    assert sst.to_bytes(crc=True) == start
    assert_prefixes_rejected(lambda d: CgmSessionStartTime.from_bytes(d, crc=True), start)


def test_cgm_points_session_start_plus_offset() -> None:
    sst = CgmSessionStartTime.from_bytes(h("E8 07 03 0F 07 00 00 04 00 0A BA"), crc=True)
    m = CgmMeasurement.from_bytes(CGM_EXT2, crc=True)
    glucose, trend = cgm_readings(m, sst, RAW, RECEIVED)
    check_readings_valid((glucose, trend))
    assert (glucose.metric, glucose.value, glucose.unit, glucose.seq) == ("glucose_isf", 120.0, "mg/dL", 30)
    assert (trend.metric, trend.value, trend.unit) == ("glucose_trend", 80.0, "mg/dL/min")
    assert glucose.device_time_ns == ns(2024, 3, 15, 6, 30)  # 07:00 at UTC+1, + 30 min
    assert glucose.alert and glucose.status == 0x030201


def test_cgm_points_two_records_distinct_times() -> None:
    sst = CgmSessionStartTime.from_bytes(h("E8 07 03 0F 07 00 00 04 00"))
    rs = cgm_readings(CgmMeasurement.from_bytes(CGM_TWO), sst, RAW, RECEIVED)
    assert [r.device_time_ns for r in rs] == [ns(2024, 3, 15, 6, 30), ns(2024, 3, 15, 6, 29)]
    anchored = cgm_readings(CgmMeasurement.from_bytes(CGM_TWO), None, RAW, RECEIVED)
    assert [r.device_time_ns for r in anchored] == [RECEIVED, RECEIVED - 60_000_000_000]
    assert all(r.time_quality & TimeQuality.RECEIVE_TIME for r in anchored)


def test_cgm_socp_vectors() -> None:
    assert SocpRequest.start_session().to_bytes(crc=True) == h("1A 5C B0")
    assert SocpRequest.set_communication_interval(5).to_bytes(crc=True) == h("01 05 CD BE")
    ind = SocpIndication.from_bytes(h("1C 1A 01 6D 60"), crc=True)
    assert ind.response == (SocpOpCode.START_SESSION, 1)
    assert_prefixes_rejected(lambda d: SocpIndication.from_bytes(d, crc=True), h("1C 1A 01 6D 60"))
    with pytest.raises(PayloadError) as e:
        SocpIndication.from_bytes(h("1C 1A 01 6D 61"), crc=True)
    assert e.value.reason == "bad_crc"


# --- §7 time and device information -----------------------------------------------------------------
def test_current_time_vector() -> None:
    data = h("E8 07 03 0F 0D 2D 1E 05 80 01")
    ct = CurrentTime.from_bytes(data)
    assert ct.datetime() == dt.datetime(2024, 3, 15, 13, 45, 30, 500000)
    assert (ct.day_of_week, ct.fractions256, int(ct.adjust_reason)) == (5, 128, 1)
    assert ct.to_bytes() == data
    assert_prefixes_rejected(CurrentTime.from_bytes, data)
    clock = ct.device_clock(ns(2024, 3, 15, 12, 45, 40, 500000), 3_600_000_000_000)
    assert clock.skew_ns == 10_000_000_000


def test_device_information_values() -> None:
    assert LocalTimeInformation.from_bytes(h("04 04")).utc_offset_ns == 2 * 3_600_000_000_000
    assert LocalTimeInformation.from_bytes(h("80 00")).utc_offset_ns is None
    assert decode_string(b"Polar H10\x00") == "Polar H10"
    with pytest.raises(PayloadError):
        decode_string(b"\xff\xfe")
    sid = SystemId.from_bytes(h("01 02 03 04 05 06 07 08"))
    assert (sid.manufacturer_id, sid.oui) == (0x0504030201, 0x080706)
    pnp = PnpId.from_bytes(h("01 6B 00 01 02 03 04"))
    assert (pnp.vendor_id_source, pnp.vendor_id, pnp.product_id, pnp.product_version) == (1, 0x6B, 0x0201, 0x0403)
    assert_prefixes_rejected(PnpId.from_bytes, pnp.to_bytes())
    assert_prefixes_rejected(SystemId.from_bytes, sid.to_bytes())


def test_battery_level() -> None:
    (r,) = battery_readings(BatteryLevel.from_bytes(b"\x57"), RAW, RECEIVED)
    assert (r.metric, r.value, r.unit) == ("battery_level", 87.0, "%")
    (bad,) = battery_readings(BatteryLevel.from_bytes(b"\xc8"), RAW, RECEIVED)
    check_reading(bad)
    assert bad.absent == "nan"
    assert_prefixes_rejected(BatteryLevel.from_bytes, b"\x57")


# --- §8 Polar PMD ----------------------------------------------------------------------------------
ECG = h("00 DA EB C3 9E 98 43 52 08 00 02 80 FF 02 80 00 90 01 00")


def test_pmd_control_point_requests() -> None:
    assert PmdRequest.start_ecg().to_bytes() == h("02 00 00 01 82 00 01 01 0E 00")
    assert PmdRequest.stop().to_bytes() == h("03 00")
    assert PmdRequest.get_settings().to_bytes() == h("01 00")


def test_pmd_control_point_responses() -> None:
    ok = PmdControlPointResponse.from_bytes(h("F0 02 00 00 00"))
    assert ok.ok and ok.op == 2
    err = PmdControlPointResponse.from_bytes(h("F0 02 00 05"))
    assert not err.ok and err.status_name == "invalid_parameter"
    settings = PmdControlPointResponse.from_bytes(h("F0 01 00 00 00 00 01 82 00 01 01 0E 00"))
    assert settings.settings() == {0: (130.0,), 1: (14.0,)}
    with pytest.raises(PayloadError):
        PmdControlPointResponse.from_bytes(h("F1 02 00 00"))
    assert_prefixes_rejected(PmdControlPointResponse.from_bytes, h("F0 02 00 00"))


def test_pmd_ecg_frame_vector() -> None:
    f = EcgFrame.from_bytes(ECG)
    assert f.timestamp_ns == 599_616_023_171_427_290
    assert f.samples.dtype == np.int32
    assert f.samples.tolist() == [-32766, 32770, 400]
    assert f.sample_times_ns().tolist() == [599_616_023_156_042_675, 599_616_023_163_734_982, 599_616_023_171_427_290]
    assert f.to_bytes() == ECG
    assert_prefixes_rejected(EcgFrame.from_bytes, ECG, valid=frozenset({13, 16}))
    assert dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=f.timestamp_ns // 1000) == dt.datetime(
        2019, 1, 1, 0, 0, 23, 171427
    )


@pytest.mark.parametrize("patch", [(9, 0x80), (9, 0x01), (0, 0x02)])
def test_pmd_rejects_other_frame_or_measurement_types(patch: tuple[int, int]) -> None:
    at, value = patch
    data = bytearray(ECG)
    data[at] = value
    with pytest.raises(PayloadError):
        EcgFrame.from_bytes(bytes(data))


def test_pmd_waveform_points() -> None:
    f = EcgFrame.from_bytes(ECG)
    w = waveform(f, PolarTimebase.device_utc())
    assert (w.metric, w.unit, w.period_ns) == ("ecg", "uV", 7_692_308)
    assert w.samples.tolist() == [-32766, 32770, 400]
    assert w.start_ns == POLAR_EPOCH_UNIX_NS + 599_616_023_156_042_675
    assert abs(int(w.times_ns()[-1]) - (POLAR_EPOCH_UNIX_NS + f.timestamp_ns)) <= 2
    anchored = PolarTimebase.anchored(f, RECEIVED, RAW)
    w2 = waveform(f, anchored)
    assert abs(int(w2.times_ns()[-1]) - RECEIVED) <= 2
    assert w2.time_quality == TimeQuality.RECEIVE_TIME
    nxt = EcgFrame(f.timestamp_ns + 3 * 7_800_000, f.samples)
    assert waveform(nxt, anchored, previous_timestamp_ns=f.timestamp_ns).period_ns == 7_800_000
