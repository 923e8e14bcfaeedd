"""Blood-pressure cuff: every ``interval_s`` a measurement cycle — intermediate cuff pressure
notifications while the cuff deflates, then a Blood Pressure Measurement indication."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bumble.gatt import Characteristic, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ble.wire.blood_pressure import (
    BloodPressureMeasurement,
    BpFeature,
    BpStatus,
    blood_pressure_feature,
    intermediate_cuff_pressure,
)
from firmware_sim.ble.wire.ieee11073 import Num

if TYPE_CHECKING:
    from firmware_sim.ward import PatientView

FEATURES = BpFeature.BODY_MOVEMENT | BpFeature.IRREGULAR_PULSE | BpFeature.PULSE_RATE_RANGE
USER_ID = 1


class BloodPressureCuff(SimPeripheral):
    profile_service_uuids = (uuids.BLOOD_PRESSURE_SERVICE,)

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        seed: int = 0,
        clock: DeviceClock | None = None,
        interval_s: float = 60.0,
        cuff_step_s: float = 0.2,
        patient: PatientView | None = None,
        by_staff: bool = False,
    ) -> None:
        super().__init__(identity, seed=seed, clock=clock)
        self.patient = patient
        """The simulated patient (:mod:`firmware_sim.ward`): pressures from its BloodPressure model,
        pulse and irregular-pulse flag from its beat train; None: the cuff's own simple model."""
        self.by_staff = by_staff
        """Readings taken by staff (white-coat effect, with a patient)."""
        self.interval_s = interval_s
        self.cuff_step_s = cuff_step_s
        self.systolic_base = float(self.rng.uniform(110.0, 150.0))
        self.measurement_char: Characteristic[bytes] = self.notifying(uuids.BLOOD_PRESSURE_MEASUREMENT, indicate=True)
        self.cuff_char: Characteristic[bytes] = self.notifying(uuids.INTERMEDIATE_CUFF_PRESSURE)

    def profile_services(self) -> list[Service]:
        return [
            Service(
                uuids.BLOOD_PRESSURE_SERVICE,
                [
                    self.measurement_char,
                    self.cuff_char,
                    self.readable(uuids.BLOOD_PRESSURE_FEATURE, lambda: blood_pressure_feature(FEATURES)),
                ],
            )
        ]

    def next_result(self) -> BloodPressureMeasurement:
        if self.patient is not None:
            bp = self.patient.blood_pressure(by_staff=self.by_staff)
            return BloodPressureMeasurement(
                Num(round(bp.systolic)),
                Num(round(bp.diastolic)),
                Num.of(bp.mean_arterial, -1),
                time_stamp=self.clock.now().replace(microsecond=0),
                pulse_bpm=Num(round(bp.pulse_bpm)),
                user_id=USER_ID,
                status=BpStatus.IRREGULAR_PULSE if bp.irregular else BpStatus(0),
            )
        sys_ = round(self.systolic_base + float(self.rng.normal(0.0, 6.0)))
        dia = round(sys_ * float(self.rng.uniform(0.6, 0.7)))
        mean = Num.of((sys_ + 2 * dia) / 3, -1)
        pulse = int(self.rng.integers(58, 95))
        status = BpStatus.IRREGULAR_PULSE if self.rng.random() < 0.1 else BpStatus(0)
        return BloodPressureMeasurement(
            Num(sys_),
            Num(dia),
            mean,
            time_stamp=self.clock.now().replace(microsecond=0),
            pulse_bpm=Num(pulse),
            user_id=USER_ID,
            status=status,
        )

    async def measure(self) -> bytes:
        """One measurement cycle (cuff pressure from 180 down in 20 mmHg steps), then the result
        indication; returns the result bytes."""
        for pressure in range(180, 40, -20):
            await self.notify_measurement(self.cuff_char, intermediate_cuff_pressure(Num(pressure)))
            await asyncio.sleep(self.cuff_step_s)
        value = self.next_result().to_bytes()
        await self.notify_measurement(self.measurement_char, value)
        return value

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.measure()
