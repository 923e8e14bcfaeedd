"""Property-based tests of the SenML decoder and profile: JSON ≡ CBOR, sample round trips, hostile bytes,
the relative/absolute time rule."""

from __future__ import annotations

import base64
import json
import math
from fractions import Fraction
from typing import Any

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from drivers.senml import SENML_CBOR, SENML_JSON, SenmlRecord, decode_frame, decode_pack
from drivers.senml.profile import decode_samples
from gateway.errors import PayloadError
from gateway.model import TimeQuality

CBOR_KEYS = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "n": 0, "u": 1, "v": 2, "vs": 3}
CBOR_KEYS |= {"vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}
DEV = "p01-prop"
BN = f"urn:dev:ds4h:{DEV}:"
NOW_NS = 1_767_225_600 * 10**9
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def to_json(records: list[dict[Any, Any]]) -> bytes:
    out = [
        {k: (base64.urlsafe_b64encode(v).rstrip(b"=").decode() if k == "vd" else v) for k, v in r.items()}
        for r in records
    ]
    return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()


def to_cbor(records: list[dict[Any, Any]]) -> bytes:
    return cbor2.dumps([{CBOR_KEYS.get(k, k): v for k, v in r.items()} for r in records])


# --- random valid packs ------------------------------------------------------------------------------
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9:./_-]{0,12}", fullmatch=True)
numbers = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
)
texts = st.text(st.characters(codec="utf-8"), max_size=10)
units = st.sampled_from(["1/s", "/", "Cel", "Pa", "kg/m3", "V", "Hz", ""])
value_fields = st.one_of(
    st.tuples(st.just("v"), numbers),
    st.tuples(st.just("vs"), texts),
    st.tuples(st.just("vb"), st.booleans()),
    st.tuples(st.just("vd"), st.binary(max_size=12)),
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for base, strategy in (("bn", names), ("bt", numbers), ("bu", units), ("bv", numbers), ("bs", numbers)):
        if draw(st.integers(0, 3)) == 0:
            r[base] = draw(strategy)
    if draw(st.booleans()):
        r["bver"] = 10
    r["n"] = draw(names)
    if draw(st.booleans()):
        r["u"] = draw(units)
    kind = draw(st.integers(0, 4))
    if kind < 4:
        label, value = draw(value_fields)
        r[label] = value
    if kind == 4 or draw(st.integers(0, 3)) == 0:
        r["s"] = draw(numbers)
    if draw(st.booleans()):
        r["t"] = draw(numbers)
    if draw(st.integers(0, 3)) == 0:
        r["ut"] = draw(st.floats(0, 1e6, allow_nan=False))
    if draw(st.integers(0, 5)) == 0:
        # an unknown label: ignored. Integers within CBOR's 64-bit major types: a larger one is a CBOR bignum
        # (tag 2/3), and tags are refused inside a pack, while JSON would take it
        r["extension"] = draw(st.one_of(st.integers(-(2**64), 2**64 - 1), texts))
    return r


def reference(pack: list[dict[str, Any]]) -> list[SenmlRecord]:
    """RFC 8428 §4.6 resolution, written as plainly as possible."""
    base: dict[str, Any] = {"bn": "", "bt": None, "bu": None, "bv": None, "bs": None}
    out = []
    for r in pack:
        for k in base:
            if k in r:
                base[k] = r[k]

        def plus(b: Any, x: Any) -> float:
            return float(x) if b is None else float(b) + float(x)

        out.append(
            SenmlRecord(
                name=base["bn"] + r.get("n", ""),
                unit=r.get("u", base["bu"]),
                value=plus(base["bv"], r["v"]) if "v" in r else None,
                string=r.get("vs"),
                boolean=r.get("vb"),
                data=r.get("vd"),
                sum=plus(base["bs"], r["s"]) if "s" in r else None,
                time=plus(base["bt"], r.get("t", 0)) if base["bt"] is not None or "t" in r else 0.0,
                update_time=float(r["ut"]) if "ut" in r else None,
            )
        )
    return out


@SETTINGS
@given(st.lists(records(), min_size=1, max_size=8))
def test_json_and_cbor_of_one_pack_decode_to_the_same_records(pack: list[dict[str, Any]]) -> None:
    from_json = decode_pack(to_json(pack), SENML_JSON)
    from_cbor = decode_pack(to_cbor(pack), SENML_CBOR)
    assert from_json == from_cbor == reference(pack)
    assert decode_pack(to_json(pack)) == decode_pack(to_cbor(pack)) == from_json  # sniffed


# --- samples --------------------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(-(2**15), 2**15 - 1), min_size=1, max_size=300), st.booleans())
def test_int16_samples_round_trip(values: list[int], cbor: bool) -> None:
    data = np.array(values, dtype="<i2").tobytes()
    assert decode_samples(data, 2).tolist() == values
    records: list[dict[str, Any]] = [
        {"bn": BN, "bt": 1_767_225_600, "n": "ecg:fs", "u": "Hz", "v": 250},
        {"n": "ecg:i16le", "vd": data},
    ]
    payload = to_cbor(records) if cbor else to_json(records)
    (w,) = decode_frame(payload, None, DEV, NOW_NS).waveforms
    assert w.samples.dtype == np.int32 and w.samples.tolist() == values


@SETTINGS
@given(st.lists(st.integers(-(2**23), 2**23 - 1), min_size=1, max_size=300), st.integers(1, 255), st.booleans())
def test_int24_samples_round_trip_with_scale(values: list[int], k: int, cbor: bool) -> None:
    data = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    assert decode_samples(data, 3).tolist() == values
    records: list[dict[str, Any]] = [
        {"bn": BN, "bt": 1_767_225_600, "n": "ecg:fs", "u": "Hz", "v": 500},
        {"n": "ecg:scale", "u": "V", "v": k * 1e-6},
        {"n": "ecg:i24le", "vd": data},
    ]
    payload = to_cbor(records) if cbor else to_json(records)
    (w,) = decode_frame(payload, None, DEV, NOW_NS).waveforms
    assert w.samples.dtype == np.int32 and w.samples.tolist() == [v * k for v in values]


# --- hostile input --------------------------------------------------------------------------------------
CONTENT_TYPES = st.sampled_from([None, "", SENML_JSON, SENML_CBOR, "application/json", "application/cbor", "x/y"])


def only_payload_errors(payload: bytes, content_type: str | None) -> None:
    for call in (
        lambda: decode_pack(payload, content_type),
        lambda: decode_frame(payload, content_type, DEV, NOW_NS),
        lambda: decode_frame(payload, content_type, DEV, NOW_NS, gateway_synced=False, max_records=3),
    ):
        try:
            call()
        except PayloadError as e:
            assert e.reason and str(e)


@SETTINGS
@given(st.binary(max_size=300), CONTENT_TYPES)
@example(b"\xd2", None)
@example(b"\xd9\xd9\xf7", None)
@example(b"\x9f\xa1\x00\x61\x78\xff", None)  # indefinite-length array
@example(b"[" * 5000, None)
@example(b"\x81" * 5000, None)
def test_arbitrary_bytes_raise_only_payload_errors(payload: bytes, content_type: str | None) -> None:
    only_payload_errors(payload, content_type)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts | st.integers(-8, 10), inner, max_size=5),
    max_leaves=20,
)
labels = st.sampled_from([*CBOR_KEYS, "foo_", "x"])
label_values = st.one_of(
    numbers,
    st.floats(),
    texts,
    st.sampled_from(["boot", "seq", "unacked", "heart-rate", "spo2", "ecg:fs", "ecg:i16le", "ecg:i24le", BN, "%", "/"]),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
)


