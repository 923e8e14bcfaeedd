"""SenML (RFC 8428) decoding and the gateway's SenML profile: protocols.md §10 vectors, every quarantine
reason, unit conversions, names, times, ECG frames and docs/mqtt.md."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

from drivers.senml import REASONS, SENML_CBOR, SENML_JSON, Frame, SenmlRecord, decode_frame, decode_pack
from drivers.senml.codec import DECODE_REASONS
from drivers.senml.profile import HANDLERS, decode_samples, frame_from_records
from gateway.errors import PayloadError
from gateway.model import Reading, TimeQuality
from gateway.vocabulary import METRICS

ROOT = Path(__file__).resolve().parent.parent
DEV = "p01-ecg"
BN = f"urn:dev:ds4h:{DEV}:"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW_NS = T0 * 10**9 + 500_000_000  # the gateway's receive time in these tests
UNCORRECTED = int(TimeQuality.DEVICE_UNCORRECTED)
UNSYNCED = int(TimeQuality.GATEWAY_UNSYNCED)

CBOR_KEYS = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "n": 0, "u": 1, "v": 2, "vs": 3}
CBOR_KEYS |= {"vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}


def to_json(records: list[dict[Any, Any]]) -> bytes:
    out = [
        {k: (base64.urlsafe_b64encode(v).rstrip(b"=").decode() if k == "vd" else v) for k, v in r.items()}
        for r in records
    ]
    return json.dumps(out, separators=(",", ":")).encode()


def to_cbor(records: list[dict[Any, Any]]) -> bytes:
    return cbor2.dumps([{CBOR_KEYS.get(k, k): v for k, v in r.items()} for r in records])


def frame(records: list[dict[str, Any]], *, cbor: bool = False, **kw: Any) -> Frame:
    payload = to_cbor(records) if cbor else to_json(records)
    return decode_frame(payload, SENML_CBOR if cbor else SENML_JSON, DEV, NOW_NS, **kw)


def header(seq: int = 7, unacked: int | None = None, boot: str = "b00t-1") -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = [{"bn": BN, "bt": T0, "n": "boot", "vs": boot}, {"n": "seq", "v": seq}]
    if unacked is not None:
        recs.append({"n": "unacked", "v": unacked})
    return recs


# --- protocols.md §10 vectors ---------------------------------------------------------------------------
EXAMPLE_JSON = (
    b'[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1710489600,"n":"hr","u":"1/s","v":1.2},\n'
    b' {"n":"spo2","u":"/","v":0.97,"t":1}]'
)
EXAMPLE_CBOR = bytes.fromhex(
    "82 A5 21 78 1D 75 72 6E 3A 64 65 76 3A 6D 61 63 3A 30 30 32 34 62 65 66 66 66 65 38 30"
    "34 66 66 31 3A 22 1A 65 F4 00 00 00 62 68 72 01 63 31 2F 73 02 FB 3F F3 33 33 33 33 33"
    "33 A4 00 64 73 70 6F 32 01 61 2F 02 FB 3F EF 0A 3D 70 A3 D7 0A 06 01"
)
EXAMPLE_RESOLVED = [
    SenmlRecord("urn:dev:mac:0024befffe804ff1:hr", "1/s", 1.2, None, None, None, None, 1710489600.0, None),
    SenmlRecord("urn:dev:mac:0024befffe804ff1:spo2", "/", 0.97, None, None, None, None, 1710489601.0, None),
]
ECG_EXAMPLE = (
    b'[{"bn":"urn:dev:mac:0024befffe804ff1:ecg:","bt":1710489600.123,"n":"fs","u":"Hz","v":130},\n'
    b' {"n":"scale","u":"V","v":1e-06},\n'
    b' {"n":"lead","vs":"MDC_ECG_ELEC_POTL"},\n'
    b' {"n":"i16le","vd":"9P8jAJIBugSEAQ"}]'
)
ECG_SAMPLES = [-12, 35, 402, 1210, 388]


def test_protocols_example_json_and_cbor_decode_to_the_resolved_records() -> None:
    assert len(EXAMPLE_CBOR) == 81
    assert decode_pack(EXAMPLE_JSON, SENML_JSON) == EXAMPLE_RESOLVED
    assert decode_pack(EXAMPLE_CBOR, SENML_CBOR) == EXAMPLE_RESOLVED
    assert decode_pack(EXAMPLE_JSON) == decode_pack(EXAMPLE_CBOR) == EXAMPLE_RESOLVED  # sniffed


def test_protocols_example_cbor_is_the_json_pack_re_encoded() -> None:
    assert to_cbor(json.loads(EXAMPLE_JSON)) == EXAMPLE_CBOR


def test_protocols_ecg_example() -> None:
    records = decode_pack(ECG_EXAMPLE)
    assert [r.name for r in records] == [
        f"urn:dev:mac:0024befffe804ff1:ecg:{n}" for n in ("fs", "scale", "lead", "i16le")
    ]
    assert all(r.time == 1710489600.123 for r in records)
    assert (records[0].value, records[0].unit) == (130, "Hz")
    assert (records[1].value, records[1].unit) == (1e-06, "V")
    assert records[2].string == "MDC_ECG_ELEC_POTL"
    assert records[3].data == bytes.fromhex("f4ff 2300 9201 ba04 8401")
    assert decode_samples(records[3].data, 2).tolist() == ECG_SAMPLES
    # protocols.md: "CBOR of this 5-sample pack = 126 B"
    cbor = [dict(r) for r in json.loads(ECG_EXAMPLE)]
    cbor[3]["vd"] = records[3].data
    assert len(to_cbor(cbor)) == 126
    assert decode_pack(to_cbor(cbor)) == records


def test_protocols_ecg_example_as_a_gateway_frame() -> None:
    # the example's base name is a MAC URN: the gateway wants its own naming
    with pytest.raises(PayloadError) as e:
        decode_frame(ECG_EXAMPLE, None, DEV, 1710489600 * 10**9)
    assert e.value.reason == "bad_name" and BN in str(e.value)
    ours = ECG_EXAMPLE.replace(b"urn:dev:mac:0024befffe804ff1:", BN.encode())
    f = decode_frame(ours, None, DEV, 1710489601 * 10**9)
    assert f.readings == () and (f.boot, f.seq, f.unacked) == (None, None, None)
    (w,) = f.waveforms
    assert (w.metric, w.unit, w.period_ns, w.time_quality) == ("ecg", "uV", 7_692_308, UNCORRECTED)
    assert w.start_ns == 1_710_489_600_123_000_000
    assert w.samples.dtype == np.int32 and w.samples.tolist() == ECG_SAMPLES


# --- resolution ----------------------------------------------------------------------------------------
def test_base_fields_carry_over_until_redefined() -> None:
    recs: list[dict[str, Any]] = [
        {"bn": "dev1:", "bt": 2_000_000_000, "bu": "Cel", "bv": 30, "bs": 100, "n": "a", "v": 7, "s": 1},
        {"n": "b", "v": 0.5, "t": -2},
        {"bn": "dev2/", "n": "c", "u": "K", "vs": "text", "t": 3},
        {"bt": 1_000, "bu": "V", "bv": 0.25, "n": "d", "v": 1, "s": 2},
        {"vb": True, "ut": 60},
    ]
    for payload in (to_json(recs), to_cbor(recs)):
        got = decode_pack(payload)
        assert [(r.name, r.unit, r.value, r.string, r.boolean, r.sum, r.time, r.update_time) for r in got] == [
            ("dev1:a", "Cel", 37, None, None, 101, 2_000_000_000.0, None),
            ("dev1:b", "Cel", 30.5, None, None, None, 1_999_999_998.0, None),
            ("dev2/c", "K", None, "text", None, None, 2_000_000_003.0, None),
            ("dev2/d", "V", 1.25, None, None, 102, 1_000.0, None),
            ("dev2/", "V", None, None, True, None, 1_000.0, 60.0),
        ]


def test_defaults_and_numbers_as_floats() -> None:
    (r,) = decode_pack(b'[{"n":"x","v":72}]')
    assert r.time == 0.0 and r.unit is None and r.value == 72.0 and type(r.value) is float and type(r.time) is float
    (r,) = decode_pack(to_cbor([{"n": "x", "v": 2**53, "t": 3}]))
    assert r.value == 2**53 and type(r.value) is float and r.time == 3.0 and type(r.time) is float
    (r,) = decode_pack(b'[{"n":"x","v":1' + b"0" * 30 + b"}]")
    assert r.value == 1e30


def test_sum_only_record_and_data_values() -> None:
    (r,) = decode_pack(b'[{"n":"energy","u":"J","s":12.5}]')
    assert (r.value, r.sum) == (None, 12.5)
    (r,) = decode_pack(b'[{"n":"blob","vd":"AAEC"}]')
    assert r.data == b"\x00\x01\x02"
    (r,) = decode_pack(b'[{"n":"blob","vd":"AAE="}]')  # correct padding is tolerated
    assert r.data == b"\x00\x01"
    (r,) = decode_pack(b'[{"n":"blob","vd":""}]')
    assert r.data == b""


def test_unknown_labels_are_ignored_unless_they_end_in_underscore() -> None:
    (r,) = decode_pack(b'[{"n":"x","v":1,"foo":[1,2],"ct":"60","bct":"x"}]')
    assert r.value == 1
    (r,) = decode_pack(to_cbor([{"n": "x", "v": 1, 99: "ignored", "foo": 1}]))
    assert r.value == 1


def test_bver_up_to_10_is_accepted() -> None:
    assert len(decode_pack(b'[{"bver":10,"n":"x","v":1},{"bver":10,"n":"y","v":2}]')) == 2
    assert len(decode_pack(b'[{"bver":5,"n":"x","v":1},{"n":"y","v":2}]')) == 2


def test_sniffing_and_content_types() -> None:
    assert decode_pack(b' \r\n\t[{"n":"x","v":1}]')[0].value == 1
    cbor = to_cbor([{"n": "x", "v": 1}])
    assert decode_pack(cbor)[0].value == 1
    assert decode_pack(cbor, "")[0].value == 1
    assert decode_pack(b"\xd9\xd9\xf7" + cbor)[0].value == 1  # self-described CBOR (tag 55799)
    assert decode_pack(cbor, "application/cbor")[0].value == 1
    assert decode_pack(b'[{"n":"x","v":1}]', "application/json")[0].value == 1
    assert decode_pack(b'[{"n":"x","v":1}]', "Application/SenML+JSON; charset=utf-8")[0].value == 1
    assert decode_pack(bytearray(cbor), SENML_CBOR)[0].value == 1  # type: ignore[arg-type]


def test_int24_sign_extension() -> None:
    values = [0, 1, -1, -2, 8_388_607, -8_388_608, 65_536, -65_536, 255, -256]
    raw = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    assert raw[6:9] == b"\xff\xff\xff"
    assert decode_samples(raw, 3).tolist() == values
    f = frame([*header(), {"n": "ecg:fs", "u": "Hz", "v": 250}, {"n": "ecg:i24le", "vd": raw}], cbor=True)
    assert f.waveforms[0].samples.tolist() == values
    assert f.waveforms[0].samples.dtype == np.int32


# --- the profile ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "unit", "value", "metric", "clinical_unit", "expected"),
    [
        ("heart-rate", "1/s", 1.2, "heart_rate", "/min", 72.0),
        ("heart-rate", "beat/min", 72, "heart_rate", "/min", 72.0),
        ("heart-rate", "1/min", 61.5, "heart_rate", "/min", 61.5),
        ("spo2", "/", 0.97, "spo2", "%", 97.0),
        ("glucose", "kg/m3", 0.98, "glucose_capillary_whole_blood", "mg/dL", 98.0),
        ("glucose", "mmol/l", 5.4, "glucose_capillary_whole_blood", "mmol/L", 5.4),
        ("cgm-glucose", "kg/m3", 1.23, "glucose_isf", "mg/dL", 123.0),
        ("cgm-glucose", "mmol/l", 3.9, "glucose_isf", "mmol/L", 3.9),
        ("bp-systolic", "Pa", 15998.69, "bp_systolic", "mm[Hg]", pytest.approx(120.0, abs=1e-3)),
        ("bp-diastolic", "Pa", 10665.79, "bp_diastolic", "mm[Hg]", pytest.approx(80.0, abs=1e-3)),
        ("bp-mean", "Pa", 12443.42, "bp_mean", "mm[Hg]", pytest.approx(93.333, abs=1e-3)),
        ("rr-interval", "s", 0.812, "rr_interval", "ms", 812.0),
        ("temperature", "Cel", 37.2, "body_temperature", "Cel", 37.2),
        ("temperature", "K", 310.15, "body_temperature", "Cel", 37.0),
    ],
)
def test_unit_conversions(name: str, unit: str, value: float, metric: str, clinical_unit: str, expected: Any) -> None:
    for cbor in (False, True):
        f = frame([*header(), {"n": name, "u": unit, "v": value, "t": 1}], cbor=cbor)
        (r,) = f.readings
        assert r == Reading(metric, r.value, clinical_unit, (T0 + 1) * 10**9, time_quality=UNCORRECTED)
        assert r.value == expected and type(r.value) is float
        assert clinical_unit in METRICS[metric].units


def test_conversions_strip_float_noise() -> None:
    assert any(x / 100 * 100 != x for x in range(101))  # the noise is real
    f = frame([*header(), *({"n": "spo2", "u": "/", "v": x / 100, "t": x} for x in range(101))])
    assert [r.value for r in f.readings] == [float(x) for x in range(101)]


def test_frame_header_and_readings() -> None:
    recs = [
        *header(seq=17, unacked=15),
        {"n": "heart-rate", "u": "1/s", "v": 1.2, "t": -1},
        {"n": "heart-rate", "u": "1/s", "v": 1.25},
        {"bu": "/", "n": "spo2", "v": 0.97},
    ]
    for cbor in (False, True):
        f = frame(recs, cbor=cbor)
        assert (f.boot, f.seq, f.unacked) == ("b00t-1", 17, 15)
        assert [(r.metric, r.value, r.device_time_ns) for r in f.readings] == [
            ("heart_rate", 72.0, (T0 - 1) * 10**9),
            ("heart_rate", 75.0, T0 * 10**9),
            ("spo2", 97.0, T0 * 10**9),
        ]
        assert f.waveforms == ()


def test_header_counters_up_to_2_53_and_integral_floats_are_accepted() -> None:
    f = frame([*header(seq=2**53, unacked=2**53 - 1), {"n": "spo2", "u": "/", "v": 0.9}], cbor=True)
    assert (f.seq, f.unacked) == (2**53, 2**53 - 1) and type(f.seq) is int and type(f.unacked) is int
    f = frame([{"bn": BN, "n": "boot", "vs": "a:b.c_d-1"}, {"n": "seq", "v": 17.0}, {"n": "spo2", "u": "/", "v": 0.9}])
    assert f.seq == 17 and type(f.seq) is int


def test_bare_local_names_without_base_name() -> None:
    payload = to_json([{"n": "boot", "vs": "x"}, {"n": "seq", "v": 0}, {"n": "heart-rate", "u": "1/s", "v": 1}])
    f = decode_frame(payload, None, DEV, NOW_NS)
    assert f.readings[0].device_time_ns == NOW_NS and f.readings[0].time_quality == 0


def test_plain_senml_frame_without_header() -> None:
    f = frame([{"bn": BN, "bt": T0, "n": "temperature", "u": "Cel", "v": 36.6}])
    assert (f.boot, f.seq, f.unacked) == (None, None, None)
    assert f.readings == (Reading("body_temperature", 36.6, "Cel", T0 * 10**9, time_quality=UNCORRECTED),)


def test_time_rules() -> None:
    def tq_and_ns(t: float, **kw: Any) -> tuple[int, int]:
        (r,) = frame([{"bn": BN, "n": "heart-rate", "u": "1/s", "v": 1, "t": t}], **kw).readings
        return r.time_quality, r.device_time_ns

    assert tq_and_ns(0) == (0, NOW_NS)  # relative: "now"
    assert tq_and_ns(-2.5) == (0, NOW_NS - 2_500_000_000)
    assert tq_and_ns(-(2**28) + 1) == (0, NOW_NS - (2**28 - 1) * 10**9)
    assert tq_and_ns(T0) == (UNCORRECTED, T0 * 10**9)
    assert tq_and_ns(T0 + 300) == (UNCORRECTED, (T0 + 300) * 10**9)  # exactly max_ahead_s after the receive time
    assert tq_and_ns(-1, gateway_synced=False) == (UNSYNCED, NOW_NS - 10**9)
    assert tq_and_ns(T0, gateway_synced=False) == (UNCORRECTED | UNSYNCED, T0 * 10**9)
    # an unsynchronised gateway clock cannot judge a device clock: no "ahead" check for absolute times
    assert tq_and_ns(T0 + 86_400, gateway_synced=False) == (UNCORRECTED | UNSYNCED, (T0 + 86_400) * 10**9)
    assert tq_and_ns(T0 + 3_000, max_ahead_s=3_600) == (UNCORRECTED, (T0 + 3_000) * 10**9)


def test_ecg_frame_with_scale_lead_and_int24() -> None:
    samples = np.array([-300_000, -1, 0, 1, 299_999], dtype=np.int32)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in samples)
    recs = [
        *header(),
        {"n": "heart-rate", "u": "beat/min", "v": 61},
        {"n": "ecg:fs", "u": "Hz", "v": 500},
        {"n": "ecg:scale", "u": "V", "v": 2e-06},
        {"n": "ecg:lead", "vs": "MDC_ECG_ELEC_POTL_II"},
        {"n": "ecg:i24le", "vd": raw, "t": 0.25},
    ]
    for cbor in (False, True):
        f = frame(recs, cbor=cbor)
        (w,) = f.waveforms
        assert (w.metric, w.unit, w.start_ns, w.period_ns) == ("ecg_lead_ii", "uV", T0 * 10**9 + 250_000_000, 2_000_000)
        assert w.samples.tolist() == (samples * 2).tolist()
        assert len(f.readings) == 1


@pytest.mark.parametrize(("lead", "metric"), [("MDC_ECG_ELEC_POTL", "ecg"), ("MDC_ECG_ELEC_POTL_I", "ecg_lead_i")])
def test_ecg_leads(lead: str, metric: str) -> None:
    f = frame(
        [
            {"bn": BN, "bt": T0, "n": "ecg:lead", "vs": lead},
            {"n": "ecg:fs", "u": "Hz", "v": 130},
            {"n": "ecg:i16le", "vd": b"\x01\x00"},
        ]
    )
    assert f.waveforms[0].metric == metric
    assert METRICS[metric].waveform


def test_ecg_scale_in_millivolt_steps() -> None:
    f = frame(
        [
            {"bn": BN, "bt": T0, "n": "ecg:fs", "u": "Hz", "v": 1},
            {"n": "ecg:scale", "u": "V", "v": 1e-3},
            {"n": "ecg:i16le", "vd": b"\x02\x00\xfe\xff"},
        ]
    )
    assert f.waveforms[0].samples.tolist() == [2000, -2000]


def test_frame_from_records_takes_decoded_records() -> None:
    records = decode_pack(to_cbor([{"bn": BN, "bt": T0, "n": "heart-rate", "u": "1/s", "v": 1}]))
    f = frame_from_records(records, DEV, NOW_NS)
    assert f.readings[0].value == 60.0


def test_handler_names_map_to_vocabulary_metrics() -> None:
    for name, handler in HANDLERS.items():
        metric = getattr(handler, "metric", None)
        if metric is not None:
            assert metric in METRICS and not METRICS[metric].waveform, name


# --- every quarantine reason ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    payload: bytes
    reason: str
    content_type: str | None = None
    secrets: tuple[str, ...] = ()
    """Measured values in the payload that must not appear in the message."""
    kw: tuple[tuple[str, Any], ...] = ()


def j(*records: dict[str, Any]) -> bytes:
    return to_json(list(records))


def c(*records: dict[str, Any]) -> bytes:
    return to_cbor(list(records))


HR = {"n": "heart-rate", "u": "1/s", "v": 1.2345678}
HR_SECRET = ("1.2345678", "74.07")
BIG_I16 = bytes(2 * 1_000_001)

CASES = [
    # decoding
    Case("empty-payload", b"", "empty"),
    Case("empty-pack-json", b"[]", "empty"),
    Case("empty-pack-cbor", b"\x80", "empty"),
    Case("content-type", j(HR), "unsupported_content_type", "text/plain", HR_SECRET),
    Case("content-type-xml", j(HR), "unsupported_content_type", "application/senml+xml", HR_SECRET),
    Case("signed-sniffed", bytes.fromhex("d28443a10127a0") + c(HR)[:5], "signed_payload_unsupported"),
    Case("signed-cbor", bytes.fromhex("d28443a10127a0f640"), "signed_payload_unsupported", SENML_CBOR),
    Case("signed-cose-ct", bytes.fromhex("d28443a10127a0f640"), "signed_payload_unsupported", "application/cose"),
    Case("not-json", b'[{"n":"heart-rate","v":73.1234', "malformed", secrets=("73.1234",)),
    Case("not-utf8", b'[{"n":"\xff"}]', "malformed"),
    Case("trailing-garbage", b'[{"n":"x","v":1}] x', "malformed"),
    Case("not-cbor", b"\x82\xa1\x00", "malformed"),
    Case("cbor-not-json", c(HR), "malformed", SENML_JSON, HR_SECRET),
    Case("sniff-fails", b'{"n":"x","v":1}', "malformed"),
    Case("sniff-garbage", b"\x00\x01", "malformed"),
    Case("not-an-array", b'{"n":"x"}', "malformed", SENML_JSON),
    Case("record-not-map", b'[{"n":"x","v":1},[1,2]]', "malformed"),
    Case("two-values", j({"n": "x", "v": 81.234, "vs": "a"}), "malformed", secrets=("81.234",)),
    Case("no-value", j({"n": "x", "u": "Cel"}), "malformed"),
    Case("bad-base64url", b'[{"n":"x","vd":"+/8="}]', "malformed"),
    Case("bad-base64url-length", b'[{"n":"x","vd":"AAAAA"}]', "malformed"),
    Case("bad-base64url-char", b'[{"n":"x","vd":"AA.A"}]', "malformed"),
    Case("duplicate-label-json", b'[{"n":"x","v":61.5,"v":62.5}]', "malformed", secrets=("61.5", "62.5")),
    Case("duplicate-label-cbor", bytes.fromhex("81a3006178020a020b"), "malformed"),
    Case("cbor-tag-inside", bytes.fromhex("81a2006178") + bytes.fromhex("02c11a514b67b0"), "malformed"),
    Case("cbor-unknown-tag", bytes.fromhex("81a2006178") + bytes.fromhex("02d9ffff01"), "malformed"),
    Case("deep-json", b"[" * 100_000 + b"]" * 100_000, "malformed"),
    Case("deep-cbor", b"\x81" * 100 + b"\x00", "malformed"),
    Case("bver-mismatch", j({"bver": 10, "n": "x", "v": 1}, {"bver": 9, "n": "y", "v": 2}), "malformed"),
    Case("bver-default-mismatch", j({"n": "x", "v": 1}, {"bver": 9, "n": "y", "v": 2}), "malformed"),
    Case("wrong-type-v-string", j({"n": "x", "v": "72.5"}), "wrong_type", secrets=("72.5",)),
    Case("wrong-type-v-bool", b'[{"n":"x","v":true}]', "wrong_type"),
    Case("wrong-type-v-null", b'[{"n":"x","v":null}]', "wrong_type"),
    Case("wrong-type-bn", b'[{"bn":5,"n":"x","v":1}]', "wrong_type"),
    Case("wrong-type-n", b'[{"n":5,"v":1}]', "wrong_type"),
    Case("wrong-type-u", b'[{"n":"x","u":1,"v":1}]', "wrong_type"),
    Case("wrong-type-vs", b'[{"n":"x","vs":5}]', "wrong_type"),
    Case("wrong-type-vb", b'[{"n":"x","vb":1}]', "wrong_type"),
    Case("wrong-type-vd-json", b'[{"n":"x","vd":5}]', "wrong_type"),
    Case("wrong-type-vd-cbor", c({"n": "x", "vd": "AAAA"}), "wrong_type"),
    Case("wrong-type-t", b'[{"n":"x","v":1,"t":"now"}]', "wrong_type"),
    Case("wrong-type-bver", b'[{"bver":"10","n":"x","v":1}]', "wrong_type"),
    Case("wrong-type-bver-zero", b'[{"bver":0,"n":"x","v":1}]', "wrong_type"),
    Case("wrong-type-cbor-undefined", bytes.fromhex("81a200617802f7"), "wrong_type"),
    Case("non-finite-nan", b'[{"n":"x","v":NaN}]', "non_finite"),
    Case("non-finite-inf", b'[{"n":"x","v":Infinity}]', "non_finite"),
    Case("non-finite-neg-inf", b'[{"n":"x","v":1,"t":-Infinity}]', "non_finite"),
    Case("non-finite-overflow", b'[{"n":"x","v":1e400}]', "non_finite"),
    Case("non-finite-huge-int", b'[{"n":"x","v":1' + b"0" * 400 + b"}]", "non_finite"),
    Case("non-finite-cbor-nan", bytes.fromhex("81a200617802f97e00"), "non_finite"),
    Case("non-finite-cbor-inf", bytes.fromhex("81a200617802f97c00"), "non_finite"),
    Case("non-finite-base-sum", j({"n": "x", "bv": 1e308, "v": 1e308}), "non_finite"),
    Case("unsupported-version", j({"bver": 11, "n": "x", "v": 1}), "unsupported_version"),
    Case("unknown-label", j({"n": "x", "v": 64.75, "foo_": 1}), "unknown_label", secrets=("64.75",)),
    Case("unknown-label-cbor", c({"n": "x", "v": 1, "bar_": 1}), "unknown_label"),
    Case("bad-name-empty", b'[{"v":1}]', "bad_name"),
    Case("bad-name-start", j({"n": "-x", "v": 1}), "bad_name"),
    Case("bad-name-char", j({"n": "heart rate", "v": 1}), "bad_name"),
    Case("bad-name-unicode", j({"n": "hé", "v": 1}), "bad_name"),
    Case(
        "too-many-records", j(*[{"n": "x", "v": i} for i in range(11)]), "too_many_records", kw=(("max_records", 10),)
    ),
    # profile
    Case("boot-without-seq", j({"bn": BN, "n": "boot", "vs": "b"}, HR), "malformed", secrets=HR_SECRET),
    Case("seq-without-boot", j({"bn": BN, "n": "seq", "v": 3}, HR), "malformed"),
    Case("unacked-alone", j({"bn": BN, "n": "unacked", "v": 3}, HR), "malformed"),
    Case("unacked-above-seq", j(*header(seq=3, unacked=4), HR), "malformed"),
    Case("two-boots", j(*header(), {"n": "boot", "vs": "x"}, HR), "malformed"),
    Case("bad-boot-id", j({"bn": BN, "n": "boot", "vs": "no spaces"}, {"n": "seq", "v": 1}, HR), "malformed"),
    Case("ecg-without-samples", j({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}), "malformed"),
    Case("ecg-without-fs", c({"bn": BN, "n": "ecg:i16le", "vd": b"\x01\x00"}), "malformed"),
    Case(
        "ecg-odd-i16",
        c({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}, {"n": "ecg:i16le", "vd": b"\x01\x00\x02"}),
        "malformed",
    ),
    Case(
        "ecg-i24-length",
        c({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}, {"n": "ecg:i24le", "vd": b"\x01\x00"}),
        "malformed",
    ),
    Case(
        "ecg-no-samples", c({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}, {"n": "ecg:i16le", "vd": b""}), "malformed"
    ),
    Case(
        "ecg-two-sample-records",
        c(
            {"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130},
            {"n": "ecg:i16le", "vd": b"\x01\x00"},
            {"n": "ecg:i24le", "vd": b"\x01\x00\x00"},
        ),
        "malformed",
    ),
    Case(
        "ecg-two-fs",
        c({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}, {"n": "ecg:fs", "u": "Hz", "v": 130}),
        "malformed",
    ),
    Case(
        "ecg-two-scales",
        j({"bn": BN, "n": "ecg:scale", "u": "V", "v": 1e-6}, {"n": "ecg:scale", "u": "V", "v": 1e-6}),
        "malformed",
    ),
    Case("frame-empty", j(*header()), "empty"),
    Case("wrong-device", j({"bn": "urn:dev:ds4h:p02-ecg:", **HR}), "wrong_device", secrets=HR_SECRET),
    Case("wrong-device-bare", j({"n": "urn:dev:ds4h:other:heart-rate", "u": "1/s", "v": 1}), "wrong_device"),
    Case("bad-name-foreign-urn", j({"bn": "urn:dev:mac:0024befffe804ff1:", **HR}), "bad_name", secrets=HR_SECRET),
    Case("bad-name-path", j({"n": "vendor/heart-rate", "u": "1/s", "v": 1}), "bad_name"),
    Case("bad-name-no-local", j({"bn": BN, "v": 1}), "bad_name"),
    Case("bad-name-no-device-colon", j({"n": f"urn:dev:ds4h:{DEV}", "v": 1}), "bad_name"),
    Case("unknown-name", j({"bn": BN, "n": "steps", "v": 1234}), "unknown_name", secrets=("1234",)),
    Case("unknown-name-bare", j({"n": "respiration", "u": "1/s", "v": 0.25}), "unknown_name"),
    Case("unknown-name-ecg", j({"bn": BN, "n": "ecg:gain", "v": 1}), "unknown_name"),
    Case("unknown-lead", j({"bn": BN, "n": "ecg:lead", "vs": "MDC_ECG_ELEC_POTL_V1"}), "unknown_name"),
    Case("bad-unit-missing", j({"bn": BN, "n": "heart-rate", "v": 71.25}), "bad_unit", secrets=("71.25",)),
    Case("bad-unit-percent", j({"bn": BN, "n": "spo2", "u": "%", "v": 96.5}), "bad_unit", secrets=("96.5",)),
    Case("bad-unit-mmhg", j({"bn": BN, "n": "bp-systolic", "u": "mmHg", "v": 121.5}), "bad_unit", secrets=("121.5",)),
    Case("bad-unit-header", j({"bn": BN, "bu": "1/s", "n": "boot", "vs": "b"}, {"n": "seq", "v": 1}, HR), "bad_unit"),
    Case("bad-unit-fs", j({"bn": BN, "n": "ecg:fs", "u": "1/s", "v": 130}), "bad_unit"),
    Case("bad-unit-scale", j({"bn": BN, "n": "ecg:scale", "u": "uV", "v": 1}), "bad_unit"),
    Case(
        "bad-unit-samples",
        c({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}, {"n": "ecg:i16le", "u": "uV", "vd": b"\x01\x00"}),
        "bad_unit",
    ),
    Case("wrong-type-reading-vs", j({"bn": BN, "n": "heart-rate", "u": "1/s", "vs": "72"}), "wrong_type"),
    Case("wrong-type-reading-sum", j({"bn": BN, "n": "heart-rate", "u": "1/s", "s": 1}), "wrong_type"),
    Case("wrong-type-reading-v-and-sum", j({"bn": BN, "n": "heart-rate", "u": "1/s", "v": 1, "s": 1}), "wrong_type"),
    Case("wrong-type-seq-float", j({"bn": BN, "n": "boot", "vs": "b"}, {"n": "seq", "v": 1.5}, HR), "wrong_type"),
    Case("wrong-type-seq-negative", j({"bn": BN, "n": "boot", "vs": "b"}, {"n": "seq", "v": -1}, HR), "wrong_type"),
    Case("wrong-type-seq-huge", c({"bn": BN, "n": "boot", "vs": "b"}, {"n": "seq", "v": 2**53 + 2}, HR), "wrong_type"),
    Case("wrong-type-boot-v", j({"bn": BN, "n": "boot", "v": 1}, {"n": "seq", "v": 1}, HR), "wrong_type"),
    Case("wrong-type-samples-vs", j({"bn": BN, "n": "ecg:i16le", "vs": "AAAA"}), "wrong_type"),
    Case("wrong-type-lead-vb", j({"bn": BN, "n": "ecg:lead", "vb": True}), "wrong_type"),
    Case(
        "out-of-range-hr",
        j({"bn": BN, "n": "heart-rate", "u": "1/s", "v": -1.125}),
        "out_of_range",
        secrets=("-1.125", "-67.5"),
    ),
    Case(
        "out-of-range-spo2",
        j({"bn": BN, "n": "spo2", "u": "/", "v": 1.0625}),
        "out_of_range",
        secrets=("1.0625", "106.25"),
    ),
    Case("out-of-range-temp", j({"bn": BN, "n": "temperature", "u": "K", "v": 0}), "out_of_range"),
    Case("out-of-range-fs-zero", j({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 0}), "out_of_range"),
    Case("out-of-range-fs-high", j({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 10_001}), "out_of_range"),
    Case("out-of-range-fs-tiny", j({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 1e-300}), "out_of_range"),
    Case("out-of-range-scale-fraction", j({"bn": BN, "n": "ecg:scale", "u": "V", "v": 1.5e-6}), "out_of_range"),
    Case("out-of-range-scale-sub-uv", j({"bn": BN, "n": "ecg:scale", "u": "V", "v": 1e-7}), "out_of_range"),
    Case("out-of-range-scale-negative", j({"bn": BN, "n": "ecg:scale", "u": "V", "v": -1e-6}), "out_of_range"),
    Case(
        "out-of-range-int32",
        c(
            {"bn": BN, "bt": T0, "n": "ecg:fs", "u": "Hz", "v": 130},
            {"n": "ecg:scale", "u": "V", "v": 300.0},
            {"n": "ecg:i24le", "vd": (8000).to_bytes(3, "little")},
        ),
        "out_of_range",
        secrets=("8000", "2400000000"),
    ),
    Case("bad-time-before-2000", j({"bn": BN, "bt": 500_000_000, **HR}), "bad_time", secrets=HR_SECRET),
    Case("bad-time-2-28", j({"bn": BN, "bt": 2**28, **HR}), "bad_time"),
    Case("bad-time-ahead", j({"bn": BN, "bt": T0 + 3_600, **HR}), "bad_time"),
    Case("bad-time-relative-ahead", j({"bn": BN, "t": 301, **HR}), "bad_time"),
    Case("bad-time-relative-past", j({"bn": BN, "t": -1e12, **HR}), "bad_time"),
    Case("bad-time-2262", j({"bn": BN, "bt": 1e10, **HR}), "bad_time", kw=(("gateway_synced", False),)),
    Case("bad-time-huge", j({"bn": BN, "bt": 1e300, **HR}), "bad_time", kw=(("gateway_synced", False),)),
    Case(
        "bad-time-ecg-end",
        c({"bn": BN, "bt": 9_223_372_036, "n": "ecg:fs", "u": "Hz", "v": 1}, {"n": "ecg:i16le", "vd": bytes(4)}),
        "bad_time",
        kw=(("gateway_synced", False),),
    ),
    Case("duplicate-point", j(*header(), HR, {**HR, "v": 1.3}), "duplicate_point", secrets=HR_SECRET),
    Case(
        "duplicate-point-glucose-units",
        j({"bn": BN, "bt": T0, "n": "glucose", "u": "kg/m3", "v": 1}, {"n": "glucose", "u": "mmol/l", "v": 5.5}),
        "duplicate_point",
    ),
    Case(
        "too-large", c({"bn": BN, "n": "ecg:fs", "u": "Hz", "v": 130}, {"n": "ecg:i16le", "vd": BIG_I16}), "too_large"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_quarantine_reason(case: Case) -> None:
    kw = dict(case.kw)
    max_records = kw.pop("max_records", 10_000)
    with pytest.raises(PayloadError) as e:
        decode_frame(case.payload, case.content_type, DEV, NOW_NS, max_records=max_records, **kw)
    assert e.value.reason == case.reason, str(e.value)
    message = str(e.value)
    assert message and len(message) < 400
    for secret in case.secrets:
        assert secret not in message, f"measured value {secret} leaked into {message!r}"


def test_every_reason_has_a_case() -> None:
    assert {c.reason for c in CASES} == REASONS
    assert DECODE_REASONS <= REASONS


def test_codec_reasons_come_from_decode_pack() -> None:
    for case in CASES:
        if case.reason in DECODE_REASONS - {"malformed", "empty", "wrong_type", "bad_name"}:
            with pytest.raises(PayloadError) as e:
                decode_pack(case.payload, case.content_type, max_records=dict(case.kw).get("max_records", 10_000))
            assert e.value.reason == case.reason


def test_helpful_messages() -> None:
    def message(payload: bytes) -> str:
        with pytest.raises(PayloadError) as e:
            decode_frame(payload, None, DEV, NOW_NS)
        return str(e.value)

    percent = message(j({"bn": BN, "n": "spo2", "u": "%", "v": 0.97}))
    assert "'/'" in percent and "ratio" in percent
    assert "'Pa'" in message(j({"bn": BN, "n": "bp-systolic", "u": "mmHg", "v": 120}))
    assert "record 1" in message(j({"bn": BN, "bt": T0, **HR}, {"n": "steps", "v": 1}))
    assert "'steps'" in message(j({"bn": BN, "bt": T0, **HR}, {"n": "steps", "v": 1}))
    assert BN in message(j({"bn": "urn:dev:mac:0024befffe804ff1:", **HR}))
    assert "does not verify signatures" in message(bytes.fromhex("d28443a10127a0f640"))
    assert "'foo_'" in message(j({"n": "x", "v": 1, "foo_": 1}))
    long_name = message(j({"n": "x" * 5000, "v": 1}))
    assert len(long_name) < 400


def test_every_reason_is_documented() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    for reason in REASONS:
        assert re.search(rf"^\| `{reason}` \|", doc, re.M), f"docs/mqtt.md does not list reason {reason}"


def test_every_local_name_is_documented() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    for name in HANDLERS:
        assert re.search(rf"^\| `{re.escape(name)}` \|", doc, re.M), f"docs/mqtt.md does not list {name}"
    for metric in {getattr(h, "metric", None) for h in HANDLERS.values()} - {None}:
        m = METRICS[str(metric)]
        assert f"`{m.name}`" in doc and str(m.mdc) in doc and (m.loinc is None or m.loinc in doc)


def test_documented_example_decodes_and_its_cbor_size_is_true() -> None:
    doc = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    section = doc[doc.index("### Complete example") :]
    example = re.search(r"```json\n(.*?)```", section, re.S)
    assert example
    records = json.loads(example.group(1))
    payload = example.group(1).encode()
    f = decode_frame(payload, SENML_JSON, "p01-ecg", 1_767_225_601 * 10**9)
    assert f.boot and f.seq is not None and f.readings and f.waveforms
    cbor = [dict(r) for r in records]
    for r in cbor:
        if "vd" in r:
            r["vd"] = base64.urlsafe_b64decode(r["vd"] + "=" * (-len(r["vd"]) % 4))
    encoded = to_cbor(cbor)
    compact_json = json.dumps(records, separators=(",", ":")).encode()
    assert decode_frame(encoded, SENML_CBOR, "p01-ecg", 1_767_225_601 * 10**9) == f
    assert f"{len(encoded)} bytes as CBOR" in section, len(encoded)
    assert f"{len(compact_json)} bytes as compact JSON" in section, len(compact_json)
