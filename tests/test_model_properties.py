"""Property-based tests: device ids, source keys, the batch codec and the ingest parser."""

from __future__ import annotations

import contextlib
import time

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batchcodec import decode_batch, encode_batch
from gateway.clock import ClockMonitor, SkewTracker
from gateway.errors import DeviceIdError, PayloadError
from gateway.ingest import IngestSource, parse_body
from gateway.model import (
    DEVICE_ID_RE,
    AbsentReason,
    Batch,
    Priority,
    Reading,
    SourceKey,
    TimeQuality,
    Waveform,
    check_device_id,
)
from gateway.priority import PriorityRules
from gateway.vocabulary import METRICS

device_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,63}", fullmatch=True)
key_parts = st.one_of(st.integers(0, 2**63 - 1), st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True))
scalar_metrics = [m for m in METRICS.values() if not m.waveform]
wave_metrics = [m for m in METRICS.values() if m.waveform]


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    m = draw(st.sampled_from(scalar_metrics))
    absent = draw(st.none() | st.sampled_from(list(AbsentReason)))
    value = None if absent else draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
    return Reading(
        metric=m.name,
        value=value,
        unit=draw(st.sampled_from(m.units)),
        device_time_ns=draw(st.integers(0, 2**62)),
        precision=draw(st.none() | st.integers(-8, 8)),
        absent=absent,
        seq=draw(st.none() | st.integers(0, 2**32)),
        time_quality=TimeQuality(draw(st.integers(0, 7))),
        status=draw(st.integers(0, 2**16)),
        alert=draw(st.booleans()),
    )


@st.composite
def waveforms(draw: st.DrawFn) -> Waveform:
    m = draw(st.sampled_from(wave_metrics))
    n = draw(st.integers(0, 300))
    samples = np.array(draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n)), dtype=np.int32)
    return Waveform(m.name, m.unit, draw(st.integers(0, 2**62)), draw(st.integers(1, 10**9)), samples)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    key = SourceKey(draw(device_ids), tuple(draw(st.lists(key_parts, min_size=1, max_size=4))))
    return Batch(
        key,
        draw(st.integers(0, 2**62)),
        tuple(draw(st.lists(readings(), max_size=5))),
        tuple(draw(st.lists(waveforms(), max_size=2))),
        draw(st.sampled_from(list(Priority))),
        draw(st.sampled_from(["", "cgm", "ecg"])),
    )


@given(batches())
@settings(max_examples=200, deadline=None)
def test_batch_codec_round_trip_is_exact_and_deterministic(b: Batch) -> None:
    data = encode_batch(b)
    back = decode_batch(data)
    assert back == b
    assert encode_batch(back) == data


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_decode_batch_rejects_garbage_cleanly(data: bytes) -> None:
    with contextlib.suppress(PayloadError):
        decode_batch(data)


@given(st.text(max_size=70))
def test_device_id_rule(text: str) -> None:
    if DEVICE_ID_RE.fullmatch(text):
        assert check_device_id(text) == text
    else:
        with pytest.raises(DeviceIdError):
            check_device_id(text)


@given(st.binary(max_size=400), st.sampled_from(["application/cbor", "application/json", ""]))
@settings(max_examples=300, deadline=None)
def test_ingest_parser_never_crashes(data: bytes, ctype: str) -> None:
    with contextlib.suppress(PayloadError):
        parse_body(data, ctype)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_ingest_batch_validation_never_crashes(obj: object) -> None:
    """Any CBOR-shaped value in place of a batch map is refused with a PayloadError, nothing else."""

    class _NoRegistry:
        def cached(self, device_id: str) -> None:
            return None

    src = IngestSource.__new__(IngestSource)
    src._registry = _NoRegistry()  # type: ignore[assignment]
    src._rules = PriorityRules([])
    for m in (obj, {"device": "hr-1", "key": ["b", 1], "readings": obj}, {"device": "hr-1", "key": obj}):
        with contextlib.suppress(PayloadError):
            src.to_batch(m, time.time_ns(), True)
    assert cbor2.dumps(obj) is not None


def test_skew_tracker_hysteresis() -> None:
    saved: dict[str, int] = {}
    t = SkewTracker(2_000_000_000, {}, saved.__setitem__)
    assert t.offset("d", 10_000_000_000, 4_000_000_000) == 6_000_000_000
    # latency jitter within the tolerance does not move the estimate
    assert t.offset("d", 20_000_000_050, 14_000_000_000) == 6_000_000_000
    # a clock that was set (jump > tolerance) is re-estimated and persisted
    assert t.offset("d", 30_000_000_000, 10_000_000_000) == 20_000_000_000
    assert saved == {"d": 20_000_000_000}
    assert SkewTracker(2_000_000_000, saved, saved.__setitem__).offset("d", 40_000_000_000, 20_000_000_100) == (
        20_000_000_000
    )


def test_clock_monitor_modes() -> None:
    assert ClockMonitor("synced").synced() is True
    assert ClockMonitor("unsynced").synced() is False
    assert isinstance(ClockMonitor("auto").synced(), bool)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_export_reader_rejects_garbage_cleanly(data: bytes) -> None:
    import tempfile
    from pathlib import Path

    from gateway.errors import ProvenanceError
    from gateway.provenance.export import read_export

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.cborseq"
        path.write_bytes(data)
        try:
            items = list(read_export(path))
        except ProvenanceError:
            return
        assert all(isinstance(i, bytes) for i in items)
