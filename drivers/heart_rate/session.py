"""The heart-rate strap session: subscribe to Heart Rate Measurement, commit every notification."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.heart_rate import MEASUREMENT_UUID, SERVICE_UUID, points
from drivers.heart_rate.codec import HeartRateMeasurement
from drivers.sdk.driver import DriverKind, Match, Session, SessionContext
from drivers.sdk.session import NotificationStream, Points, Subscription

if TYPE_CHECKING:
    from bleak import BleakClient


class HeartRateDriver:
    name = "heart_rate"
    kind = DriverKind.STREAM
    match = Match(frozenset({SERVICE_UUID}))

    def session(self, client: BleakClient, ctx: SessionContext) -> Session:
        def decode(data: bytes, received_ns: int) -> Points:
            return points.readings(HeartRateMeasurement.from_bytes(data), ctx.clock, received_ns), ()

        return NotificationStream(client, ctx, self.name, [Subscription(MEASUREMENT_UUID, decode)])


DRIVER = HeartRateDriver()
