"""The local ingest source: batch maps (docs/ingest.md) → validated, time-corrected :class:`Batch` objects.

Identify the device (registry: unknown or disabled → quarantine), normalise (metric vocabulary, UCUM
unit), correct the device clock (``clock`` field: skew = receive − device now), flag time quality, pick
the lane, and hand the batches to the committer. Nothing is acknowledged before COMMIT.
"""

from __future__ import annotations

import base64
import json
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
from gateway.vocabulary import check_unit, metric

MAX_BATCHES_PER_REQUEST = 10_000
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
    return IngestRequest(batches, _int(doc, "clock", required=False))


def _int(m: dict[str, Any], k: str, *, required: bool = True) -> int | None:
    v = m.get(k)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise PayloadError(f"{k!r} must be an integer")
    return v


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
        if not isinstance(m, dict):
            raise PayloadError("a batch must be a map")
        device_id = m.get("device")
        key = m.get("key")
        if not isinstance(key, list) or not 1 <= len(key) <= 4:
            raise PayloadError("'key' must be a list of 1 to 4 strings/integers")
        if not isinstance(device_id, str):
            raise PayloadError("'device' must be a device id string")
        skey = SourceKey(device_id, tuple(key))  # validates the device id and parts
        device = self._registry.get(skey.device_id)
        base_tq = TimeQuality.GOOD if gateway_synced else TimeQuality.GATEWAY_UNSYNCED
        skew = 0
        if clock is not None and device is not None and device.enabled:
            skew = self._skew.offset(device.id, received_ns, clock)
        else:
            base_tq |= TimeQuality.DEVICE_UNCORRECTED
        readings_in = m.get("readings") or []
        waves_in = m.get("waveforms") or []
        if not isinstance(readings_in, list) or not isinstance(waves_in, list):
            raise PayloadError("'readings' and 'waveforms' must be lists")
        if not readings_in and not waves_in:
            raise PayloadError("a batch must carry readings or waveforms")
        if len(readings_in) + len(waves_in) > MAX_ITEMS_PER_BATCH:
            raise PayloadError(f"at most {MAX_ITEMS_PER_BATCH} readings and waveforms per batch")
        readings = tuple(self._reading(r, received_ns, skew, base_tq) for r in readings_in)
        seen = set()
        for r in readings:
            ident = (r.metric, r.device_time_ns)
            if ident in seen:
                raise PayloadError(
                    f"two {r.metric} readings share the time {r.device_time_ns}: distinct readings need distinct times"
                )
            seen.add(ident)
        waveforms = tuple(self._waveform(w, skew, base_tq) for w in waves_in)
        return Batch(
            key=skey,
            received_ns=received_ns,
            readings=readings,
            waveforms=waveforms,
            priority=self._rules.classify(readings),
            kind=device.kind if device else "",
        )

    def _reading(self, r: Any, received_ns: int, skew: int, tq: TimeQuality) -> Reading:
        if not isinstance(r, dict):
            raise PayloadError("a reading must be a map")
        met = metric(r.get("metric", ""))
        if met.waveform:
            raise PayloadError(f"{met.name!r} is a waveform metric; send it in 'waveforms'")
        unit = r.get("u", met.unit)
        check_unit(met, unit)
        t = _int(r, "t", required=False)
        if t is None:
            t, tq = received_ns, tq | TimeQuality.RECEIVE_TIME
        else:
            t += skew
        v = r.get("v")
        absent = r.get("absent")
        if absent is not None:
            try:
                absent_reason: AbsentReason | None = AbsentReason(absent)
            except ValueError:
                raise PayloadError(f"unknown absent reason {absent!r}") from None
            value = None
        else:
            absent_reason = None
            if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
                raise PayloadError(f"reading {met.name!r}: 'v' must be a finite number (or give 'absent')")
            value = float(v)
        alert = r.get("alert", False)
        if not isinstance(alert, bool):
            raise PayloadError("'alert' must be a boolean")
        return Reading(
            metric=met.name,
            value=value,
            unit=unit,
            device_time_ns=t,
            precision=_int(r, "p", required=False),
            absent=absent_reason,
            seq=_int(r, "seq", required=False),
            time_quality=tq,
            status=_int(r, "status", required=False) or 0,
            alert=alert,
        )

    def _waveform(self, w: Any, skew: int, tq: TimeQuality) -> Waveform:
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
        return Waveform(met.name, unit, t0 + skew, period, _samples(w.get("i32le")), tq)

    async def ingest(
        self, maps: Sequence[Any], payload_for_hash: bytes = b"", clock: int | None = None
    ) -> list[IngestResult]:
        """Validate, quarantine what must not enter, commit the rest; one result per map, in order."""
        received_ns = time.time_ns()
        synced = self._clock.synced()
        results: list[IngestResult | None] = [None] * len(maps)
        good: list[tuple[int, Batch]] = []
        for i, m in enumerate(maps):
            device_id = m.get("device") if isinstance(m, dict) else None
            try:
                # batches without device times fall back to the receive time: +i ns keeps them distinct
                batch = self.to_batch(m, received_ns + i, synced, clock)
            except PayloadError as e:
                self._reject(results, i, "malformed", str(e), device_id, payload_for_hash)
                continue
            device = self._registry.get(batch.device_id)
            if device is None:
                self._reject(
                    results,
                    i,
                    "unknown_device",
                    f"device {batch.device_id} is not registered",
                    batch.device_id,
                    payload_for_hash,
                )
            elif not device.enabled:
                self._reject(
                    results,
                    i,
                    "disabled_device",
                    f"device {batch.device_id} is disabled",
                    batch.device_id,
                    payload_for_hash,
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
        payload: bytes,
    ) -> None:
        dev = device_id if isinstance(device_id, str) else None
        self._committer.quarantine(QuarantineRecord(reason, detail, dev, payload))
        results[i] = IngestResult("quarantined", f"{reason}: {detail}")