@SETTINGS
@given(st.lists(st.dictionaries(labels, label_values, max_size=6), max_size=6), st.booleans())
def test_random_packs_raise_only_payload_errors(pack: list[dict[str, Any]], cbor: bool) -> None:
    if cbor:
        payload = to_cbor(pack)
    else:
        try:
            payload = json.dumps(
                [{k: (base64.b64encode(v).decode() if isinstance(v, bytes) else v) for k, v in r.items()} for r in pack]
            ).encode()
        except ValueError:
            return
    only_payload_errors(payload, None)


@SETTINGS
@given(json_values, st.booleans())
def test_random_documents_raise_only_payload_errors(doc: Any, cbor: bool) -> None:
    if cbor:
        payload = cbor2.dumps(doc)
    else:
        try:
            payload = json.dumps(doc, default=lambda b: b.hex()).encode()
        except (TypeError, ValueError):
            return
    only_payload_errors(payload, None)


VALID_FRAME: list[dict[str, Any]] = [
    {"bn": BN, "bt": 1_767_225_600, "n": "boot", "vs": "b1"},
    {"n": "seq", "v": 3},
    {"n": "unacked", "v": 1},
    {"n": "heart-rate", "u": "1/s", "v": 1.2},
    {"n": "ecg:fs", "u": "Hz", "v": 130},
    {"n": "ecg:i16le", "vd": b"\x01\x00\x02\x00"},
]


