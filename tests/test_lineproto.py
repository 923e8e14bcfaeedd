"""Line-protocol encoding of batches: exact lines, a strict round-trip parser, determinism."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.errors import PayloadError
from gateway.model import AbsentReason, Batch, Reading, SourceKey, TimeQuality, Waveform
from gateway.sinks import lineproto
from gateway.sinks.lineproto import count_points, encode_batch, encode_batches

T0 = 1_700_000_000_000_000_000
INT64_MAX = 2**63 - 1

# --------------------------------------------------------------------------------------------------
# a small, strict line-protocol parser (only what the schema uses)

_INT_RE = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[+-][0-9]+)?|-?[0-9]\.[0-9]+e[+-][0-9]+")

Point = tuple[str, dict[str, str], dict[str, Any], int]


def _read_escaped(line: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    out: list[str] = []
    while i < len(line) and line[i] not in stops:
        c = line[i]
        if c == "\\":
            assert i + 1 < len(line) and line[i + 1] in escapable, f"bad escape at {i} in {line!r}"
            out.append(line[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def parse_line(line: str) -> Point:
    assert "\n" not in line
    measurement, i = _read_escaped(line, 0, ", ", ", ")
    assert measurement, line
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _read_escaped(line, i + 1, "=", ",= ")
        assert line[i] == "=", line
        value, i = _read_escaped(line, i + 1, ", ", ",= ")
        assert key and value and key not in tags, line
        tags[key] = value
    assert list(tags) == sorted(tags), f"tags not sorted: {line!r}"
    assert line[i] == " ", line
    i += 1
    fields: dict[str, Any] = {}
    while True:
        key, i = _read_escaped(line, i, "=", ",= ")
        assert line[i] == "=" and key and key not in fields, line
        i += 1
        value: Any
        if line[i] == '"':
            i += 1
            chars: list[str] = []
            while line[i] != '"':
                if line[i] == "\\":
                    assert line[i + 1] in '"\\', line
                    chars.append(line[i + 1])
                    i += 2
                else:
                    chars.append(line[i])
                    i += 1
            i += 1
            value = "".join(chars)
        else:
            j = i
            while line[j] not in ", ":
                j += 1
            raw, i = line[i:j], j
            if raw in ("true", "false"):
                value = raw == "true"
            elif raw.endswith("i"):
                assert _INT_RE.fullmatch(raw[:-1]), f"bad integer {raw!r}"
                value = int(raw[:-1])
            else:
                assert _FLOAT_RE.fullmatch(raw), f"bad float {raw!r}"
                value = float(raw)
        fields[key] = value
        if line[i] == ",":
            i += 1
            continue
        assert line[i] == " ", line
        break
    ts = line[i + 1 :]
    assert _INT_RE.fullmatch(ts), f"bad timestamp {ts!r}"
    return measurement, tags, fields, int(ts)


def parse_chunk(chunk: bytes) -> list[Point]:
    if not chunk:
        return []
    assert not chunk.endswith(b"\n")
    return [parse_line(line) for line in chunk.decode().split("\n")]


def expected_points(batch: Batch) -> list[Point]:
    """The schema, written independently of the encoder."""
    tags_of = {"device": batch.key.device_id}
    points: list[Point] = []
    for r in batch.readings:
        fields: dict[str, Any] = {}
        if r.value is not None:
            fields["value"] = float(r.value)
        if r.absent is not None:
            fields["absent"] = r.absent.value
        if r.precision is not None:
            fields["precision"] = r.precision
        if r.seq is not None:
            fields["seq"] = r.seq
        if r.status:
            fields["status"] = r.status
        if r.alert:
            fields["alert"] = True
        if r.time_quality:
            fields["tq"] = int(r.time_quality)
        points.append((r.metric, {**tags_of, "unit": r.unit}, fields, r.device_time_ns))
    for w in batch.waveforms:
        extra = {"tq": int(w.time_quality)} if w.time_quality else {}
        for k, s in enumerate(w.samples.tolist()):
            points.append((w.metric, {**tags_of, "unit": w.unit}, {"value": s, **extra}, w.start_ns + k * w.period_ns))
    return points


def batch_of(*readings: Reading, waveforms: tuple[Waveform, ...] = (), device: str = "hr-strap-01") -> Batch:
    return Batch(SourceKey(device, ("boot1", 7)), received_ns=T0, readings=readings, waveforms=waveforms)


# --------------------------------------------------------------------------------------------------
# exact lines


def test_reading_lines_exact() -> None:
    batch = batch_of(
        Reading("heart_rate", 72.0, "/min", T0, precision=0, seq=5),
        Reading("heart_rate", 0.1, "/min", T0 + 1),
        Reading(
            "glucose_isf",
            None,
            "mg/dL",
            T0 + 2,
            absent=AbsentReason.NRES,
            status=4,
            alert=True,
            time_quality=TimeQuality.DEVICE_UNCORRECTED | TimeQuality.GATEWAY_UNSYNCED,
        ),
        Reading("bp_systolic", 120.5, "mm[Hg]", T0 + 3, precision=1, time_quality=TimeQuality.RECEIVE_TIME),
        Reading("spo2", 1e-7, "%", -5, alert=False, status=0),
    )
    assert encode_batch(batch).decode().split("\n") == [
        f"heart_rate,device=hr-strap-01,unit=/min value=72.0,precision=0i,seq=5i {T0}",
        f"heart_rate,device=hr-strap-01,unit=/min value=0.1 {T0 + 1}",
        f'glucose_isf,device=hr-strap-01,unit=mg/dL absent="nres",status=4i,alert=true,tq=3i {T0 + 2}',
        f"bp_systolic,device=hr-strap-01,unit=mm[Hg] value=120.5,precision=1i,tq=4i {T0 + 3}",
        "spo2,device=hr-strap-01,unit=% value=1e-07 -5",
    ]


def test_escaping() -> None:
    batch = batch_of(
        Reading("odd metric,name=x", 1.0, "a b,c=d", T0),
        Reading("m", None, "u", T0, absent=AbsentReason.POS_INF),
    )
    lines = encode_batch(batch).decode().split("\n")
    assert lines[0] == f"odd\\ metric\\,name=x,device=hr-strap-01,unit=a\\ b\\,c\\=d value=1.0 {T0}"
    assert lines[1] == f'm,device=hr-strap-01,unit=u absent="+inf" {T0}'
    assert parse_line(lines[0])[:2] == ("odd metric,name=x", {"device": "hr-strap-01", "unit": "a b,c=d"})


def test_string_field_escaping() -> None:
    # No AbsentReason holds quotes or backslashes today; check the escaping on a stand-in value.
    r = Reading("m", None, "u", T0, absent='a"b\\c')
    line = lineproto._reading_line("m,device=d,unit=u", r)
    assert line == f'm,device=d,unit=u absent="a\\"b\\\\c" {T0}'
    assert parse_line(line)[2] == {"absent": 'a"b\\c'}


def test_waveform_lines_exact() -> None:
    w = Waveform("ecg", "uV", T0, 4_000_000, np.array([0, -153, 2_147_483_647, -2_147_483_648, 7], np.int32))
    w_tq = Waveform("ecg", "uV", T0, 4_000_000, np.array([1], np.int32), TimeQuality.RECEIVE_TIME)
    batch = batch_of(waveforms=(w, w_tq), device="ecg-patch-01")
    assert encode_batch(batch).decode().split("\n") == [
        f"ecg,device=ecg-patch-01,unit=uV value=0i {T0}",
        f"ecg,device=ecg-patch-01,unit=uV value=-153i {T0 + 4_000_000}",
        f"ecg,device=ecg-patch-01,unit=uV value=2147483647i {T0 + 8_000_000}",
        f"ecg,device=ecg-patch-01,unit=uV value=-2147483648i {T0 + 12_000_000}",
        f"ecg,device=ecg-patch-01,unit=uV value=7i {T0 + 16_000_000}",
        f"ecg,device=ecg-patch-01,unit=uV value=1i,tq=4i {T0}",
    ]


def test_readings_then_waveforms_and_chunks() -> None:
    w = Waveform("ecg", "uV", T0, 4_000_000, np.array([5, 6], np.int32))
    empty = batch_of()
    b1 = batch_of(Reading("heart_rate", 60.0, "/min", T0), waveforms=(w,))
    chunks = encode_batches([empty, b1, empty])
    assert chunks[0] == b"" and chunks[2] == b""
    assert (
        chunks[1]
        == (
            f"heart_rate,device=hr-strap-01,unit=/min value=60.0 {T0}\n"
            f"ecg,device=hr-strap-01,unit=uV value=5i {T0}\n"
            f"ecg,device=hr-strap-01,unit=uV value=6i {T0 + 4_000_000}"
        ).encode()
    )
    assert [count_points(c) for c in chunks] == [0, 3, 0]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_is_a_payload_error(value: float) -> None:
    with pytest.raises(PayloadError, match="not finite"):
        encode_batches([batch_of(Reading("heart_rate", value, "/min", T0))])


@pytest.mark.parametrize("name", ["a\\b", "a\nb", "tab\there", ""])
def test_unwritable_names_are_payload_errors(name: str) -> None:
    with pytest.raises(PayloadError):
        encode_batches([batch_of(Reading("heart_rate", 1.0, name, T0))])


def test_numpy_and_join_formatters_agree_on_long_waveforms() -> None:
    rng = np.random.default_rng(7)
    for n, tq in ((1024, 0), (5000, 1), (200_000, 6)):
        samples = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)
        samples[: n // 2] //= 1000  # mixed widths
        w = Waveform("ecg", "uV", T0 + 123, 4_000_000, samples, TimeQuality(tq))
        prefix = "ecg,device=d,unit=uV"
        suffix = f"i,tq={tq}i" if tq else "i"
        assert lineproto._waveform_lines(prefix, w) == lineproto._waveform_join(prefix, suffix, w)
        assert lineproto._waveform_numpy(prefix, suffix, w) is not None or n > lineproto._BLOCK_SAMPLES


def test_waveform_times_far_from_now_fall_back_exactly() -> None:
    samples = np.arange(-600, 600, dtype=np.int32)
    for start, period in ((0, 1_000_000), (999_000_000, 1_000_000), (2**62, 2**40), (5 * 10**18, 10**15)):
        w = Waveform("ecg", "uV", start, period, samples)
        points = parse_chunk(encode_batch(batch_of(waveforms=(w,))))
        assert [p[3] for p in points] == [start + k * period for k in range(samples.size)]
        assert [p[2]["value"] for p in points] == samples.tolist()


# --------------------------------------------------------------------------------------------------
# properties

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), min_size=1, max_size=12
)
device_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
int64s = st.integers(-(2**63), INT64_MAX)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    absent = draw(st.none() | st.sampled_from(list(AbsentReason)))
    value = None if absent is not None else draw(st.floats(allow_nan=False, allow_infinity=False))
    return Reading(
        metric=draw(names),
        value=value,
        unit=draw(names),
        device_time_ns=draw(int64s),
        precision=draw(st.none() | st.integers(-128, 127)),
        absent=absent,
        seq=draw(st.none() | st.integers(0, 2**63 - 1)),
        time_quality=TimeQuality(draw(st.integers(0, 7))),
        status=draw(st.integers(0, 2**32)),
        alert=draw(st.booleans()),
    )


@st.composite
def waveforms(draw: st.DrawFn) -> Waveform:
    n = draw(st.sampled_from([0, 1, 3, 50, 1100, 3000]))
    samples = draw(hnp.arrays(np.int32, n, elements=st.integers(-(2**31), 2**31 - 1)))
    start = draw(st.integers(0, 2**62) | st.just(T0))
    period = draw(st.integers(1, 10**10))
    assume(start + max(n - 1, 0) * period <= INT64_MAX)
    return Waveform(draw(names), draw(names), start, period, samples, TimeQuality(draw(st.integers(0, 7))))


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    return Batch(
        SourceKey(draw(device_ids), (draw(st.integers(0, 10**6)),)),
        received_ns=T0,
        readings=tuple(draw(st.lists(readings(), max_size=8))),
        waveforms=tuple(draw(st.lists(waveforms(), max_size=2))),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(batches(), max_size=4))
def test_round_trip_through_a_strict_parser(bs: list[Batch]) -> None:
    chunks = encode_batches(bs)
    assert len(chunks) == len(bs)
    for batch, chunk in zip(bs, chunks, strict=True):
        points = parse_chunk(chunk)
        assert points == expected_points(batch)
        assert count_points(chunk) == batch.n_points


@settings(max_examples=50, deadline=None)
@given(st.lists(batches(), max_size=3))
def test_deterministic(bs: list[Batch]) -> None:
    first = encode_batches(bs)
    # a replayed batch is a new object with equal content: rebuild everything, including the arrays
    replayed = [
        Batch(
            b.key,
            b.received_ns,
            tuple(Reading(*tuple(r)) for r in b.readings),
            tuple(
                Waveform(w.metric, w.unit, w.start_ns, w.period_ns, w.samples.copy(), w.time_quality)
                for w in b.waveforms
            ),
        )
        for b in bs
    ]
    assert encode_batches(replayed) == first
    assert encode_batches(bs) == first
