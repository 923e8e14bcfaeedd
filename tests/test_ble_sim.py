"""Simulated BLE firmware: encoders against every verified vector of protocols.md §1–§8, property
tests against a tiny reference decoder written here, and the peripherals over bumble's virtual
radio with a bare bumble central (no bleak, no gateway code)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from bumble import att
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.link import LocalLink
from bumble.transport import open_transport
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.ble import uuids
from firmware_sim.ble.devices.blood_pressure import BloodPressureCuff
from firmware_sim.ble.devices.cgm import Cgm
from firmware_sim.ble.devices.ecg import EcgStrap
from firmware_sim.ble.devices.glucose_meter import GlucoseMeter
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.devices.pulse_oximeter import PulseOximeter
from firmware_sim.ble.faults import FaultKind, FaultSpec
from firmware_sim.ble.fleet import FleetOptions, arm_faults, build_fleet
from firmware_sim.ble.identity import Profile, device_identity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ble.runner import BleSimulation
from firmware_sim.ble.wire.blood_pressure import BloodPressureMeasurement, BpStatus, intermediate_cuff_pressure
from firmware_sim.ble.wire.cgm import (
    CgmFeature,
    CgmMeasurement,
    SocpOpCode,
    SocpResponse,
    cgm_feature,
    cgm_notification,
    cgm_session_run_time,
    cgm_session_start_time,
    cgm_status,
    socp,
    socp_response,
)
from firmware_sim.ble.wire.crc import crc16_mcrf4xx
from firmware_sim.ble.wire.glucose import GlucoseContext, GlucoseMeasurement, GlucoseType, SampleLocation
from firmware_sim.ble.wire.heart_rate import HeartRateMeasurement, SensorContact
from firmware_sim.ble.wire.ieee11073 import (
    SFLOAT_EXPONENT_MAX,
    SFLOAT_EXPONENT_MIN,
    SFLOAT_MANTISSA_MAX,
    SFLOAT_MANTISSA_MIN,
    Num,
    Special,
    float32,
    sfloat,
)
from firmware_sim.ble.wire.pmd import (
    EcgFrame,
    PmdOp,
    PmdSetting,
    PmdType,
    pmd_response,
    pmd_start_request,
    pmd_stop_request,
    polar_ns,
)
from firmware_sim.ble.wire.pulse_oximeter import PlxContinuous, PlxSpotCheck
from firmware_sim.ble.wire.racp import (
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpRequestError,
    RacpResponse,
    racp_number_of_records,
    racp_request,
    racp_response_code,
)
from firmware_sim.ble.wire.time_fields import AdjustReason, CurrentTime, date_time
from tests.ble_sim_helpers import Central, advertisement_of, central_device, connect, drain


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# ------------------------------------------------------------------ §1 SFLOAT / FLOAT


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (Num(933, -1), 0xF3A5),
        (Num(98, -5), 0xB062),
        (Num(-1234), 0x0B2E),
        (Num(2, 1), 0x1002),
        (Num(20, -1), 0xF014),
        (Num(2), 0x0002),
        (Special.NAN, 0x07FF),
        (Special.NRES, 0x0800),
        (Special.POSITIVE_INFINITY, 0x07FE),
        (Special.NEGATIVE_INFINITY, 0x0802),
        (Special.RESERVED, 0x0801),
    ],
)
def test_sfloat_vectors(value: Num | Special, raw: int) -> None:
    assert sfloat(value) == struct.pack("<H", raw)


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (Num(3919, -3), 0xFD000F4F),
        (Num(20, -1), 0xFF000014),
        (Num(-1234), 0x00FFFB2E),
        (Special.NAN, 0x007FFFFF),
        (Special.NRES, 0x00800000),
        (Special.POSITIVE_INFINITY, 0x007FFFFE),
        (Special.NEGATIVE_INFINITY, 0x00800002),
        (Special.RESERVED, 0x00800001),
    ],
)
def test_float_vectors(value: Num | Special, raw: int) -> None:
    assert float32(value) == struct.pack("<I", raw)


def test_float_wire_order() -> None:
    assert float32(Num(3919, -3)) == h("4F 0F 00 FD")


def test_num_parse_keeps_precision() -> None:
    assert Num.parse("93.3") == Num(933, -1)
    assert Num.parse("2.0") == Num(20, -1)
    assert Num.parse("-1234") == Num(-1234, 0)
    assert Num.of(0.00098, -5) == Num(98, -5)


def test_sfloat_rejects_values_that_would_alias_specials() -> None:
    for m in (2046, 2047, -2046, -2047, -2048):
        with pytest.raises(ValueError):
            sfloat(Num(m, 0))
    with pytest.raises(ValueError):
        sfloat(Num(1, 8))


def _ref_sfloat(b: bytes) -> tuple[int, int] | str:
    """Reference decoder written from §1 for these tests only."""
    raw = int.from_bytes(b, "little")
    m, e = raw & 0x0FFF, raw >> 12
    specials = {0x07FF: "NaN", 0x0800: "NRes", 0x07FE: "+INF", 0x0802: "-INF", 0x0801: "RFU"}
    if e == 0 and m in specials:
        return specials[m]
    return (m - 0x1000 if m >= 0x800 else m, e - 0x10 if e >= 8 else e)


def _ref_float(b: bytes) -> tuple[int, int]:
    raw = int.from_bytes(b, "little")
    m, e = raw & 0xFFFFFF, raw >> 24
    return (m - 0x1000000 if m >= 0x800000 else m, e - 0x100 if e >= 0x80 else e)


@given(st.integers(SFLOAT_MANTISSA_MIN, SFLOAT_MANTISSA_MAX), st.integers(SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX))
def test_sfloat_round_trips_through_reference_decoder(m: int, e: int) -> None:
    assert _ref_sfloat(sfloat(Num(m, e))) == (m, e)


@given(st.integers(-(2**23) + 3, 2**23 - 3), st.integers(-128, 127))
def test_float_round_trips_through_reference_decoder(m: int, e: int) -> None:
    assert _ref_float(float32(Num(m, e))) == (m, e)


@given(st.sampled_from(list(Special)))
def test_sfloat_specials_decode_as_specials(s: Special) -> None:
    assert isinstance(_ref_sfloat(sfloat(s)), str)


# ------------------------------------------------------------------ §2 heart rate


def test_heart_rate_vectors() -> None:
    assert HeartRateMeasurement(72, SensorContact.CONTACT, rr_1024=(800, 778)).to_bytes() == h("16 48 20 03 0A 03")
    assert HeartRateMeasurement(145, energy_kj=420, rr_1024=(424,), uint16=True).to_bytes() == h("19 91 00 A4 01 A8 01")
    assert HeartRateMeasurement(60, SensorContact.NO_CONTACT).to_bytes() == h("04 3C")


@given(
    st.integers(0, 0xFFFF),
    st.sampled_from(list(SensorContact)),
    st.none() | st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 0xFFFF), max_size=9),
)
def test_heart_rate_round_trip(bpm: int, contact: SensorContact, energy: int | None, rr: list[int]) -> None:
    b = HeartRateMeasurement(bpm, contact, energy, tuple(rr)).to_bytes()
    flags, off = b[0], 1
    if flags & 1:
        got_bpm = struct.unpack_from("<H", b, off)[0]
        off += 2
    else:
        got_bpm = b[off]
        off += 1
    assert got_bpm == bpm and (flags >> 1) & 3 == contact
    if flags & 0x08:
        assert struct.unpack_from("<H", b, off)[0] == energy
        off += 2
    else:
        assert energy is None
    assert list(struct.unpack_from(f"<{(len(b) - off) // 2}H", b, off)) == rr
    assert bool(flags & 0x10) == bool(rr)


# ------------------------------------------------------------------ §3 blood pressure


def test_blood_pressure_vectors() -> None:
    bpm = BloodPressureMeasurement(
        Num(120),
        Num(80),
        Num.parse("93.3"),
        time_stamp=datetime(2024, 3, 15, 8, 30),
        pulse_bpm=Num(72),
        user_id=1,
        status=BpStatus.IRREGULAR_PULSE,
    )
    assert bpm.to_bytes() == h("1E 78 00 50 00 A5 F3 E8 07 03 0F 08 1E 00 48 00 01 04 00")
    kpa = BloodPressureMeasurement(Num.parse("16.0"), Num.parse("10.7"), Num.parse("12.4"), kpa=True)
    assert kpa.to_bytes() == h("01 A0 F0 6B F0 7C F0")
    assert intermediate_cuff_pressure(Num(152)) == h("00 98 00 FF 07 FF 07")


# ------------------------------------------------------------------ §4 pulse oximeter


def test_plx_vectors() -> None:
    spot = PlxSpotCheck(Num(97), Num(72), time_stamp=datetime(2024, 3, 15, 9), measurement_status=0x0080)
    assert spot.to_bytes() == h("03 61 00 48 00 E8 07 03 0F 09 00 00 80 00")
    assert PlxContinuous(Num(98), Num(75), pai=Num.parse("2.5")).to_bytes() == h("10 62 00 4B 00 19 F0")
    assert PlxContinuous(Num(98), Num(75), fast=(Num(97), Num(77))).to_bytes() == h("01 62 00 4B 00 61 00 4D 00")


# ------------------------------------------------------------------ §5 glucose + RACP


def test_glucose_vectors() -> None:
    m = GlucoseMeasurement(
        5, datetime(2024, 3, 15, 7, 45), time_offset_min=2, concentration=Num(98, -5), status=0, context_follows=True
    )
    assert m.to_bytes() == h("1B 05 00 E8 07 03 0F 07 2D 00 02 00 62 B0 11 00 00")
    m2 = GlucoseMeasurement(
        6,
        datetime(2024, 3, 15, 12),
        concentration=Num(54, -4),
        mol_per_l=True,
        type=GlucoseType.CAPILLARY_PLASMA,
        location=SampleLocation.FINGER,
    )
    assert m2.to_bytes() == h("06 06 00 E8 07 03 0F 0C 00 00 36 C0 12")
    ctx = GlucoseContext(5, carbohydrate=(1, Num(50, -3)), meal=1, hba1c=Num.parse("6.5"))
    assert ctx.to_bytes() == h("43 05 00 01 32 D0 01 41 F0")


def test_racp_request_vectors() -> None:
    assert racp_request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.ALL) == h("01 01")
    assert racp_request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.LAST) == h("01 06")
    assert racp_request(RacpOpCode.ABORT) == h("03 00")
    assert racp_request(RacpOpCode.REPORT_NUMBER_OF_RECORDS, RacpOperator.ALL) == h("04 01")
    assert racp_request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.GREATER_OR_EQUAL, 6) == h("01 03 01 06 00")
    assert racp_request(RacpOpCode.REPORT_NUMBER_OF_RECORDS, RacpOperator.GREATER_OR_EQUAL, 6) == h("04 03 01 06 00")
    assert racp_request(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.GREATER_OR_EQUAL, 300) == h("01 03 01 2C 01")


def test_racp_response_vectors() -> None:
    assert racp_number_of_records(3) == h("05 00 03 00")
    assert racp_response_code(RacpOpCode.REPORT_STORED_RECORDS, RacpResponse.SUCCESS) == h("06 00 01 01")
    assert racp_response_code(RacpOpCode.REPORT_STORED_RECORDS, RacpResponse.NO_RECORDS_FOUND) == h("06 00 01 06")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (h("07 01"), RacpResponse.OP_CODE_NOT_SUPPORTED),
        (h("05 00"), RacpResponse.OP_CODE_NOT_SUPPORTED),
        (h("01 00"), RacpResponse.INVALID_OPERATOR),
        (h("01 09"), RacpResponse.OPERATOR_NOT_SUPPORTED),
        (h("01 03 01 06"), RacpResponse.INVALID_OPERAND),
        (h("01 03 02 06 00"), RacpResponse.OPERAND_NOT_SUPPORTED),
        (h("01 04 01 09 00 02 00"), RacpResponse.INVALID_OPERAND),
        (h("01 01 01"), RacpResponse.INVALID_OPERAND),
        (h("01"), RacpResponse.INVALID_OPERAND),
    ],
)
def test_racp_parse_errors(data: bytes, code: RacpResponse) -> None:
    with pytest.raises(RacpRequestError) as err:
        RacpRequest.parse(data)
    assert err.value.code is code


def test_racp_select() -> None:
    keys = [0, 1, 2, 5, 6, 9]
    assert RacpRequest.parse(h("01 03 01 06 00")).select(keys) == [4, 5]
    assert RacpRequest.parse(h("01 02 01 02 00")).select(keys) == [0, 1, 2]
    assert RacpRequest.parse(h("01 04 01 02 00 06 00")).select(keys) == [2, 3, 4]
    assert RacpRequest.parse(h("01 05")).select(keys) == [0]
    assert RacpRequest.parse(h("01 06")).select(keys) == [5]
    assert RacpRequest.parse(h("01 01")).select([]) == []


# ------------------------------------------------------------------ §6 CGM


def test_crc_check_value() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91


def test_cgm_measurement_vectors() -> None:
    roche = CgmMeasurement(Num(115), 300, cal_temp=0x03, trend=Num(36), quality=Num(26))
    assert roche.to_bytes(e2e_crc=True) == h("0D 43 73 00 2C 01 03 24 00 1A 00 3E 04")
    ios = CgmMeasurement(Num(120), 30, status=0x01, cal_temp=0x02, warning=0x03, trend=Num(80), quality=Num(96))
    assert ios.to_bytes(e2e_crc=True) == h("0F E3 78 00 1E 00 01 02 03 50 00 60 00 EC AC")
    two = cgm_notification(
        [CgmMeasurement(Num(120), 30).to_bytes(e2e_crc=False), CgmMeasurement(Num(119), 29).to_bytes(e2e_crc=False)]
    )
    assert two == h("06 00 78 00 1E 00 06 00 77 00 1D 00")
    assert CgmMeasurement(Num(120), 60).to_bytes(e2e_crc=True) == h("08 00 78 00 3C 00 B7 89")
    bad = CgmMeasurement(Num(120), 60).to_bytes(e2e_crc=True, corrupt_crc=True)
    assert bad[:6] == h("08 00 78 00 3C 00") and bad[6:] != h("B7 89")


def test_cgm_other_characteristic_vectors() -> None:
    assert cgm_feature(CgmFeature.E2E_CRC) == h("00 10 00 59 F0 49")
    assert cgm_feature(CgmFeature.TREND)[-2:] == h("FF FF")
    assert cgm_status(300, 0x00, 0x02, 0x00, e2e_crc=True) == h("2C 01 00 02 00 22 08")
    assert cgm_session_run_time(336, e2e_crc=True) == h("50 01 C6 32")
    assert cgm_session_start_time(datetime(2024, 3, 15, 7), 4, 0, e2e_crc=True) == h("E8 07 03 0F 07 00 00 04 00 0A BA")


def test_socp_vectors() -> None:
    assert socp(SocpOpCode.START_SESSION, e2e_crc=True) == h("1A 5C B0")
    assert socp(SocpOpCode.SET_COMMUNICATION_INTERVAL, b"\x05", e2e_crc=True) == h("01 05 CD BE")
    assert socp_response(SocpOpCode.START_SESSION, SocpResponse.SUCCESS, e2e_crc=True) == h("1C 1A 01 6D 60")


# ------------------------------------------------------------------ §7 time


def test_time_vectors() -> None:
    assert date_time(datetime(2024, 3, 15, 8, 30)) == h("E8 07 03 0F 08 1E 00")
    ct = CurrentTime(datetime(2024, 3, 15, 13, 45, 30, 500_000), AdjustReason.MANUAL)
    assert ct.to_bytes() == h("E8 07 03 0F 0D 2D 1E 05 80 01")
    assert CurrentTime.from_bytes(h("E8 07 03 0F 0D 2D 1E 05 80 01")) == ct


# ------------------------------------------------------------------ §8 Polar PMD


def test_pmd_vectors() -> None:
    start = pmd_start_request(PmdType.ECG, [(PmdSetting.SAMPLE_RATE, [130]), (PmdSetting.RESOLUTION, [14])])
    assert start == h("02 00 00 01 82 00 01 01 0E 00")
    assert pmd_response(PmdOp.START, PmdType.ECG, 0) == h("F0 02 00 00 00")
    assert pmd_stop_request(PmdType.ECG) == h("03 00")
    frame = EcgFrame(599_616_023_171_427_290, [-32766, 32770, 400])
    assert frame.to_bytes() == h("00 DA EB C3 9E 98 43 52 08 00 02 80 FF 02 80 00 90 01 00")
    assert polar_ns(datetime(2019, 1, 1, 0, 0, 23, 171427)) == 599_616_023_171_427_000


@given(st.lists(st.integers(-(2**23), 2**23 - 1), max_size=80), st.integers(0, 2**64 - 1))
def test_ecg_frame_round_trip(samples: list[int], ts: int) -> None:
    b = EcgFrame(ts, samples).to_bytes()
    assert b[0] == 0 and b[9] == 0 and struct.unpack_from("<Q", b, 1)[0] == ts
    got = [int.from_bytes(b[i : i + 3], "little", signed=True) for i in range(10, len(b), 3)]
    assert got == samples


# ================================================================== peripherals over the virtual radio


IDLE = 3600.0
"""Periodic behaviour effectively off: the tests trigger measurements themselves."""


@pytest.fixture
async def link() -> AsyncIterator[LocalLink]:
    yield LocalLink()


def test_identity_is_stable_per_seed() -> None:
    a = [device_identity(p, i, 7) for p in Profile for i in range(3)]
    b = [device_identity(p, i, 7) for p in Profile for i in range(3)]
    c = [device_identity(p, i, 8) for p in Profile for i in range(3)]
    assert a == b
    assert {x.address for x in a}.isdisjoint({x.address for x in c})
    assert len({x.address for x in a}) == len(a) and len({x.serial for x in a}) == len(a)
    for ident in a:
        assert int(ident.address[:2], 16) >> 6 == 0b11  # static random


def test_fleet_builds_every_profile_with_valid_advertising() -> None:
    fleet = build_fleet(dict.fromkeys(Profile, 2), FleetOptions(seed=3))
    assert len(fleet) == 12
    for p in fleet:
        assert len(p.advertising_data()) <= 31


def test_hr_interval_option_paces_heart_rate_straps_only() -> None:
    from firmware_sim.cli import build_parser

    args = build_parser().parse_args(["ble", "--hub", "127.0.0.1:1", "--heart-rate", "2", "--hr-interval", "0.02"])
    assert args.hr_interval == 0.02
    assert build_parser().parse_args(["ble", "--hub", "127.0.0.1:1"]).hr_interval == 1.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ble", "--hub", "127.0.0.1:1", "--hr-interval", "0"])
    fleet = build_fleet({Profile.HEART_RATE: 2, Profile.ECG: 1}, FleetOptions(hr_interval_s=args.hr_interval))
    straps = [p for p in fleet if isinstance(p, HeartRateStrap)]  # EcgStrap is one too, paced by its own frames
    assert [(type(p), p.interval_s) for p in straps] == [
        (HeartRateStrap, 0.02),
        (HeartRateStrap, 0.02),
        (EcgStrap, 1.0),
    ]


def test_fault_spec_parse_and_arm() -> None:
    assert FaultSpec.parse("disconnect-mid-racp=3@glucose-meter") == FaultSpec(
        FaultKind.DISCONNECT_MID_RACP, 3, "glucose-meter"
    )
    assert FaultSpec.parse("hang") == FaultSpec(FaultKind.HANG)
    with pytest.raises(ValueError):
        FaultSpec.parse("explode")
    fleet = build_fleet({Profile.GLUCOSE_METER: 1, Profile.CGM: 1, Profile.HEART_RATE: 1})
    assert arm_faults(fleet, [FaultSpec.parse("bad-crc=2"), FaultSpec.parse("garbage@heart-rate")]) == 2
    assert arm_faults(fleet, [FaultSpec.parse("sequence-reset=2")]) == 1


def _make(profile: Profile) -> SimPeripheral:
    ident = device_identity(profile, 0, 11)
    if profile is Profile.HEART_RATE:
        return HeartRateStrap(ident, seed=11, interval_s=IDLE)
    if profile is Profile.BLOOD_PRESSURE:
        return BloodPressureCuff(ident, seed=11, interval_s=IDLE, cuff_step_s=0.0)
    if profile is Profile.PULSE_OXIMETER:
        return PulseOximeter(ident, seed=11, interval_s=IDLE, spot_check_every=1)
    if profile is Profile.GLUCOSE_METER:
        return GlucoseMeter(ident, seed=11, records=4)
    if profile is Profile.CGM:
        return Cgm(ident, seed=11, records=4, interval_s=IDLE)
    return EcgStrap(ident, seed=11, interval_s=IDLE)


_MEASUREMENT = {
    Profile.HEART_RATE: (uuids.HEART_RATE_SERVICE, uuids.HEART_RATE_MEASUREMENT, False),
    Profile.BLOOD_PRESSURE: (uuids.BLOOD_PRESSURE_SERVICE, uuids.BLOOD_PRESSURE_MEASUREMENT, True),
    Profile.PULSE_OXIMETER: (uuids.PULSE_OXIMETER_SERVICE, uuids.PLX_CONTINUOUS, False),
    Profile.GLUCOSE_METER: (uuids.GLUCOSE_SERVICE, uuids.GLUCOSE_MEASUREMENT, False),
    Profile.CGM: (uuids.CGM_SERVICE, uuids.CGM_MEASUREMENT, False),
    Profile.ECG: (uuids.PMD_SERVICE, uuids.HEART_RATE_MEASUREMENT, False),
}


async def _measure(p: SimPeripheral) -> bytes:
    """Trigger one measurement and return the bytes the device meant to send."""
    if isinstance(p, HeartRateStrap | BloodPressureCuff | PulseOximeter):
        return await p.measure()
    if isinstance(p, GlucoseMeter):
        return (await p.measure()).measurement(mol_per_l=p.mol_per_l).to_bytes()
    assert isinstance(p, Cgm)
    return (await p.measure()).to_bytes(e2e_crc=p.e2e_crc)


@pytest.mark.parametrize("profile", list(Profile))
async def test_each_profile_advertises_serves_standard_services_and_notifies(link: LocalLink, profile: Profile) -> None:
    p = _make(profile)
    service, measurement, indicate = _MEASUREMENT[profile]
    async with BleSimulation([p], link=link), central_device(link) as dev:
        adv = await advertisement_of(dev, p.identity.address)
        assert adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME) == p.identity.name
        assert service in (adv.data.get(AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS) or []) + (
            adv.data.get(AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS) or []
        )
        c = await connect(dev, p.identity.address)
        assert await c.read(uuids.SERIAL_NUMBER) == p.identity.serial.encode()
        assert await c.read(uuids.MANUFACTURER_NAME) == p.identity.manufacturer.encode()
        assert await c.read(uuids.MODEL_NUMBER) == p.identity.model.encode()
        assert await c.read(uuids.FIRMWARE_REVISION) == p.identity.firmware.encode()
        assert await c.read(uuids.BATTERY_LEVEL) == b"\x64"
        ct = await c.read(uuids.CURRENT_TIME)
        assert len(ct) == 10 and struct.unpack_from("<H", ct)[0] == p.clock.now().year
        queue = await c.subscribe(measurement, indicate=indicate)
        if isinstance(p, EcgStrap):
            expected = await p.measure()
        else:
            expected = await _measure(p)
        assert await asyncio.wait_for(queue.get(), 5.0) == expected


async def test_blood_pressure_cuff_sends_cuff_pressure_before_the_result(link: LocalLink) -> None:
    p = _make(Profile.BLOOD_PRESSURE)
    async with BleSimulation([p], link=link), central_device(link) as dev:
        c = await connect(dev, p.identity.address)
        cuff = await c.subscribe(uuids.INTERMEDIATE_CUFF_PRESSURE)
        result = await c.subscribe(uuids.BLOOD_PRESSURE_MEASUREMENT, indicate=True)
        assert await c.read(uuids.BLOOD_PRESSURE_FEATURE) == b"\x0d\x00"
        expected = await _measure(p)
        assert await asyncio.wait_for(result.get(), 5.0) == expected
        pressures = await drain(cuff)
        assert pressures[0] == h("00 B4 00 FF 07 FF 07") and len(pressures) == 7


async def test_pulse_oximeter_spot_check_and_features(link: LocalLink) -> None:
    p = _make(Profile.PULSE_OXIMETER)
    assert isinstance(p, PulseOximeter)
    async with BleSimulation([p], link=link), central_device(link) as dev:
        c = await connect(dev, p.identity.address)
        spot = await c.subscribe(uuids.PLX_SPOT_CHECK, indicate=True)
        await p.measure()
        value = await asyncio.wait_for(spot.get(), 5.0)
        assert value[0] == 0x03 and struct.unpack_from("<H", value, 12)[0] == 0x0080
        features = await c.read(uuids.PLX_FEATURES)
        assert struct.unpack_from("<H", features)[0] & 0x01


async def test_clock_is_settable_and_jumps_are_notified(link: LocalLink) -> None:
    p = _make(Profile.HEART_RATE)
    async with BleSimulation([p], link=link), central_device(link) as dev:
        c = await connect(dev, p.identity.address)
        await c.write(uuids.CURRENT_TIME, h("E8 07 03 0F 0D 2D 1E 05 80 01"))
        ct = await c.read(uuids.CURRENT_TIME)
        assert ct[:6] == h("E8 07 03 0F 0D 2D") and ct[9] == 0x01
        with pytest.raises(att.ATT_Error) as err:
            await c.write(uuids.CURRENT_TIME, b"\x00")
        assert err.value.error_code == 0x0D
        updates = await c.subscribe(uuids.CURRENT_TIME)
        await p.jump_clock(3600.0)
        jumped = await asyncio.wait_for(updates.get(), 5.0)
        assert jumped[4] in (14, 15)  # 13:45 + 1 h (+ the seconds the test took)


async def test_heart_rate_control_point(link: LocalLink) -> None:
    p = _make(Profile.HEART_RATE)
    assert isinstance(p, HeartRateStrap)
    async with BleSimulation([p], link=link), central_device(link) as dev:
        c = await connect(dev, p.identity.address)
        p.energy_kj = 500
        await c.write(uuids.HEART_RATE_CONTROL_POINT, b"\x01")
        assert p.energy_kj == 0
        with pytest.raises(att.ATT_Error) as err:
            await c.write(uuids.HEART_RATE_CONTROL_POINT, b"\x02")
        assert err.value.error_code == 0x80
        assert await c.read(uuids.BODY_SENSOR_LOCATION) == b"\x01"


# ------------------------------------------------------------------ glucose meter RACP


async def _glucose_central(c: Central) -> tuple[asyncio.Queue[tuple[str, bytes]], asyncio.Queue[bytes]]:
    records: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    await c.subscribe_tagged(uuids.GLUCOSE_MEASUREMENT, records, "m")
    await c.subscribe_tagged(uuids.GLUCOSE_CONTEXT, records, "c")
    racp = await c.subscribe(uuids.RECORD_ACCESS_CONTROL_POINT, indicate=True)
    return records, racp


def _expected_transfer(meter: GlucoseMeter, seqs: list[int]) -> list[tuple[str, bytes]]:
    out = []
    for r in meter.records:
        if r.sequence in seqs:
            out.append(("m", r.measurement(mol_per_l=meter.mol_per_l).to_bytes()))
            if r.context is not None:
                out.append(("c", r.context.to_bytes()))
    return out


async def test_glucose_meter_racp_flow(link: LocalLink) -> None:
    meter = GlucoseMeter(device_identity(Profile.GLUCOSE_METER, 0, 5), seed=5, records=10)
    async with BleSimulation([meter], link=link), central_device(link) as dev:
        c = await connect(dev, meter.identity.address)
        records, racp = await _glucose_central(c)
        assert await c.read(uuids.GLUCOSE_FEATURE) == b"\x29\x00"

        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("04 01"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("05 00 0A 00")
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("04 03 01 06 00"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("05 00 04 00")

        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 03 01 06 00"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 01 01")
        got = await drain(records)
        assert got == _expected_transfer(meter, [6, 7, 8, 9])
        assert [("c" if t == "c" else "m") for t, _ in got] == ["m", "c", "m", "m", "m", "c"]
        assert [struct.unpack_from("<H", v, 1)[0] for t, v in got if t == "m"] == [6, 7, 8, 9]

        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 03 01 50 00"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 01 06")
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("07 01"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 07 02")
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 06"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 01 01")
        assert [struct.unpack_from("<H", v, 1)[0] for t, v in await drain(records) if t == "m"] == [9]

        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("02 02 01 04 00"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 02 01")
        assert meter.keys() == [5, 6, 7, 8, 9]


async def test_racp_needs_indications_and_one_procedure_at_a_time(link: LocalLink) -> None:
    meter = GlucoseMeter(device_identity(Profile.GLUCOSE_METER, 0, 5), seed=5, records=50, record_interval_s=0.01)
    async with BleSimulation([meter], link=link), central_device(link) as dev:
        c = await connect(dev, meter.identity.address)
        with pytest.raises(att.ATT_Error) as err:
            await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 01"))
        assert err.value.error_code == 0x81
        records, racp = await _glucose_central(c)
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 01"))
        await asyncio.wait_for(records.get(), 5.0)
        with pytest.raises(att.ATT_Error) as err:
            await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("04 01"))
        assert err.value.error_code == 0x80
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("03 00"))  # abort
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 03 01")
        received = 1 + len([t for t, _ in await drain(records) if t == "m"])
        assert received < 50
        assert racp.empty()  # the aborted report sends no response of its own


async def test_disconnect_mid_racp_then_resume(link: LocalLink) -> None:
    meter = GlucoseMeter(device_identity(Profile.GLUCOSE_METER, 0, 5), seed=5, records=10)
    meter.faults.racp_disconnect_after = 4
    async with BleSimulation([meter], link=link), central_device(link) as dev:
        c = await connect(dev, meter.identity.address)
        records, racp = await _glucose_central(c)
        gone = asyncio.get_running_loop().create_future()
        c.connection.on(c.connection.EVENT_DISCONNECTION, lambda _r: gone.set_result(None))
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 01"))
        await asyncio.wait_for(gone, 5.0)
        first = [struct.unpack_from("<H", v, 1)[0] for t, v in await drain(records) if t == "m"]
        assert first == [0, 1, 2, 3] and racp.empty()

        c = await connect(dev, meter.identity.address)  # the meter advertises again
        records, racp = await _glucose_central(c)
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 03 01 04 00"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 01 01")
        rest = [struct.unpack_from("<H", v, 1)[0] for t, v in await drain(records) if t == "m"]
        assert first + rest == list(range(10))


async def test_reset_meter_and_control_solution(link: LocalLink) -> None:
    meter = GlucoseMeter(device_identity(Profile.GLUCOSE_METER, 0, 5), seed=5, records=10)
    async with BleSimulation([meter], link=link), central_device(link) as dev:
        c = await connect(dev, meter.identity.address)
        records, racp = await _glucose_central(c)
        meter.reset_meter(new_records=2)
        meter.add_control_solution(1)
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 01"))
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 01 01")
        got = [v for t, v in await drain(records) if t == "m"]
        assert [struct.unpack_from("<H", v, 1)[0] for v in got] == [0, 1, 2]
        assert got[-1][14] == 0x4A  # type 10 control solution, location 4 control solution
        assert got[0][14] == 0x11


# ------------------------------------------------------------------ CGM


def _split_cgm(value: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(value):
        size = value[off]
        out.append(value[off : off + size])
        off += size
    return out


async def test_cgm_racp_multi_record_with_crc_and_bad_crc_fault(link: LocalLink) -> None:
    cgm = Cgm(device_identity(Profile.CGM, 0, 5), seed=5, records=12, interval_s=IDLE)
    cgm.corrupt_crc(1)
    async with BleSimulation([cgm], link=link), central_device(link) as dev:
        c = await connect(dev, cgm.identity.address, mtu=185)
        feature = await c.read(uuids.CGM_FEATURE)
        assert struct.unpack("<I", feature[:3] + b"\x00")[0] & (1 << 12)
        assert crc16_mcrf4xx(feature[:4]) == struct.unpack_from("<H", feature, 4)[0]
        for uuid in (uuids.CGM_STATUS, uuids.CGM_SESSION_RUN_TIME, uuids.CGM_SESSION_START_TIME):
            v = await c.read(uuid)
            assert crc16_mcrf4xx(v[:-2]) == struct.unpack_from("<H", v, len(v) - 2)[0]
        notes = await c.subscribe(uuids.CGM_MEASUREMENT)
        racp = await c.subscribe(uuids.RECORD_ACCESS_CONTROL_POINT, indicate=True)
        await c.write(uuids.RECORD_ACCESS_CONTROL_POINT, h("01 03 01 1E 00"))  # offset >= 30 min
        assert await asyncio.wait_for(racp.get(), 5.0) == h("06 00 01 01")
        notifications = await drain(notes)
        assert len(notifications) < 6  # packed several records per notification
        recs = [r for n in notifications for r in _split_cgm(n)]
        assert [struct.unpack_from("<H", r, 4)[0] for r in recs] == list(range(30, 60, 5))
        good = [crc16_mcrf4xx(r[:-2]) == struct.unpack_from("<H", r, len(r) - 2)[0] for r in recs]
        assert good == [False] + [True] * 5


async def test_cgm_without_crc_and_socp(link: LocalLink) -> None:
    plain = Cgm(device_identity(Profile.CGM, 1, 5), seed=5, records=3, e2e_crc=False, interval_s=IDLE)
    crc = Cgm(device_identity(Profile.CGM, 2, 5), seed=5, records=3, interval_s=IDLE)
    async with BleSimulation([plain, crc], link=link), central_device(link) as dev:
        c = await connect(dev, plain.identity.address)
        assert (await c.read(uuids.CGM_FEATURE))[-2:] == b"\xff\xff"
        notes = await c.subscribe(uuids.CGM_MEASUREMENT)
        record = await plain.measure()
        assert await asyncio.wait_for(notes.get(), 5.0) == record.to_bytes(e2e_crc=False)
        await c.connection.disconnect()

        c = await connect(dev, crc.identity.address)
        with pytest.raises(att.ATT_Error) as err:
            await c.write(uuids.CGM_SPECIFIC_OPS_CONTROL_POINT, h("1A 5C B0"))
        assert err.value.error_code == 0xFD
        socp_ind = await c.subscribe(uuids.CGM_SPECIFIC_OPS_CONTROL_POINT, indicate=True)
        with pytest.raises(att.ATT_Error) as err:
            await c.write(uuids.CGM_SPECIFIC_OPS_CONTROL_POINT, h("1A 00 00"))
        assert err.value.error_code == 0x81
        await c.write(uuids.CGM_SPECIFIC_OPS_CONTROL_POINT, h("1A 5C B0"))
        assert await asyncio.wait_for(socp_ind.get(), 5.0) == h("1C 1A 01 6D 60")
        await c.write(uuids.CGM_SPECIFIC_OPS_CONTROL_POINT, h("01 05 CD BE"))
        assert (await asyncio.wait_for(socp_ind.get(), 5.0))[:3] == h("1C 01 01")
        await c.write(
            uuids.CGM_SESSION_START_TIME, cgm_session_start_time(datetime(2024, 3, 15, 7), 4, 0, e2e_crc=True)
        )
        assert (await c.read(uuids.CGM_SESSION_START_TIME))[:7] == h("E8 07 03 0F 07 00 00")


# ------------------------------------------------------------------ Polar PMD ECG


async def test_pmd_ecg_start_stream_stop(link: LocalLink) -> None:
    strap = EcgStrap(device_identity(Profile.ECG, 0, 5), seed=5, interval_s=IDLE)
    async with BleSimulation([strap], link=link), central_device(link) as dev:
        c = await connect(dev, strap.identity.address, mtu=247)
        control = await c.subscribe(uuids.PMD_CONTROL_POINT, indicate=True)
        data = await c.subscribe(uuids.PMD_DATA)
        assert await c.read(uuids.PMD_CONTROL_POINT) == h("0F 05 00")
        await c.write(uuids.PMD_CONTROL_POINT, h("01 00"))
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 01 00 00 00 00 01 82 00 01 01 0E 00")
        await c.write(uuids.PMD_CONTROL_POINT, h("02 00 00 01 82 00 01 01 0E 00"))
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 02 00 00 00")
        frames = [await asyncio.wait_for(data.get(), 5.0) for _ in range(3)]
        for f in frames:
            assert f[0] == 0x00 and f[9] == 0x00 and len(f) == 10 + 3 * 73
        stamps = [struct.unpack_from("<Q", f, 1)[0] for f in frames]
        assert [b - a for a, b in itertools.pairwise(stamps)] == [pytest.approx(73e9 / 130, abs=2)] * 2
        await c.write(uuids.PMD_CONTROL_POINT, h("02 00 00 01 82 00 01 01 0E 00"))
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 02 00 06 00")  # already streaming
        await c.write(uuids.PMD_CONTROL_POINT, h("03 00"))
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 03 00 00 00")
        assert not strap.streaming
        sent = strap.frames_sent
        await c.write(uuids.PMD_CONTROL_POINT, h("02 00 00 01 FA 00 01 01 0E 00"))  # 250 Hz
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 02 00 08 00")
        await c.write(uuids.PMD_CONTROL_POINT, h("02 02"))  # ACC
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 02 02 03 00")
        assert strap.frames_sent == sent


async def test_pmd_ecg_of_a_ward_patient_is_paced_on_ward_time(link: LocalLink) -> None:
    # At speed 20 the strap must send 20 × 130 samples per real second, so that its ECG covers every beat
    # the ward's beat train (and the strap's own heart-rate service) reports, and its timestamps follow
    # the device clock, which runs on ward time.
    from firmware_sim.ble.clock import DeviceClock
    from firmware_sim.ward import Ward

    w = Ward(1, seed=3, speed=20.0)
    clock = DeviceClock(host_time=w.epoch)
    strap = EcgStrap(device_identity(Profile.ECG, 0, 5), seed=5, interval_s=IDLE, patient=w.patient(0), clock=clock)
    async with BleSimulation([strap], link=link), central_device(link) as dev:
        c = await connect(dev, strap.identity.address, mtu=247)
        control = await c.subscribe(uuids.PMD_CONTROL_POINT, indicate=True)
        data = await c.subscribe(uuids.PMD_DATA)
        await c.write(uuids.PMD_CONTROL_POINT, h("02 00 00 01 82 00 01 01 0E 00"))
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 02 00 00 00")
        first = await asyncio.wait_for(data.get(), 5.0)
        ward0 = w.now_s()

        def stamp(f: bytes) -> int:
            return int(struct.unpack_from("<Q", f, 1)[0])

        # until the strap's own timestamps cover 20 ward seconds (one real second at ×20): counting up to a
        # wall-clock deadline instead would miss the burst with which it catches up after a stall of the loop
        frames = [first]
        while stamp(frames[-1]) - stamp(first) < 20 * 10**9:
            frames.append(await asyncio.wait_for(data.get(), 5.0))
        ward_s = w.now_s() - ward0
        samples = sum((len(f) - 10) // 3 for f in frames[1:])
        span_s = (stamp(frames[-1]) - stamp(first)) / 1e9
        assert span_s == pytest.approx(samples / 130, rel=0.01)  # device time, not loop time
        assert samples == pytest.approx(ward_s * 130, rel=0.15, abs=2 * 73)  # it kept pace with ward time


async def test_pmd_frames_shrink_to_the_mtu(link: LocalLink) -> None:
    strap = EcgStrap(device_identity(Profile.ECG, 0, 5), seed=5, interval_s=IDLE)
    async with BleSimulation([strap], link=link), central_device(link) as dev:
        c = await connect(dev, strap.identity.address)  # default ATT MTU 23
        control = await c.subscribe(uuids.PMD_CONTROL_POINT, indicate=True)
        data = await c.subscribe(uuids.PMD_DATA)
        await c.write(uuids.PMD_CONTROL_POINT, h("02 00 00 01 82 00 01 01 0E 00"))
        assert await asyncio.wait_for(control.get(), 5.0) == h("F0 02 00 00 00")
        frame = await asyncio.wait_for(data.get(), 5.0)
        assert len(frame) == 10 + 3 * 3
        await c.connection.disconnect()
        for _ in range(10):
            await asyncio.sleep(0)
        assert not strap.streaming  # a dropped link stops the stream


# ------------------------------------------------------------------ faults: hang, garbage


async def test_hang_then_resume(link: LocalLink) -> None:
    p = _make(Profile.HEART_RATE)
    async with BleSimulation([p], link=link), central_device(link) as dev:
        c = await connect(dev, p.identity.address)
        p.faults.hang()
        pending = asyncio.ensure_future(c.read(uuids.BATTERY_LEVEL))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not pending.done()
        p.faults.resume()
        assert await asyncio.wait_for(pending, 5.0) == b"\x64"


async def test_garbage_notification(link: LocalLink) -> None:
    p = _make(Profile.HEART_RATE)
    assert isinstance(p, HeartRateStrap)
    async with BleSimulation([p], link=link), central_device(link) as dev:
        c = await connect(dev, p.identity.address)
        queue = await c.subscribe(uuids.HEART_RATE_MEASUREMENT)
        p.faults.garbage = 1
        meant = await p.measure()
        assert await asyncio.wait_for(queue.get(), 5.0) != meant
        meant = await p.measure()
        assert await asyncio.wait_for(queue.get(), 5.0) == meant


async def test_fleet_runs_periodic_measurements(link: LocalLink) -> None:
    fleet = build_fleet(dict.fromkeys(Profile, 1), FleetOptions(seed=2, records=3, realtime=False))
    async with BleSimulation(fleet, link=link), central_device(link) as dev:
        hr = next(p for p in fleet if p.identity.profile is Profile.HEART_RATE)
        c = await connect(dev, hr.identity.address)
        queue = await c.subscribe(uuids.HEART_RATE_MEASUREMENT)
        for _ in range(3):
            value = await asyncio.wait_for(queue.get(), 5.0)
            assert value[0] & 0x06 == 0x06 and 40 <= value[1] <= 180


async def test_peripheral_over_an_hci_tcp_transport(link: LocalLink) -> None:
    """The hub path: the peripheral's host reaches a controller on the link through bumble's HCI
    TCP transport (here a one-controller stand-in for the hub process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = await open_transport(f"tcp-server:127.0.0.1:{port}")
    controller = Controller("hub-0", host_source=server.source, host_sink=server.sink, link=link)
    controller.le_acl_data_packet_length = 251
    p = _make(Profile.HEART_RATE)
    try:
        async with BleSimulation([p], transport=f"tcp-client:127.0.0.1:{port}"), central_device(link) as dev:
            c = await connect(dev, p.identity.address)
            assert await c.read(uuids.SERIAL_NUMBER) == p.identity.serial.encode()
            queue = await c.subscribe(uuids.HEART_RATE_MEASUREMENT)
            expected = await _measure(p)
            assert await asyncio.wait_for(queue.get(), 5.0) == expected
    finally:
        link.remove_controller(controller)
        await server.close()
        listener: asyncio.Server = server.server  # type: ignore[attr-defined]  # bumble's close() leaves it open
        listener.close()
        await listener.wait_closed()
