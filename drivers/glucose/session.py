"""The glucose-meter session: fetch only new stored records (RACP), commit, then advance the watermark.

The watermark is the last committed record: its sequence number and its base time. On every turn the
session asks for records with sequence number ≥ that one (protocols.md §5.4):

- the known record comes back unchanged → the meter is the same: everything after it is new;
- it does not (no records, or that number now carries another time) → the meter was reset or
  replaced: ask for all records.

A record's source key is (sequence number, base time, offset), so asking again never stores a record
twice, whatever was committed before a crash or a disconnect. Records are committed in chunks while
they arrive and the watermark moves only after each COMMIT. Control-solution results are never
patient data: they are quarantined under ``control_solution`` (counted) and still settle the watermark.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drivers.glucose import CONTEXT_UUID, MEASUREMENT_UUID, SERVICE_UUID, points
from drivers.glucose.codec import GlucoseContext, GlucoseMeasurement
from drivers.sdk.driver import DriverKind, Match, Session, SessionContext
from drivers.sdk.racp import RacpNumberOfRecords, RacpRequest, RacpResponse
from drivers.sdk.racp_session import RacpClient
from drivers.sdk.session import has_characteristic
from gateway.errors import PayloadError
from gateway.model import Batch, Reading, SourceKey

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic

WATERMARK = "last_record"
CHUNK = 64
"""Records committed together during a transfer."""


@dataclass(slots=True)
class _Record:
    m: GlucoseMeasurement
    data: bytes
    received_ns: int
    context: GlucoseContext | None = None

    @property
    def ident(self) -> str:
        return f"{self.m.sequence}:{self.stamp}"

    @property
    def stamp(self) -> str:
        """Base time and offset: with the sequence number, what tells records of a reset meter apart."""
        return f"{self.m.base_time.to_bytes().hex()}.{self.m.time_offset_min or 0}"


@dataclass(slots=True)
class _Transfer:
    """Records of the current RACP procedure, in arrival order."""

    records: list[_Record] = field(default_factory=list)
    committed: int = 0
    """How many of ``records`` are committed."""
    seen: dict[int, str] = field(default_factory=dict)
    """Sequence number → record identity, for the reset check."""


class GlucoseSession:
    def __init__(self, client: BleakClient, ctx: SessionContext, kind: str) -> None:
        self._client = client
        self._ctx = ctx
        self._kind = kind
        self._racp = RacpClient(client, ctx.racp_timeout_s, gatt_timeout_s=ctx.gatt_timeout_s)
        self._t = _Transfer()
        self._arrived = asyncio.Event()
        self._mark: str | None = None

    # --- notifications ---------------------------------------------------------------------------
    def _on_measurement(self, _c: BleakGATTCharacteristic, data: bytearray) -> None:
        raw = bytes(data)
        self._racp.progress()
        try:
            m = GlucoseMeasurement.from_bytes(raw)
        except PayloadError as e:
            self._ctx.reject(e.reason, str(e), raw)
            return
        rec = _Record(m, raw, self._ctx.now_ns())
        self._t.records.append(rec)
        self._t.seen[m.sequence] = rec.ident
        self._arrived.set()

    def _on_context(self, _c: BleakGATTCharacteristic, data: bytearray) -> None:
        raw = bytes(data)
        self._racp.progress()
        try:
            c = GlucoseContext.from_bytes(raw)
        except PayloadError as e:
            self._ctx.reject(e.reason, str(e), raw)
            return
        for rec in reversed(self._t.records):
            if rec.m.sequence == c.sequence:
                rec.context = c
                self._arrived.set()
                return
        self._ctx.reject("orphan_context", f"glucose context for unknown record {c.sequence}", raw)

    # --- the turn ----------------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.wait_for(
            self._client.start_notify(MEASUREMENT_UUID, self._on_measurement), timeout=self._ctx.gatt_timeout_s
        )
        if has_characteristic(self._client, CONTEXT_UUID):
            await asyncio.wait_for(
                self._client.start_notify(CONTEXT_UUID, self._on_context), timeout=self._ctx.gatt_timeout_s
            )
        await self._racp.start()
        mark = self._mark = self._ctx.load_state(WATERMARK)
        if mark is None:
            await self._fetch(RacpRequest.report_all())
            return
        seq = int(mark.split(":", 1)[0])
        await self._fetch(RacpRequest.report_from_sequence(seq))
        if self._t.seen.get(seq) != mark:
            self._ctx.log.warning(
                "glucose meter: record %d %s — the meter was reset or replaced; fetching all records",
                seq,
                "is gone" if seq not in self._t.seen else "has changed",
            )
            await self._fetch(RacpRequest.report_all())

    async def _fetch(self, request: RacpRequest) -> RacpResponse | RacpNumberOfRecords | None:
        """Run one RACP procedure, committing records in chunks while they arrive."""
        self._t = _Transfer()
        procedure = asyncio.ensure_future(self._racp.request(request))
        try:
            while not procedure.done():
                self._arrived.clear()
                waiter = asyncio.ensure_future(self._arrived.wait())
                await asyncio.wait({procedure, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if len(self._t.records) - self._t.committed >= CHUNK:
                    await self._commit(final=False)
            answer = procedure.result()
        except TimeoutError:
            await self._commit(final=True)  # the procedure went silent: keep what arrived
            raise
        finally:
            if not procedure.done():
                procedure.cancel()
        await self._commit(final=True)
        if isinstance(answer, RacpResponse) and not (answer.success or answer.no_records):
            raise PayloadError(f"glucose meter answered RACP op {answer.request_op:#04x} with code {answer.code}")
        return answer

    async def _commit(self, *, final: bool) -> None:
        """Commit the records that arrived (all of them when ``final``; else those whose context, if
        announced, is in), then move the watermark to the last committed record."""
        t = self._t
        end = len(t.records)
        if not final:
            while end > t.committed and t.records[end - 1].m.context_follows and t.records[end - 1].context is None:
                end -= 1
        todo = t.records[t.committed : end]
        if not todo:
            return
        batches = [b for b in (self._batch(r) for r in todo) if b is not None]
        await self._ctx.commit(batches)
        t.committed = end
        self._ctx.save_state(WATERMARK, todo[-1].ident)

    def _batch(self, rec: _Record) -> Batch | None:
        if rec.ident == self._mark:
            return None  # the watermark record itself: committed (or quarantined) on an earlier turn
        if rec.m.is_control_solution:
            self._ctx.reject("control_solution", f"control-solution result, record {rec.m.sequence}", rec.data)
            return None
        try:
            readings: tuple[Reading, ...] = points.readings(rec.m, self._ctx.clock, rec.received_ns)
            if rec.context is not None and readings:
                readings += points.context_readings(rec.context, readings[0].device_time_ns, readings[0].time_quality)
        except PayloadError as e:
            self._ctx.reject(e.reason, str(e), rec.data)
            return None
        if not readings:
            return None
        key = SourceKey(self._ctx.device_id, ("g", rec.m.sequence, rec.stamp))
        return Batch(key, rec.received_ns, readings, kind=self._kind)

    async def stop(self) -> None:
        await self._racp.abort()


class GlucoseDriver:
    name = "glucose_meter"
    kind = DriverKind.STORE
    match = Match(frozenset({SERVICE_UUID}))

    def session(self, client: BleakClient, ctx: SessionContext) -> Session:
        return GlucoseSession(client, ctx, self.name)


DRIVER = GlucoseDriver()
