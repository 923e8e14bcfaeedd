"""Glucose meter: stored records with sequence numbers, fetched through RACP; optional context;
faults: reset meter (sequence reset), control-solution records, disconnect mid-RACP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bumble.device import Connection
from bumble.gatt import Characteristic, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ble.racp_server import Notification, RacpServer
from firmware_sim.ble.wire.glucose import (
    GlucoseContext,
    GlucoseFeature,
    GlucoseMeasurement,
    GlucoseType,
    SampleLocation,
    glucose_feature,
)
from firmware_sim.ble.wire.ieee11073 import Num
from firmware_sim.physiology import Glucose

if TYPE_CHECKING:
    from firmware_sim.ward import PatientView

GLS_PROCEDURE_ALREADY_IN_PROGRESS = 0x80
GLS_CCCD_IMPROPERLY_CONFIGURED = 0x81
FEATURES = GlucoseFeature.LOW_BATTERY | GlucoseFeature.STRIP_INSERTION_ERROR | GlucoseFeature.RESULT_HIGH_LOW
MG_DL_PER_MMOL_L = 18.016
RECORD_SPACING = timedelta(hours=4)
CONTEXT_EVERY = 3
"""Every third record carries a context (meal, carbohydrates)."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    sequence: int
    base_time: datetime
    mg_dl: int
    type: int = GlucoseType.CAPILLARY_WHOLE_BLOOD
    location: int = SampleLocation.FINGER
    context: GlucoseContext | None = None

    def measurement(self, *, mol_per_l: bool) -> GlucoseMeasurement:
        # mmol/L with one decimal = mol/L × 10^-4; mg/dL = kg/L × 10^5
        conc = Num(round(self.mg_dl / MG_DL_PER_MMOL_L * 10), -4) if mol_per_l else Num(self.mg_dl, -5)
        return GlucoseMeasurement(
            self.sequence,
            self.base_time,
            time_offset_min=0,
            concentration=conc,
            mol_per_l=mol_per_l,
            type=self.type,
            location=self.location,
            status=0,
            context_follows=self.context is not None,
        )


class GlucoseMeter(SimPeripheral):
    profile_service_uuids = (uuids.GLUCOSE_SERVICE,)

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        seed: int = 0,
        clock: DeviceClock | None = None,
        records: int = 10,
        mol_per_l: bool = False,
        record_interval_s: float = 0.0,
        new_reading_interval_s: float | None = None,
        patient: PatientView | None = None,
    ) -> None:
        super().__init__(identity, seed=seed, clock=clock)
        self.patient = patient
        """The simulated patient (:mod:`firmware_sim.ward`): readings are spot checks of its plasma
        glucose (stored records from its recent past); None: the meter's own simple model."""
        self.mol_per_l = mol_per_l
        self.new_reading_interval_s = new_reading_interval_s
        self.model = Glucose(self.rng.spawn(1)[0], float(self.rng.uniform(85.0, 130.0)))
        self._t0 = self.clock.now().replace(microsecond=0)
        self.records: list[StoredReading] = []
        self.next_sequence = 0
        self.measurement_char: Characteristic[bytes] = self.notifying(uuids.GLUCOSE_MEASUREMENT)
        self.context_char: Characteristic[bytes] = self.notifying(uuids.GLUCOSE_CONTEXT)
        self.racp = RacpServer(
            self,
            self,
            cccd_error=GLS_CCCD_IMPROPERLY_CONFIGURED,
            in_progress_error=GLS_PROCEDURE_ALREADY_IN_PROGRESS,
            record_interval_s=record_interval_s,
        )
        spacing = RECORD_SPACING
        if patient is not None and records:
            # the stored records must fall inside the patient's glucose history
            history_s = patient.now_s() - patient.earliest_s
            spacing = min(spacing, timedelta(seconds=int(history_s / (records + 1))))
        start = self._t0 - spacing * records
        for i in range(records):
            self.add_reading(start + spacing * i)

    # ------------------------------------------------------------------ records

    def add_reading(self, when: datetime | None = None, *, control_solution: bool = False) -> StoredReading:
        """Take a reading (now, by default) and store it under the next sequence number."""
        when = (when or self.clock.now()).replace(microsecond=0)
        seq = self.next_sequence
        self.next_sequence = (seq + 1) & 0xFFFF
        t_s = max((when - self._t0).total_seconds() + 86_400.0, 0.0)
        if control_solution:
            reading = StoredReading(
                seq,
                when,
                int(self.rng.integers(95, 125)),
                GlucoseType.CONTROL_SOLUTION,
                SampleLocation.CONTROL_SOLUTION,
            )
        else:
            context = None
            if seq % CONTEXT_EVERY == 0:
                context = GlucoseContext(seq, carbohydrate=(1, Num(int(self.rng.integers(20, 80)), -3)), meal=1)
            reading = StoredReading(seq, when, self._spot_check(when, t_s), context=context)
        self.records.append(reading)
        return reading

    def _spot_check(self, when: datetime, t_s: float) -> int:
        if self.patient is None:
            return self.model.spot_check(t_s)
        ago_s = (self.clock.now() - when).total_seconds()
        return round(self.patient.meter_check(self.patient.now_s() - ago_s))

    def keys(self) -> list[int]:
        return [r.sequence for r in self.records]

    def record_notifications(self, reading: StoredReading) -> list[Notification]:
        out: list[Notification] = [
            (
                self.measurement_char,
                reading.measurement(mol_per_l=self.mol_per_l).to_bytes(),
                0 if reading.context else 1,
            )
        ]
        if reading.context is not None:
            out.append((self.context_char, reading.context.to_bytes(), 1))
        return out

    def notifications(self, indices: Sequence[int], connection: Connection) -> Iterator[Notification]:
        for i in list(indices):
            if i < len(self.records):
                yield from self.record_notifications(self.records[i])

    def delete(self, indices: Sequence[int]) -> None:
        drop = set(indices)
        self.records = [r for i, r in enumerate(self.records) if i not in drop]

    # ------------------------------------------------------------------ faults

    def reset_meter(self, new_records: int = 0) -> None:
        """Sequence-reset fault: forget every record, restart numbering at 0, then take
        ``new_records`` fresh readings (dated after the old ones)."""
        self.records = []
        self.next_sequence = 0
        now = self.clock.now()
        for i in range(new_records):
            self.add_reading(now - timedelta(minutes=new_records - i))

    def add_control_solution(self, count: int = 1) -> list[StoredReading]:
        return [self.add_reading(control_solution=True) for _ in range(count)]

    # ------------------------------------------------------------------ GATT

    def profile_services(self) -> list[Service]:
        return [
            Service(
                uuids.GLUCOSE_SERVICE,
                [
                    self.measurement_char,
                    self.context_char,
                    self.readable(uuids.GLUCOSE_FEATURE, lambda: glucose_feature(FEATURES)),
                    self.racp.characteristic,
                ],
            )
        ]

    def on_disconnection(self, connection: Connection) -> None:
        self.racp.on_disconnection(connection)

    async def measure(self) -> StoredReading:
        """Take a reading now, store it, and notify it to connected subscribers."""
        reading = self.add_reading()
        for characteristic, value, _ in self.record_notifications(reading):
            await self.notify_measurement(characteristic, value)
        return reading

    async def run(self) -> None:
        if self.new_reading_interval_s is None:
            return
        while True:
            await asyncio.sleep(self.new_reading_interval_s)
            await self.measure()
