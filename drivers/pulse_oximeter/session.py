"""The pulse-oximeter session: continuous measurements (notify) and spot-checks (indicate).

Measurements the device flags as demonstration or test data are never patient data: they are
quarantined under ``demo_data`` (counted), not stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.pulse_oximeter import CONTINUOUS_UUID, SERVICE_UUID, SPOT_CHECK_UUID, points
from drivers.pulse_oximeter.codec import PlxContinuous, PlxSpotCheck
from drivers.sdk.driver import DriverKind, Match, Session, SessionContext
from drivers.sdk.session import NotificationStream, Points, Subscription, has_characteristic

if TYPE_CHECKING:
    from bleak import BleakClient


class PulseOximeterSession(NotificationStream):
    def __init__(self, client: BleakClient, ctx: SessionContext, kind: str) -> None:
        subs = [
            Subscription(uuid, decode)
            for uuid, decode in ((CONTINUOUS_UUID, self._continuous), (SPOT_CHECK_UUID, self._spot_check))
            if has_characteristic(client, uuid)
        ]
        super().__init__(client, ctx, kind, subs)

    def _points(self, m: PlxSpotCheck | PlxContinuous, data: bytes, received_ns: int) -> Points | None:
        if points.is_demo_or_test(m):
            self.ctx.reject("demo_data", "measurement flagged as demonstration/test data", data)
            return None
        return points.readings(m, self.ctx.clock, received_ns), ()

    def _continuous(self, data: bytes, received_ns: int) -> Points | None:
        return self._points(PlxContinuous.from_bytes(data), data, received_ns)

    def _spot_check(self, data: bytes, received_ns: int) -> Points | None:
        return self._points(PlxSpotCheck.from_bytes(data), data, received_ns)


class PulseOximeterDriver:
    name = "pulse_oximeter"
    kind = DriverKind.STREAM
    match = Match(frozenset({SERVICE_UUID}))

    def session(self, client: BleakClient, ctx: SessionContext) -> Session:
        return PulseOximeterSession(client, ctx, self.name)


DRIVER = PulseOximeterDriver()
