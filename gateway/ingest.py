"""The local ingest source: batch maps (docs/ingest.md) → validated, time-corrected :class:`Batch` objects.

Identify the device (registry: unknown or disabled → quarantine), normalise (metric vocabulary, UCUM
unit), correct the device clock (``clock`` field: skew = receive − device now), flag time quality, pick
the lane, and hand the batches to the committer. Nothing is acknowledged before COMMIT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from gateway.clock import ClockMonitor, SkewTracker
from gateway.devices import DeviceRegistry
from gateway.errors import PayloadError
from gateway.model import AbsentReason, Batch, Reading, SourceKey, TimeQuality, Waveform
from gateway.outbox.committer import CommitResult, Committer, QuarantineRecord
from gateway.priority import PriorityRules
from gateway.vocabulary import METRICS, check_unit, metric

MAX_BATCHES_PER_REQUEST = 10_000
_YIELD_EVERY = 50
MAX_ITEMS_PER_BATCH = 10_000
MAX_SAMPLES_PER_WAVEFORM = 1_000_000


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: str
    reason: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status} if self.reason is None else {"status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class IngestRequest:
    batches: list[Any]
    clock_ns: int | None
    """The sender's clock when it sent the request (for the device clock offset)."""


def parse_body(body: bytes, content_type: str) -> IngestRequest:
    """Decode a request body into its batch maps and clock, or raise PayloadError."""
    try:
        if content_type in ("application/json", "text/json"):
            doc = json.loads(body)
        elif content_type in ("application/cbor", "application/octet-stream", ""):
            doc = cbor2.loads(body)
        else:
            raise PayloadError(f"unsupported content type {content_type!r}; use application/cbor or application/json")
    except (ValueError, cbor2.CBORDecodeError, RecursionError) as e:
        kind = "JSON" if "json" in content_type else "CBOR"
        raise PayloadError(f"body is not valid {kind}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("batches"), list):
        raise PayloadError("body must be a map with a 'batches' list")
    batches: list[Any] = doc["batches"]
    if len(batches) > MAX_BATCHES_PER_REQUEST:
        raise PayloadError(f"at most {MAX_BATCHES_PER_REQUEST} batches per request")
    clock = _int(doc, "clock", required=False)
    if clock is not None and not 0 < clock <= _I64_MAX:
        raise PayloadError("'clock' must be the sender's time in ns since the Unix epoch")
    return IngestRequest(batches, clock)


def _samples(raw: Any) -> np.ndarray[Any, np.dtype[np.int32]]:
    if isinstance(raw, str):
        try:
            raw = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except ValueError as e:
            raise PayloadError(f"'i32le' is not base64url: {e}") from e
    if not isinstance(raw, bytes | bytearray) or len(raw) % 4:
        raise PayloadError("'i32le' must hold little-endian int32 samples (length a multiple of 4)")
    if len(raw) // 4 > MAX_SAMPLES_PER_WAVEFORM:
        raise PayloadError(f"at most {MAX_SAMPLES_PER_WAVEFORM} samples per waveform")
    return np.frombuffer(bytes(raw), dtype="<i4").astype(np.int32)


_GOOD = int(TimeQuality.GOOD)
_UNSYNCED = int(TimeQuality.GATEWAY_UNSYNCED)
_UNCORRECTED = int(TimeQuality.DEVICE_UNCORRECTED)
_RECEIVE_TIME = int(TimeQuality.RECEIVE_TIME)
_SCALARS: dict[str, frozenset[str]] = {
    m.name: frozenset(m.units) for m in METRICS.values() if not (m.waveform or m.spectrum)
}
_DEFAULT_UNIT: dict[str, str] = {m.name: m.unit for m in METRICS.values()}
_ABSENT = frozenset(a.value for a in AbsentReason)


_I64_MAX = 2**63 - 1


def _int(m: dict[str, Any], k: str, *, required: bool = True) -> int | None:
    """An integer field in 0 … 2**63-1 (``None`` when absent and not required)."""
    v = m.get(k)
    if (v is None and not required) or (type(v) is int and 0 <= v <= _I64_MAX):
        return v
    raise PayloadError(f"{k!r} must be an integer from 0 to 2**63-1")


def _time(t: int, what: str) -> int:
    """A time in ns since the epoch, after clock correction: must fit a signed 64-bit integer."""
    if not 0 <= t <= _I64_MAX:
        raise PayloadError(f"{what} is out of range after clock correction (0 to 2**63-1 ns)")
    return t


def _reading(r: Any, received_ns: int, skew: int, tq: int) -> Reading:
    """One reading map → Reading (hot path: plain type checks, no enum arithmetic)."""
    if type(r) is not dict:
        raise PayloadError("a reading must be a map")
    name: Any = r.get("metric")
    units = _SCALARS.get(name)
    if units is None:
        metric(name if isinstance(name, str) else repr(name))  # raises the vocabulary's error
        if METRICS[name].spectrum:
            raise PayloadError(f"{name!r} is a spectrum metric; the ingest API does not take spectra")
        raise PayloadError(f"{name!r} is a waveform metric; send it in 'waveforms'")
    unit = r.get("u")
    if unit is None:
        unit = _DEFAULT_UNIT[name]
    elif unit not in units:
        check_unit(METRICS[name], unit if isinstance(unit, str) else repr(unit))
    t = r.get("t")
    if t is None:
        t, tq = received_ns, tq | _RECEIVE_TIME
    elif type(t) is int:
        t = _time(t + skew, "'t'")
    else:
        raise PayloadError("'t' must be an integer (ns since the Unix epoch)")
    absent = r.get("absent")
    if absent is not None:
        if absent not in _ABSENT:
            raise PayloadError(f"unknown absent reason {absent!r}")
        value = None
    else:
        v = r.get("v")
        tv = type(v)
        if tv is float:
            if not math.isfinite(v):  # type: ignore[arg-type]
                raise PayloadError(f"reading {name!r}: 'v' must be a finite number (or give 'absent')")
            value = v
        elif tv is int:
            value = float(v)  # type: ignore[arg-type]
        else:
            raise PayloadError(f"reading {name!r}: 'v' must be a finite number (or give 'absent')")
    alert = r.get("alert", False)
    if type(alert) is not bool:
        raise PayloadError("'alert' must be a boolean")
    p = r.get("p")
    if p is not None and (type(p) is not int or not -30 <= p <= 30):
        raise PayloadError("'p' (decimal digits kept) must be an integer from -30 to 30")
    return Reading(
        name,
        value,
        unit,
        t,
        p,
        absent,
        _int(r, "seq", required=False),
        tq,
        _int(r, "status", required=False) or 0,
        alert,
    )


class IngestSource:
    def __init__(
        self,
        registry: DeviceRegistry,
        committer: Committer,
        clock: ClockMonitor,
        rules: PriorityRules,
        skew: SkewTracker,
    ) -> None:
        self._registry = registry
        self._committer = committer
        self._clock = clock
        self._rules = rules
        self._skew = skew

    def to_batch(self, m: Any, received_ns: int, gateway_synced: bool, clock: int | None = None) -> Batch:
        """Validate one batch map; raises PayloadError (malformed) — registry checks happen in :meth:`ingest`."""
        if type(m) is not dict:
            raise PayloadError("a batch must be a map")
        device_id = m.get("device")
        key = m.get("key")
        if type(key) is not list or not 1 <= len(key) <= 4:
            raise PayloadError("'key' must be a list of 1 to 4 strings/integers")
        if type(device_id) is not str:
            raise PayloadError("'device' must be a device id string")
        skey = SourceKey(device_id, tuple(key))  # validates the device id and parts
        device = self._registry.cached(device_id)
        tq = _GOOD if gateway_synced else _UNSYNCED
        skew = 0
        if clock is not None and device is not None and device.enabled:
            skew = self._skew.offset(device_id, received_ns, clock)
        else:
            tq |= _UNCORRECTED
        readings_in = m.get("readings") or []
        waves_in = m.get("waveforms") or []
        if type(readings_in) is not list or type(waves_in) is not list:
            raise PayloadError("'readings' and 'waveforms' must be lists")
        if not readings_in and not waves_in:
            raise PayloadError("a batch must carry readings or waveforms")
        if len(readings_in) + len(waves_in) > MAX_ITEMS_PER_BATCH:
            raise PayloadError(f"at most {MAX_ITEMS_PER_BATCH} readings and waveforms per batch")
        readings = tuple([_reading(r, received_ns, skew, tq) for r in readings_in])
        if len(readings) > 1 and len({(r[0], r[3]) for r in readings}) < len(readings):
            raise PayloadError("two readings of one metric share a time: distinct readings need distinct times")
        waveforms = tuple(self._waveform(w, skew, tq) for w in waves_in)
        return Batch(
            key=skey,
            received_ns=received_ns,
            readings=readings,
            waveforms=waveforms,
            priority=self._rules.classify(readings),
            kind=device.kind if device else "",
        )

    def _waveform(self, w: Any, skew: int, tq: int) -> Waveform:
        if not isinstance(w, dict):
            raise PayloadError("a waveform must be a map")
        met = metric(w.get("metric", ""))
        if not met.waveform:
            raise PayloadError(f"{met.name!r} is not a waveform metric")
        unit = w.get("u", met.unit)
        check_unit(met, unit)
        t0 = _int(w, "t0")
        period = _int(w, "period")
        assert t0 is not None and period is not None
        if not 0 < period <= _I64_MAX:
            raise PayloadError("'period' must be a positive number of ns")
        samples = _samples(w.get("i32le"))
        start = _time(t0 + skew, "'t0'")
        _time(start + max(0, samples.size - 1) * period, "the last sample's time")
        return Waveform(met.name, unit, start, period, samples, tq)

    async def ingest(
        self, maps: Sequence[Any], payload_for_hash: bytes = b"", clock: int | None = None
    ) -> list[IngestResult]:
        """Validate, quarantine what must not enter, commit the rest; one result per map, in order."""
        received_ns = time.time_ns()
        synced = self._clock.synced()
        self._registry.refresh()  # once per request; the loop below reads the cache
        results: list[IngestResult | None] = [None] * len(maps)
        good: list[tuple[int, Batch]] = []
        evidence = _Evidence(payload_for_hash)
        for i, m in enumerate(maps):
            if i and not i % _YIELD_EVERY:
                await asyncio.sleep(0)  # a large request must not hold up small ones behind it
            device_id = m.get("device") if isinstance(m, dict) else None
            try:
                # batches without device times fall back to the receive time: +i ns keeps them distinct
                batch = self.to_batch(m, received_ns + i, synced, clock)
            except PayloadError as e:
                self._reject(results, i, "malformed", str(e), device_id, evidence)
                continue
            except (TypeError, ValueError, OverflowError) as e:  # e.g. a list where a name belongs
                self._reject(results, i, "malformed", f"wrong type or value: {e}", device_id, evidence)
                continue
            device = self._registry.cached(batch.device_id)
            if device is None:
                self._reject(
                    results,
                    i,
                    "unknown_device",
                    f"device {batch.device_id} is not registered",
                    batch.device_id,
                    evidence,
                )
            elif not device.enabled:
                self._reject(
                    results,
                    i,
                    "disabled_device",
                    f"device {batch.device_id} is disabled",
                    batch.device_id,
                    evidence,
                )
            else:
                good.append((i, batch))
        if good:
            committed = await self._committer.submit_many([b for _, b in good])
            for (i, _), r in zip(good, committed, strict=True):
                results[i] = IngestResult("committed" if r is CommitResult.COMMITTED else "duplicate")
        return [r for r in results if r is not None]

    def quarantine(self, record: QuarantineRecord) -> None:
        self._committer.quarantine(record)

    def _reject(
        self,
        results: list[IngestResult | None],
        i: int,
        reason: str,
        detail: str,
        device_id: Any,
        evidence: _Evidence,
    ) -> None:
        dev = device_id if isinstance(device_id, str) else None
        digest, size = evidence.digest()
        self._committer.quarantine(QuarantineRecord(reason, detail, dev, digest, size))
        results[i] = IngestResult("quarantined", f"{reason}: {detail}")


class _Evidence:
    """The request body's SHA-256 for quarantine records, computed once per request and only if needed."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._digest: tuple[bytes | None, int] | None = None

    def digest(self) -> tuple[bytes | None, int]:
        if self._digest is None:
            self._digest = (hashlib.sha256(self._body).digest() if self._body else None, len(self._body))
        return self._digest
