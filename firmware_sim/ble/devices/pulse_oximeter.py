"""Pulse oximeter: PLX Continuous notifications every ``interval_s`` and a PLX Spot-check
indication every ``spot_check_every`` continuous readings; PLX Features."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bumble.gatt import Characteristic, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ble.wire.ieee11073 import Num
from firmware_sim.ble.wire.pulse_oximeter import (
    PlxContinuous,
    PlxFeature,
    PlxMeasurementStatus,
    PlxSpotCheck,
    plx_features,
)
from firmware_sim.physiology import HeartRate, Spo2

if TYPE_CHECKING:
    from firmware_sim.ward import PatientView

FEATURES = PlxFeature.MEASUREMENT_STATUS | PlxFeature.SPOT_CHECK_TIMESTAMP | PlxFeature.PULSE_AMPLITUDE_INDEX
STATUS_MASK = PlxMeasurementStatus.VALIDATED | PlxMeasurementStatus.QUESTIONABLE | PlxMeasurementStatus.ONGOING


class PulseOximeter(SimPeripheral):
    profile_service_uuids = (uuids.PULSE_OXIMETER_SERVICE,)

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        seed: int = 0,
        clock: DeviceClock | None = None,
        interval_s: float = 1.0,
        spot_check_every: int = 30,
        patient: PatientView | None = None,
    ) -> None:
        super().__init__(identity, seed=seed, clock=clock)
        self.patient = patient
        """The simulated patient (:mod:`firmware_sim.ward`): SpO2 model and pulse rate from its beat
        train; None: the oximeter's own simple models."""
        self.interval_s = interval_s
        self.spot_check_every = spot_check_every
        spo2_rng, hr_rng = self.rng.spawn(2)
        self.spo2 = Spo2(spo2_rng, float(self.rng.uniform(95.5, 98.5)))
        self.pulse = HeartRate(hr_rng, float(self.rng.uniform(60.0, 85.0)))
        self._count = 0
        self.spot_check_char: Characteristic[bytes] = self.notifying(uuids.PLX_SPOT_CHECK, indicate=True)
        self.continuous_char: Characteristic[bytes] = self.notifying(uuids.PLX_CONTINUOUS)

    def profile_services(self) -> list[Service]:
        return [
            Service(
                uuids.PULSE_OXIMETER_SERVICE,
                [
                    self.spot_check_char,
                    self.continuous_char,
                    self.readable(uuids.PLX_FEATURES, lambda: plx_features(FEATURES, int(STATUS_MASK))),
                ],
            )
        ]

    def next_reading(self) -> tuple[int, int]:
        if self.patient is not None:
            return round(self.patient.spo2()), round(self.patient.heart_rate())
        return self.spo2.step(), round(self.pulse.step())

    async def measure(self) -> bytes:
        """One continuous reading (and a spot-check every ``spot_check_every``); returns the
        continuous bytes."""
        spo2, pr = self.next_reading()
        self._count += 1
        pai = Num.of(float(self.rng.uniform(1.0, 8.0)), -1)
        value = PlxContinuous(
            Num(spo2), Num(pr), measurement_status=int(PlxMeasurementStatus.ONGOING), pai=pai
        ).to_bytes()
        await self.notify_measurement(self.continuous_char, value)
        if self.spot_check_every and self._count % self.spot_check_every == 0:
            await self.notify_measurement(self.spot_check_char, self.spot_check(spo2, pr))
        return value

    def spot_check(self, spo2: int, pr: int) -> bytes:
        return PlxSpotCheck(
            Num(spo2),
            Num(pr),
            time_stamp=self.clock.now().replace(microsecond=0),
            measurement_status=int(PlxMeasurementStatus.VALIDATED),
        ).to_bytes()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.measure()
