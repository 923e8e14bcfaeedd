"""Heart-rate strap: Heart Rate Service with HR + RR intervals, body sensor location, energy
expended (reset through the control point)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bumble.device import Connection
from bumble.gatt import Characteristic, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.peripheral import SimPeripheral, att_error
from firmware_sim.ble.wire.heart_rate import (
    BodySensorLocation,
    HeartRateMeasurement,
    SensorContact,
    body_sensor_location,
    rr_ms_to_1024,
)
from firmware_sim.physiology import HeartRate

if TYPE_CHECKING:
    from firmware_sim.ward import BeatStream, PatientView

HRS_CONTROL_POINT_NOT_SUPPORTED = 0x80
"""HRS application error: Control Point value not supported."""
ENERGY_EVERY = 10
"""Energy expended is included in every 10th notification."""
MAX_RR = 8
"""RR intervals per notification at most (what fits a 23-byte ATT MTU with energy expended); a strap
that fell behind reports the most recent ones."""


class HeartRateSource:
    """Beat-by-beat heart rate: each call to :meth:`second` advances one second and returns the
    rounded HR and the RR intervals (ms) of the beats that ended in that second."""

    def __init__(self, model: HeartRate) -> None:
        self.model = model
        self._until_beat_ms = 0.0

    def second(self) -> tuple[int, list[float]]:
        bpm = self.model.step()
        rr = 60_000.0 / bpm
        rrs: list[float] = []
        elapsed = self._until_beat_ms
        while elapsed < 1000.0:
            rrs.append(rr)
            elapsed += rr
        self._until_beat_ms = elapsed - 1000.0
        return round(bpm), rrs


class HeartRateStrap(SimPeripheral):
    profile_service_uuids = (uuids.HEART_RATE_SERVICE,)

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        seed: int = 0,
        clock: DeviceClock | None = None,
        interval_s: float = 1.0,
        location: BodySensorLocation = BodySensorLocation.CHEST,
        patient: PatientView | None = None,
    ) -> None:
        super().__init__(identity, seed=seed, clock=clock)
        self.patient = patient
        """The simulated patient the strap is on (:mod:`firmware_sim.ward`); None: its own simple model."""
        self.beats: BeatStream | None = patient.beat_stream() if patient is not None else None
        self.interval_s = interval_s
        self.location = location
        self.source = HeartRateSource(HeartRate(self.rng.spawn(1)[0], float(self.rng.uniform(60.0, 85.0))))
        self.contact = SensorContact.CONTACT
        self.energy_kj = 0
        self._count = 0
        self.measurement_char: Characteristic[bytes] = self.notifying(uuids.HEART_RATE_MEASUREMENT)

    def heart_rate_service(self) -> Service:
        return Service(
            uuids.HEART_RATE_SERVICE,
            [
                self.measurement_char,
                self.readable(uuids.BODY_SENSOR_LOCATION, lambda: body_sensor_location(self.location)),
                self.control_point(uuids.HEART_RATE_CONTROL_POINT, self._write_control_point, indicate=False),
            ],
        )

    def profile_services(self) -> list[Service]:
        return [self.heart_rate_service()]

    async def _write_control_point(self, _connection: Connection, value: bytes) -> None:
        if value != b"\x01":
            raise att_error(HRS_CONTROL_POINT_NOT_SUPPORTED, "only 01 (reset energy expended) is supported")
        self.energy_kj = 0

    def physiology(self) -> tuple[int, list[float]]:
        """Heart rate (/min) and the RR intervals (ms) since the last call: from the patient's beat
        train when the strap is on a ward patient, else one second of the strap's own model."""
        if self.patient is None or self.beats is None:
            return self.source.second()
        beats = self.beats.take()
        return round(self.patient.heart_rate()), [float(rr) * 1000.0 for rr in beats.rr_s[-MAX_RR:]]

    def next_measurement(self) -> HeartRateMeasurement:
        """Advance the physiology (one second, or up to the ward's now) and build the notification."""
        bpm, rrs = self.physiology()
        self.energy_kj = min(self.energy_kj + max(1, bpm // 20), 0xFFFF)
        self._count += 1
        energy = self.energy_kj if self._count % ENERGY_EVERY == 0 else None
        return HeartRateMeasurement(bpm, self.contact, energy, tuple(rr_ms_to_1024(r) for r in rrs))

    async def measure(self) -> bytes:
        """Produce one measurement now and notify it; returns the bytes of the true value."""
        value = self.next_measurement().to_bytes()
        await self.notify_measurement(self.measurement_char, value)
        return value

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.measure()
