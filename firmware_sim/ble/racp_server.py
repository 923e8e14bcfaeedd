"""The device side of the Record Access Control Point (protocols.md §5.4), shared by the glucose
meter and the CGM: one procedure at a time per device, records notified on the connection that
asked, then the response indication; abort; the disconnect-mid-transfer fault."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, Protocol

from bumble.device import Connection
from bumble.gatt import Characteristic

from firmware_sim.ble import uuids
from firmware_sim.ble.peripheral import SimPeripheral, att_error
from firmware_sim.ble.wire.racp import (
    RacpOpCode,
    RacpRequest,
    RacpRequestError,
    RacpResponse,
    racp_number_of_records,
    racp_response_code,
)

Notification = tuple[Characteristic[bytes], bytes, int]
"""(characteristic, value, records completed by this notification)."""


class RecordStore(Protocol):
    def keys(self) -> list[int]:
        """The filter key (sequence number or time offset) of each stored record, oldest first."""
        ...

    def notifications(self, indices: Sequence[int], connection: Connection) -> Iterator[Notification]:
        """The notifications that transfer the records at ``indices``."""
        ...

    def delete(self, indices: Sequence[int]) -> None: ...


class RacpServer:
    """Handles writes to one RACP characteristic.

    ``cccd_error`` / ``in_progress_error`` are the ATT errors of the profile: GLS uses 0x81 /
    0x80, CGMS the common profile codes 0xFD / 0xFE.
    """

    def __init__(
        self,
        peripheral: SimPeripheral,
        store: RecordStore,
        *,
        cccd_error: int,
        in_progress_error: int,
        record_interval_s: float = 0.0,
    ) -> None:
        self.peripheral = peripheral
        self.store = store
        self.cccd_error = cccd_error
        self.in_progress_error = in_progress_error
        self.record_interval_s = record_interval_s
        self.characteristic = peripheral.control_point(uuids.RECORD_ACCESS_CONTROL_POINT, self.on_write)
        self._procedure: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self.records_sent = 0
        """Records notified by RACP reports since the device started (for tests and summaries)."""

    @property
    def busy(self) -> bool:
        return self._procedure is not None and not self._procedure.done()

    async def on_write(self, connection: Connection, value: bytes) -> None:
        if not self.peripheral.subscribed(connection, self.characteristic, indicate=True):
            raise att_error(self.cccd_error, "RACP indications not enabled")
        try:
            request = RacpRequest.parse(value)
        except RacpRequestError as err:
            if self.busy:
                raise att_error(self.in_progress_error, "RACP procedure already in progress") from err
            reply = racp_response_code(err.op, err.code)
            self._start(connection, lambda: self._respond(connection, reply))
            return
        if request.op is RacpOpCode.ABORT:
            self._start(connection, lambda: self._abort(connection), replace=True)
            return
        if self.busy:
            raise att_error(self.in_progress_error, "RACP procedure already in progress")
        self._start(connection, lambda: self._run(connection, request))

    def on_disconnection(self, connection: Connection) -> None:
        if connection is self._connection and self._procedure is not None:
            self._procedure.cancel()

    def _start(
        self, connection: Connection, work: Callable[[], Coroutine[Any, Any, None]], *, replace: bool = False
    ) -> None:
        previous = self._procedure if replace else None
        self._connection = connection

        async def runner() -> None:
            if previous is not None and not previous.done():
                previous.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await previous
            await work()

        self._procedure = self.peripheral.spawn(runner())

    async def _respond(self, connection: Connection, value: bytes) -> None:
        await self.peripheral.device.indicate_subscriber(connection, self.characteristic, value)

    async def _abort(self, connection: Connection) -> None:
        await self._respond(connection, racp_response_code(RacpOpCode.ABORT, RacpResponse.SUCCESS))

    async def _run(self, connection: Connection, request: RacpRequest) -> None:
        indices = request.select(self.store.keys())
        if request.op is RacpOpCode.REPORT_NUMBER_OF_RECORDS:
            await self._respond(connection, racp_number_of_records(len(indices)))
            return
        if not indices:
            await self._respond(connection, racp_response_code(request.op, RacpResponse.NO_RECORDS_FOUND))
            return
        if request.op is RacpOpCode.DELETE_STORED_RECORDS:
            self.store.delete(indices)
            await self._respond(connection, racp_response_code(request.op, RacpResponse.SUCCESS))
            return
        if await self._report(connection, indices):
            await self._respond(connection, racp_response_code(request.op, RacpResponse.SUCCESS))

    async def _report(self, connection: Connection, indices: Sequence[int]) -> bool:
        """Notify the records; False if the disconnect fault cut the transfer."""
        faults = self.peripheral.faults
        sent = 0
        for characteristic, value, completed in self.store.notifications(indices, connection):
            await faults.wait_responsive()
            await self.peripheral.notify_measurement(characteristic, value, connection=connection)
            sent += completed
            self.records_sent += completed
            limit = faults.racp_disconnect_after
            if limit is not None and sent >= limit:
                faults.racp_disconnect_after = None
                await connection.disconnect()
                return False
            await asyncio.sleep(self.record_interval_s)
        return True
