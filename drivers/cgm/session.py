"""The CGM session: backfill the records missed while disconnected (RACP by time offset), then stream.

A record's identity is (session start time, time offset): its source key, so a record that arrives both
live and in the backfill is stored once. The watermark (session start, last committed offset) moves
only after a COMMIT, and only once the backfill of this connection is complete — before that a live
record ahead of a gap must not let a crash skip the gap. A new sensor session (another start time)
restarts offsets at 0: everything the sensor holds is fetched. With E2E-CRC (CGM Feature bit 12), a
notification with a bad CRC is quarantined (``bad_crc``) and counted, the watermark is frozen below it and
the records are fetched again by RACP from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from drivers.cgm import (
    FEATURE_UUID,
    MEASUREMENT_UUID,
    RACP_UUID,
    SERVICE_UUID,
    SESSION_START_TIME_UUID,
    points,
)
from drivers.cgm.codec import CgmFeature, CgmMeasurement, CgmSessionStartTime
from drivers.sdk.driver import DriverKind, Match, Session, SessionContext
from drivers.sdk.racp import RacpRequest, RacpResponse
from drivers.sdk.racp_session import RacpClient
from drivers.sdk.session import has_characteristic, read_optional
from gateway.errors import PayloadError
from gateway.model import Batch, SourceKey

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic

WATERMARK = "last_record"
CHUNK = 64
RESYNC_ATTEMPTS = 3


class CgmSession:
    def __init__(self, client: BleakClient, ctx: SessionContext, kind: str) -> None:
        self._client = client
        self._ctx = ctx
        self._kind = kind
        self._racp = RacpClient(client, ctx.racp_timeout_s, gatt_timeout_s=ctx.gatt_timeout_s)
        self._crc: bool | None = None
        self._start: CgmSessionStartTime | None = None
        self._session_id = "none"
        self._queue: asyncio.Queue[tuple[CgmMeasurement, int]] = asyncio.Queue()
        self._backfilled = False
        self._subscribed = False
        self._max_committed = -1
        self._gap = False
        """A notification was rejected: the watermark must not move past the records it carried."""
        self._resync = asyncio.Event()
        self._racp_started = False

    def _on_measurement(self, _c: BleakGATTCharacteristic, data: bytearray) -> None:
        raw = bytes(data)
        self._racp.progress()
        try:
            m = CgmMeasurement.from_bytes(raw, crc=self._crc)
        except PayloadError as e:
            self._ctx.reject(e.reason, str(e), raw)
            # the sensor still holds the record(s) this notification carried: freeze the watermark below
            # them and fetch again from there (RACP), so a corrupted notification costs no data
            self._gap = True
            self._resync.set()
            return
        self._queue.put_nowait((m, self._ctx.now_ns()))

    async def run(self) -> None:
        timeout = self._ctx.gatt_timeout_s
        feature = await read_optional(self._client, FEATURE_UUID, timeout)
        if feature is not None:
            self._crc = CgmFeature.from_bytes(feature).e2e_crc
        start = await read_optional(self._client, SESSION_START_TIME_UUID, timeout)
        if start is not None:
            self._start = CgmSessionStartTime.from_bytes(start, crc=self._crc)
            self._session_id = self._start.to_bytes().hex()
        await asyncio.wait_for(self._client.start_notify(MEASUREMENT_UUID, self._on_measurement), timeout=timeout)
        self._subscribed = True
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._commit_loop())
            await self._backfill()
            if self._racp_started:
                await self._resync_loop()

    def _watermark(self) -> int | None:
        """The saved watermark's time offset, if it belongs to the sensor's current session."""
        mark = self._ctx.load_state(WATERMARK)
        session, _, offset = (mark or "").partition(":")
        return int(offset) if mark is not None and session == self._session_id else None

    async def _fetch(self, request: RacpRequest) -> None:
        answer = await self._racp.request(request)
        if isinstance(answer, RacpResponse) and not (answer.success or answer.no_records):
            raise PayloadError(f"CGM answered RACP op {answer.request_op:#04x} with code {answer.code}")
        await self._queue.join()  # every fetched record committed

    async def _resync_loop(self) -> None:
        """After a corrupted notification: fetch again from the frozen watermark (a few times at most per
        connection; if the gap persists the watermark stays frozen and the next connection retries)."""
        for _ in range(RESYNC_ATTEMPTS):
            await self._resync.wait()
            self._resync.clear()
            self._gap = False
            offset = self._watermark()
            self._ctx.log.info("CGM: a notification was corrupted; fetching again from offset %s", offset)
            await self._fetch(
                RacpRequest.report_all() if offset is None else RacpRequest.report_from_time_offset(offset)
            )
            if not self._gap and self._max_committed >= 0:
                self._save_mark()
        await asyncio.Event().wait()  # keep streaming with the watermark frozen

    async def _backfill(self) -> None:
        if not has_characteristic(self._client, RACP_UUID):
            self._backfilled = True
            return
        await self._racp.start()
        self._racp_started = True
        offset = self._watermark()
        await self._fetch(RacpRequest.report_all() if offset is None else RacpRequest.report_from_time_offset(offset))
        self._backfilled = True
        if self._max_committed >= 0 and not self._gap:
            self._save_mark()
        self._ctx.log.info("CGM backfill complete")

    async def _commit_loop(self) -> None:
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty() and len(items) < CHUNK:
                items.append(self._queue.get_nowait())
            try:
                batches: list[Batch] = []
                last = -1
                for m, received in items:
                    readings = points.readings(m, self._start, self._ctx.clock, received)
                    for rec in m.records:
                        mine = tuple(r for r in readings if r.seq == rec.time_offset_min)
                        key = SourceKey(self._ctx.device_id, ("c", self._session_id, rec.time_offset_min))
                        batches.append(Batch(key, received, mine, kind=self._kind))
                        last = max(last, rec.time_offset_min)
                await self._ctx.commit(batches)
                self._max_committed = max(self._max_committed, last)
                if self._backfilled and last >= 0 and not self._gap:
                    self._save_mark()
            finally:
                for _ in items:
                    self._queue.task_done()

    def _save_mark(self) -> None:
        self._ctx.save_state(WATERMARK, f"{self._session_id}:{self._max_committed}")

    async def stop(self) -> None:
        if self._subscribed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._client.stop_notify(MEASUREMENT_UUID), timeout=self._ctx.gatt_timeout_s)


class CgmDriver:
    name = "cgm"
    kind = DriverKind.STREAM
    match = Match(frozenset({SERVICE_UUID}))

    def session(self, client: BleakClient, ctx: SessionContext) -> Session:
        return CgmSession(client, ctx, self.name)


DRIVER = CgmDriver()
