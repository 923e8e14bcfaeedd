"""Continuous glucose monitor: a reading every ``interval_s`` (notified, and stored for RACP by
time offset), multi-record notifications for RACP reports, E2E-CRC when the feature says so,
session start/run time, status, and a minimal Specific Ops Control Point."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.peripheral import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_PROCEDURE_ALREADY_IN_PROGRESS,
    READABLE,
    WRITEABLE,
    Properties,
    SimPeripheral,
    att_error,
)
from firmware_sim.ble.racp_server import Notification, RacpServer
from firmware_sim.ble.wire.cgm import (
    CgmFeature,
    CgmMeasurement,
    SocpOpCode,
    SocpResponse,
    cgm_feature,
    cgm_session_run_time,
    cgm_session_start_time,
    cgm_status,
    socp,
    socp_response,
)
from firmware_sim.ble.wire.crc import crc16_mcrf4xx
from firmware_sim.ble.wire.ieee11073 import Num, Special, Value
from firmware_sim.ble.wire.time_fields import parse_date_time
from firmware_sim.models.cgm_sensor import CgmFlag
from firmware_sim.physiology import Glucose

if TYPE_CHECKING:
    from firmware_sim.ward import CgmReading, CgmStream, PatientView

CGM_MISSING_CRC = 0x80
CGM_INVALID_CRC = 0x81
SESSION_RUN_TIME_H = 336
RECORD_SPACING_MIN = 5
_SOCP_OPS = frozenset(int(o) for o in SocpOpCode)
CAL_TEMP_CALIBRATION_NOT_ALLOWED = 0x02
"""Cal/Temp annunciation bit sent with the absent values of a warming-up sensor."""
WARNING_BELOW_DEVICE_RANGE = 0x40
WARNING_ABOVE_DEVICE_RANGE = 0x80
BASE_FEATURES = CgmFeature.TREND | CgmFeature.QUALITY | CgmFeature.LOW_BATTERY | CgmFeature.SENSOR_MALFUNCTION


class Cgm(SimPeripheral):
    profile_service_uuids = (uuids.CGM_SERVICE,)

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        seed: int = 0,
        clock: DeviceClock | None = None,
        records: int = 12,
        e2e_crc: bool = True,
        interval_s: float = 60.0,
        record_interval_s: float = 0.0,
        patient: PatientView | None = None,
    ) -> None:
        super().__init__(identity, seed=seed, clock=clock)
        self.patient = patient
        """The simulated patient (:mod:`firmware_sim.ward`) whose CGM sensor readings (interstitial lag,
        noise, drift, warm-up) this device reports; None: its own simple model."""
        self.cgm_stream: CgmStream | None = patient.cgm_stream() if patient is not None else None
        self._last_mg_dl: float | None = None
        self.e2e_crc = e2e_crc
        self.interval_s = interval_s
        self.features = BASE_FEATURES | (CgmFeature.E2E_CRC if e2e_crc else CgmFeature(0))
        self.model = Glucose(self.rng.spawn(1)[0], float(self.rng.uniform(90.0, 140.0)))
        self.communication_interval_min = RECORD_SPACING_MIN
        now = self.clock.now().replace(second=0, microsecond=0)
        self.session_start: datetime = now - timedelta(minutes=RECORD_SPACING_MIN * records)
        """Device-clock instant the session started (time offset 0)."""
        self.session_start_reported = self.session_start
        """What Session Start Time reads (set by a collector's write)."""
        self.records: list[CgmMeasurement] = []
        if patient is None:
            for i in range(records):
                self.records.append(self._reading(RECORD_SPACING_MIN * i))
        else:
            for r in patient.cgm_recent(records):
                self.records.append(self._patient_record(r))
        self.measurement_char: Characteristic[bytes] = self.notifying(uuids.CGM_MEASUREMENT)
        self.racp = RacpServer(
            self,
            self,
            cccd_error=ATT_CCCD_IMPROPERLY_CONFIGURED,
            in_progress_error=ATT_PROCEDURE_ALREADY_IN_PROGRESS,
            record_interval_s=record_interval_s,
        )
        self.socp_char = self.control_point(uuids.CGM_SPECIFIC_OPS_CONTROL_POINT, self._write_socp)
        self.session_start_char: Characteristic[bytes] = Characteristic(
            uuids.CGM_SESSION_START_TIME,
            Properties.READ | Properties.WRITE,
            READABLE | WRITEABLE,
            self._session_start_value(),
        )

    # ------------------------------------------------------------------ readings

    def _reading(self, offset_min: int) -> CgmMeasurement:
        mg_dl = self.model.cgm(offset_min * 60.0)
        trend = Num.of(float(self.rng.normal(0.0, 1.0)), -1)
        quality = Num(int(self.rng.integers(85, 100)))
        return CgmMeasurement(Num(mg_dl), offset_min, trend=trend, quality=quality)

    def _patient_record(self, r: CgmReading) -> CgmMeasurement:
        """A sensor reading as a record, its time offset from the reading's age."""
        assert self.patient is not None
        age_min = round((self.patient.now_s() - r.time_s) / 60.0)
        last = self.records[-1].time_offset_min if self.records else -1
        offset = max(self.current_offset_min() - age_min, last + 1)
        glucose: Value
        trend: Value | None = None
        quality: Value | None = None
        if r.mg_dl is None:
            glucose = Special.NAN
        else:
            glucose = Num(round(r.mg_dl))
            if self._last_mg_dl is not None:
                trend = Num.of((r.mg_dl - self._last_mg_dl) / RECORD_SPACING_MIN, -1)
            quality = Num(int(self.rng.integers(85, 100)))
        self._last_mg_dl = r.mg_dl
        warning = (WARNING_BELOW_DEVICE_RANGE if r.flags & CgmFlag.BELOW_RANGE else 0) | (
            WARNING_ABOVE_DEVICE_RANGE if r.flags & CgmFlag.ABOVE_RANGE else 0
        )
        return CgmMeasurement(
            glucose,
            offset,
            cal_temp=CAL_TEMP_CALIBRATION_NOT_ALLOWED if r.flags & CgmFlag.WARMUP else None,
            warning=warning or None,
            trend=trend,
            quality=quality,
        )

    def current_offset_min(self) -> int:
        return max(0, int((self.clock.now() - self.session_start).total_seconds() // 60))

    def encode(self, record: CgmMeasurement) -> bytes:
        return record.to_bytes(e2e_crc=self.e2e_crc, corrupt_crc=self.e2e_crc and self.faults.take_bad_crc())

    def keys(self) -> list[int]:
        return [r.time_offset_min for r in self.records]

    def notifications(self, indices: Sequence[int], connection: Connection) -> Iterator[Notification]:
        """Records packed back to back into notifications of at most ATT_MTU − 3 bytes."""
        room = max(connection.att_mtu - 3, 20)
        batch: list[bytes] = []
        for i in list(indices):
            if i >= len(self.records):
                continue
            encoded = self.encode(self.records[i])
            if batch and sum(map(len, batch)) + len(encoded) > room:
                yield self.measurement_char, b"".join(batch), len(batch)
                batch = []
            batch.append(encoded)
        if batch:
            yield self.measurement_char, b"".join(batch), len(batch)

    def delete(self, indices: Sequence[int]) -> None:
        drop = set(indices)
        self.records = [r for i, r in enumerate(self.records) if i not in drop]

    def new_records(self) -> list[CgmMeasurement]:
        """With a patient: store (without notifying) every sensor reading due since the last call."""
        if self.cgm_stream is None:
            return []
        new = [self._patient_record(r) for r in self.cgm_stream.take()]
        self.records += new
        return new

    async def measure_due(self) -> list[CgmMeasurement]:
        """Store and notify every sensor reading due since the last call (with a patient), or take
        one reading now (without)."""
        if self.cgm_stream is None:
            return [await self.measure()]
        new = self.new_records()
        for record in new:
            await self.notify_measurement(self.measurement_char, self.encode(record))
        return new

    async def measure(self) -> CgmMeasurement:
        """Take a reading now (time offset strictly after the last), store and notify it.

        With a patient the sensor reads on its own grid (every 5 min): every reading due is stored
        and notified, and the newest record is returned."""
        if self.cgm_stream is not None:
            await self.measure_due()
            if not self.records:
                raise LookupError("no CGM reading in this session yet")
            return self.records[-1]
        last = self.records[-1].time_offset_min if self.records else -1
        record = self._reading(max(self.current_offset_min(), last + 1))
        self.records.append(record)
        await self.notify_measurement(self.measurement_char, self.encode(record))
        return record

    def corrupt_crc(self, count: int = 1) -> None:
        """Bad-CRC fault: the next ``count`` records carry a wrong E2E-CRC."""
        self.faults.bad_crc += count

    # ------------------------------------------------------------------ characteristics

    def _session_start_value(self) -> CharacteristicValue[bytes]:
        async def read(_connection: Connection) -> bytes:
            await self.guard()
            return cgm_session_start_time(
                self.session_start_reported, self.clock.time_zone_quarters, self.clock.dst, e2e_crc=self.e2e_crc
            )

        async def write(_connection: Connection, value: bytes) -> None:
            await self.guard()
            body = self._check_crc(value)
            if len(body) != 9:
                raise att_error(0x0D, "Session Start Time needs 9 bytes (+ CRC)")
            try:
                written = parse_date_time(body)
            except ValueError as exc:
                raise att_error(0xFF, "invalid date") from exc
            # The collector writes its current local time: the session started offset minutes ago.
            self.session_start_reported = written - timedelta(minutes=self.current_offset_min())

        return CharacteristicValue(read=read, write=write)

    def _check_crc(self, value: bytes) -> bytes:
        if not self.e2e_crc:
            return value
        if len(value) < 3:
            raise att_error(CGM_MISSING_CRC, "missing E2E-CRC")
        body, crc = value[:-2], int.from_bytes(value[-2:], "little")
        if crc16_mcrf4xx(body) != crc:
            raise att_error(CGM_INVALID_CRC, "invalid E2E-CRC")
        return body

    def _status(self) -> bytes:
        return cgm_status(self.current_offset_min(), 0, 0, 0, e2e_crc=self.e2e_crc)

    def profile_services(self) -> list[Service]:
        return [
            Service(
                uuids.CGM_SERVICE,
                [
                    self.measurement_char,
                    self.readable(uuids.CGM_FEATURE, lambda: cgm_feature(self.features)),
                    self.readable(uuids.CGM_STATUS, self._status),
                    self.session_start_char,
                    self.readable(
                        uuids.CGM_SESSION_RUN_TIME,
                        lambda: cgm_session_run_time(SESSION_RUN_TIME_H, e2e_crc=self.e2e_crc),
                    ),
                    self.racp.characteristic,
                    self.socp_char,
                ],
            )
        ]

    async def _write_socp(self, connection: Connection, value: bytes) -> None:
        if not self.subscribed(connection, self.socp_char, indicate=True):
            raise att_error(ATT_CCCD_IMPROPERLY_CONFIGURED, "SOCP indications not enabled")
        body = self._check_crc(value)
        if not body:
            raise att_error(0x0D, "empty SOCP write")
        op, operand = body[0], body[1:]
        if op == SocpOpCode.SET_COMMUNICATION_INTERVAL and len(operand) == 1:
            self.communication_interval_min = operand[0]
            reply = socp_response(op, SocpResponse.SUCCESS, e2e_crc=self.e2e_crc)
        elif op == SocpOpCode.GET_COMMUNICATION_INTERVAL and not operand:
            reply = socp(
                SocpOpCode.COMMUNICATION_INTERVAL_RESPONSE,
                bytes([self.communication_interval_min]),
                e2e_crc=self.e2e_crc,
            )
        elif op in (SocpOpCode.START_SESSION, SocpOpCode.STOP_SESSION) and not operand:
            if op == SocpOpCode.START_SESSION:
                self.session_start = self.session_start_reported = self.clock.now().replace(microsecond=0)
                self.records = []
            reply = socp_response(op, SocpResponse.SUCCESS, e2e_crc=self.e2e_crc)
        elif op in _SOCP_OPS:
            reply = socp_response(op, SocpResponse.INVALID_OPERAND, e2e_crc=self.e2e_crc)
        else:
            reply = socp_response(op, SocpResponse.OP_CODE_NOT_SUPPORTED, e2e_crc=self.e2e_crc)
        self.spawn(self.device.indicate_subscriber(connection, self.socp_char, reply))

    def on_disconnection(self, connection: Connection) -> None:
        self.racp.on_disconnection(connection)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.measure_due()
