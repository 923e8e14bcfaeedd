"""One RACP procedure at a time, with a silence timeout and Abort (protocols.md §5.4).

The collector enables indications on the Record Access Control Point, writes a request, and the
server answers with an indication (a record count or a response code). Stored records arrive as
notifications on the profile's measurement characteristic in between: the session calls
:meth:`RacpClient.progress` for each, which restarts the silence timer, so a long transfer is never cut
while records still flow, and a silent one is aborted after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from bleak.exc import BleakError

from drivers.sdk.racp import RacpNumberOfRecords, RacpRequest, RacpResponse, parse_racp_indication
from gateway.errors import PayloadError

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic

RACP_UUID = "00002a52-0000-1000-8000-00805f9b34fb"


class RacpTimeout(TimeoutError):
    """No RACP answer and no record for ``timeout_s``: the procedure was aborted."""


class RacpClient:
    def __init__(self, client: BleakClient, timeout_s: float, *, gatt_timeout_s: float = 10.0) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._gatt_timeout_s = gatt_timeout_s
        self._answers: asyncio.Queue[RacpNumberOfRecords | RacpResponse | PayloadError] = asyncio.Queue()
        self._last_progress = time.monotonic()

    async def start(self) -> None:
        await asyncio.wait_for(self._client.start_notify(RACP_UUID, self._on_indication), timeout=self._gatt_timeout_s)

    def _on_indication(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            self._answers.put_nowait(parse_racp_indication(bytes(data)))
        except PayloadError as e:
            self._answers.put_nowait(e)

    def progress(self) -> None:
        """A record arrived: the procedure is alive."""
        self._last_progress = time.monotonic()

    async def request(self, req: RacpRequest) -> RacpNumberOfRecords | RacpResponse:
        """Write ``req`` and wait for its answer; on silence abort and raise :class:`RacpTimeout`."""
        while not self._answers.empty():  # a late answer of an aborted procedure
            self._answers.get_nowait()
        await asyncio.wait_for(
            self._client.write_gatt_char(RACP_UUID, req.to_bytes(), response=True), timeout=self._gatt_timeout_s
        )
        self._last_progress = time.monotonic()
        while True:
            wait = self._last_progress + self._timeout_s - time.monotonic()
            if wait <= 0:
                await self.abort()
                raise RacpTimeout(f"RACP op {req.op:#04x}: no answer and no record for {self._timeout_s:g} s")
            try:
                answer = await asyncio.wait_for(self._answers.get(), timeout=wait)
            except TimeoutError:
                continue
            if isinstance(answer, PayloadError):
                raise answer
            return answer

    async def abort(self) -> None:
        """Best effort: a device that stopped answering may not take the abort either."""
        with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
            await asyncio.wait_for(
                self._client.write_gatt_char(RACP_UUID, RacpRequest.abort().to_bytes(), response=True),
                timeout=self._gatt_timeout_s,
            )