@SETTINGS
@given(st.data(), st.booleans())
def test_mutated_valid_frames_raise_only_payload_errors(data: st.DataObject, cbor: bool) -> None:
    payload = bytearray(to_cbor(VALID_FRAME) if cbor else to_json(VALID_FRAME))
    decode_frame(bytes(payload), None, DEV, NOW_NS)  # valid as it is
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    only_payload_errors(bytes(payload[:cut] if data.draw(st.booleans()) else payload), None)


# --- the time rule --------------------------------------------------------------------------------------
@SETTINGS
@given(st.floats(-1e8, 300, allow_nan=False), st.booleans())
def test_relative_times_count_from_the_receive_time(t: float, synced: bool) -> None:
    payload = to_cbor([{"bn": BN, "n": "spo2", "u": "/", "v": 0.9, "t": t}])
    (r,) = decode_frame(payload, SENML_CBOR, DEV, NOW_NS, gateway_synced=synced).readings
    assert abs(r.device_time_ns - (NOW_NS + Fraction(t) * 10**9)) <= 1
    assert r.time_quality == (TimeQuality.GOOD if synced else TimeQuality.GATEWAY_UNSYNCED)


@SETTINGS
@given(st.floats(946_684_800, 1_767_225_600 + 300, allow_nan=False), st.booleans())
def test_absolute_times_are_used_as_sent(t: float, synced: bool) -> None:
    payload = to_json([{"bn": BN, "bt": t, "n": "spo2", "u": "/", "v": 0.9}])
    (r,) = decode_frame(payload, SENML_JSON, DEV, NOW_NS, gateway_synced=synced).readings
    assert abs(r.device_time_ns - Fraction(t) * 10**9) <= 501  # rounded to the µs
    assert r.device_time_ns % 1_000 == 0
    expected = TimeQuality.DEVICE_UNCORRECTED | (0 if synced else TimeQuality.GATEWAY_UNSYNCED)
    assert r.time_quality == expected


@SETTINGS
@given(st.floats(-1e12, 1e12, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False))
def test_bt_plus_t_decides_absolute_or_relative(bt: float, t: float) -> None:
    assume(math.isfinite(bt + t))
    payload = to_json([{"bn": BN, "bt": bt, "n": "spo2", "u": "/", "v": 0.9, "t": t}])
    try:
        (r,) = decode_frame(payload, SENML_JSON, DEV, NOW_NS).readings
    except PayloadError as e:
        assert e.reason == "bad_time"
        return
    absolute = bt + t >= 2**28
    assert bool(r.time_quality & TimeQuality.DEVICE_UNCORRECTED) == absolute
    assert 946_684_800 * 10**9 <= r.device_time_ns <= NOW_NS + 300 * 10**9


@pytest.mark.parametrize("t", [2**28 - 1e-6, 2**28, 2**28 + 1e-6])
def test_the_2_28_boundary(t: float) -> None:
    records = decode_pack(to_json([{"n": "x", "v": 1, "t": t}]))
    assert records[0].time == t
    with pytest.raises(PayloadError) as e:  # 1978 is before 2000; 8.5 years ahead is too far
        decode_frame(to_json([{"n": "spo2", "u": "/", "v": 1, "t": t}]), None, DEV, NOW_NS)
    assert e.value.reason == "bad_time"
