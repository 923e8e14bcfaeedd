"""The blood-pressure cuff session: measurements by indication, cuff pressure for live display only.

A cuff connects after a measurement and indicates its stored results. Each measurement is one batch;
with a device time stamp its source key is that stamp (and user), so a cuff that sends a result again
after a reconnect does not store it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.blood_pressure import INTERMEDIATE_CUFF_PRESSURE_UUID, MEASUREMENT_UUID, SERVICE_UUID, points
from drivers.blood_pressure.codec import BloodPressureMeasurement, IntermediateCuffPressure
from drivers.sdk.driver import DriverKind, Match, Session, SessionContext
from drivers.sdk.session import NotificationStream, Points, Subscription, has_characteristic
from gateway.model import Batch, SourceKey

if TYPE_CHECKING:
    from bleak import BleakClient


class BloodPressureSession(NotificationStream):
    def __init__(self, client: BleakClient, ctx: SessionContext, kind: str) -> None:
        subs = [Subscription(MEASUREMENT_UUID, self._measurement)]
        if has_characteristic(client, INTERMEDIATE_CUFF_PRESSURE_UUID):
            subs.append(Subscription(INTERMEDIATE_CUFF_PRESSURE_UUID, self._cuff))
        super().__init__(client, ctx, kind, subs)

    def _measurement(self, data: bytes, received_ns: int) -> Points | None:
        m = BloodPressureMeasurement.from_bytes(data)
        readings = points.readings(m, self.ctx.clock, received_ns)
        if m.time_stamp is None:
            return readings, ()  # no stamp: one batch per indication of this connection
        stamp = m.time_stamp.to_bytes().hex()
        key = SourceKey(self.ctx.device_id, ("bp", stamp, m.user_id if m.user_id is not None else 255))
        self.ctx.commit_nowait([Batch(key, received_ns, readings, kind=self.kind)])
        return None

    def _cuff(self, data: bytes, received_ns: int) -> Points | None:
        self.ctx.live([points.live_cuff_pressure(IntermediateCuffPressure.from_bytes(data), received_ns)])
        return None


class BloodPressureDriver:
    name = "blood_pressure"
    kind = DriverKind.STREAM
    match = Match(frozenset({SERVICE_UUID}))

    def session(self, client: BleakClient, ctx: SessionContext) -> Session:
        return BloodPressureSession(client, ctx, self.name)


DRIVER = BloodPressureDriver()
