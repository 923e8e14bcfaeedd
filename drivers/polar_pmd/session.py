"""The Polar ECG session (PMD, protocols.md §8): start 130 Hz / 14-bit ECG, frames → waveforms, stop.

Indications on the control point and notifications on the data characteristic are enabled before the
start command is written. The strap's clock is not assumed to be UTC: the first frame is anchored to
the gateway's receive time, later frames follow the strap's own time stamps (so the ±2 % sample clock
is kept). Heart rate and RR intervals from the strap's Heart Rate Service are streamed as well. The
stream is always stopped before a planned disconnect: an H10 left streaming drains its battery.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from bleak.exc import BleakError

from drivers.heart_rate import MEASUREMENT_UUID as HR_MEASUREMENT_UUID
from drivers.heart_rate import points as hr_points
from drivers.heart_rate.codec import HeartRateMeasurement
from drivers.polar_pmd import CONTROL_POINT_UUID, DATA_UUID, SERVICE_UUID, points
from drivers.polar_pmd.codec import EcgFrame, PmdControlPointResponse, PmdRequest
from drivers.sdk.driver import DriverKind, Match, Session, SessionContext
from drivers.sdk.session import NotificationStream, Points, Subscription, has_characteristic
from gateway.errors import PayloadError

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic


class PmdError(PayloadError):
    """The strap refused a PMD command."""


class PolarEcgSession(NotificationStream):
    def __init__(self, client: BleakClient, ctx: SessionContext, kind: str) -> None:
        subs = [Subscription(DATA_UUID, self._frame)]
        if has_characteristic(client, HR_MEASUREMENT_UUID):
            subs.append(Subscription(HR_MEASUREMENT_UUID, self._heart_rate))
        super().__init__(client, ctx, kind, subs)
        self._answers: asyncio.Queue[PmdControlPointResponse | PayloadError] = asyncio.Queue()
        self._timebase: points.PolarTimebase | None = None
        self._previous_ts: int | None = None
        self._streaming = False

    # --- control point ---------------------------------------------------------------------------
    def _on_control(self, _c: BleakGATTCharacteristic, data: bytearray) -> None:
        try:
            self._answers.put_nowait(PmdControlPointResponse.from_bytes(bytes(data)))
        except PayloadError as e:
            self._answers.put_nowait(e)

    async def _command(self, request: PmdRequest) -> PmdControlPointResponse:
        while not self._answers.empty():
            self._answers.get_nowait()
        await asyncio.wait_for(
            self.client.write_gatt_char(CONTROL_POINT_UUID, request.to_bytes(), response=True), timeout=self.timeout_s
        )
        answer = await asyncio.wait_for(self._answers.get(), timeout=self.timeout_s)
        if isinstance(answer, PayloadError):
            raise answer
        if not answer.ok:
            raise PmdError(f"PMD op {answer.op:#04x} refused: {answer.status_name}", reason="device_refused")
        return answer

    async def prepare(self) -> None:
        await asyncio.wait_for(self.client.start_notify(CONTROL_POINT_UUID, self._on_control), timeout=self.timeout_s)

    async def started(self) -> None:
        await self._command(PmdRequest.start_ecg())
        self._streaming = True

    async def stop(self) -> None:
        if self._streaming:
            self._streaming = False
            await self._command(PmdRequest.stop())
        await super().stop()
        with contextlib.suppress(BleakError, TimeoutError):
            await asyncio.wait_for(self.client.stop_notify(CONTROL_POINT_UUID), timeout=self.timeout_s)

    # --- data ------------------------------------------------------------------------------------
    def _frame(self, data: bytes, received_ns: int) -> Points:
        frame = EcgFrame.from_bytes(data)
        if self._timebase is None:
            self._timebase = points.PolarTimebase.anchored(frame, received_ns, self.ctx.clock)
        wave = points.waveform(frame, self._timebase, previous_timestamp_ns=self._previous_ts)
        self._previous_ts = frame.timestamp_ns
        return (), (wave,)

    def _heart_rate(self, data: bytes, received_ns: int) -> Points:
        return hr_points.readings(HeartRateMeasurement.from_bytes(data), self.ctx.clock, received_ns), ()


class PolarEcgDriver:
    name = "polar_ecg"
    kind = DriverKind.STREAM
    match = Match(frozenset({SERVICE_UUID}), priority=10)

    def session(self, client: BleakClient, ctx: SessionContext) -> Session:
        return PolarEcgSession(client, ctx, self.name)


DRIVER = PolarEcgDriver()
