"""Polar H10-style ECG strap: the PMD service (control point read/write/indicate, data notify)
streaming 130 Hz ECG frames of int24 µV, plus the Heart Rate Service of the strap."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from bumble.device import Connection
from bumble.gatt import Characteristic, Service

from firmware_sim.ble import uuids
from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.identity import DeviceIdentity
from firmware_sim.ble.peripheral import ATT_CCCD_IMPROPERLY_CONFIGURED, att_error
from firmware_sim.ble.wire.heart_rate import SensorContact
from firmware_sim.ble.wire.pmd import (
    EcgFrame,
    PmdOp,
    PmdSetting,
    PmdStatus,
    PmdType,
    pmd_features,
    pmd_response,
    pmd_settings,
    polar_ns,
)
from firmware_sim.physiology import Ecg

if TYPE_CHECKING:
    from firmware_sim.ward import EcgStream, PatientView

ECG_RATE_HZ = 130
ECG_RESOLUTION_BITS = 14
SAMPLES_PER_FRAME = 73
FRAME_HEADER = 10


class EcgStrap(HeartRateStrap):
    """Streams only while a central has started ECG; stops on ``03 00`` or on disconnect."""

    profile_service_uuids = (uuids.PMD_SERVICE,)

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        seed: int = 0,
        clock: DeviceClock | None = None,
        interval_s: float = 1.0,
        patient: PatientView | None = None,
    ) -> None:
        super().__init__(identity, seed=seed, clock=clock, interval_s=interval_s, patient=patient)
        self.ecg = Ecg(self.rng.spawn(1)[0], fs=ECG_RATE_HZ)
        self.ecg_stream: EcgStream | None = patient.ecg_stream(ECG_RATE_HZ) if patient is not None else None
        """The patient's ECG at 130 Hz (a cursor on the ward's synth); re-synced when a stream starts."""
        self.control_char = self.control_point(uuids.PMD_CONTROL_POINT, self._write_control, read=self._read_control)
        self.data_char: Characteristic[bytes] = self.notifying(uuids.PMD_DATA)
        self._stream: asyncio.Task[None] | None = None
        self._stream_connection: Connection | None = None
        self.frames_sent = 0

    def profile_services(self) -> list[Service]:
        pmd = Service(uuids.PMD_SERVICE, [self.control_char, self.data_char])
        return [self.heart_rate_service(), pmd]

    @property
    def streaming(self) -> bool:
        return self._stream is not None and not self._stream.done()

    async def _read_control(self, _connection: Connection) -> bytes:
        return pmd_features([PmdType.ECG, PmdType.ACC])

    async def _write_control(self, connection: Connection, value: bytes) -> None:
        if not self.subscribed(connection, self.control_char, indicate=True):
            raise att_error(ATT_CCCD_IMPROPERLY_CONFIGURED, "PMD control point indications not enabled")
        reply = self._control(connection, value)
        self.spawn(self.device.indicate_subscriber(connection, self.control_char, reply))

    def _control(self, connection: Connection, value: bytes) -> bytes:
        if len(value) < 2:
            return pmd_response(value[0] if value else 0, 0, PmdStatus.INVALID_LENGTH)
        op, kind = value[0], value[1]
        if op not in (PmdOp.GET_SETTINGS, PmdOp.START, PmdOp.STOP):
            return pmd_response(op, kind, PmdStatus.INVALID_OP_CODE)
        if kind != PmdType.ECG:
            status = PmdStatus.NOT_SUPPORTED if kind == PmdType.ACC else PmdStatus.INVALID_MEASUREMENT_TYPE
            return pmd_response(op, kind, status)
        if op == PmdOp.GET_SETTINGS:
            params = pmd_settings(
                [(PmdSetting.SAMPLE_RATE, [ECG_RATE_HZ]), (PmdSetting.RESOLUTION, [ECG_RESOLUTION_BITS])]
            )
            return pmd_response(op, kind, PmdStatus.SUCCESS, params=params)
        if op == PmdOp.STOP:
            self._stop_stream()
            return pmd_response(op, kind, PmdStatus.SUCCESS)
        status = self._check_start(value[2:])
        if status is PmdStatus.SUCCESS:
            if self.streaming:
                return pmd_response(op, kind, PmdStatus.ALREADY_IN_STATE)
            self._stream_connection = connection
            self._stream = self.spawn(self._run_stream(connection))
        return pmd_response(op, kind, status)

    @staticmethod
    def _check_start(settings: bytes) -> PmdStatus:
        wanted = {PmdSetting.SAMPLE_RATE: ECG_RATE_HZ, PmdSetting.RESOLUTION: ECG_RESOLUTION_BITS}
        errors = {
            PmdSetting.SAMPLE_RATE: PmdStatus.INVALID_SAMPLE_RATE,
            PmdSetting.RESOLUTION: PmdStatus.INVALID_RESOLUTION,
        }
        off = 0
        while off < len(settings):
            if off + 2 > len(settings):
                return PmdStatus.INVALID_LENGTH
            setting, count = settings[off], settings[off + 1]
            off += 2
            if off + 2 * count > len(settings) or count != 1:
                return PmdStatus.INVALID_LENGTH
            (v,) = struct.unpack_from("<H", settings, off)
            off += 2
            if setting in wanted and v != wanted[PmdSetting(setting)]:
                return errors[PmdSetting(setting)]
            if setting not in wanted:
                return PmdStatus.INVALID_PARAMETER
        return PmdStatus.SUCCESS

    def ecg_samples(self, n: int) -> npt.NDArray[np.int32]:
        """The next ``n`` ECG samples (µV): the patient's (lead-off clears the HR service's sensor
        contact) or the strap's own model at its current heart rate."""
        if self.ecg_stream is None:
            return self.ecg.frame(float(self.source.model.value), n)
        chunk = self.ecg_stream.take(n)
        self.contact = SensorContact.NO_CONTACT if bool(chunk.lead_off.any()) else SensorContact.CONTACT
        return chunk.uv

    def _stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self._stream = None
        self._stream_connection = None

    def on_disconnection(self, connection: Connection) -> None:
        if connection is self._stream_connection:
            self._stop_stream()

    async def _run_stream(self, connection: Connection) -> None:
        """Frames of up to 73 samples (fewer if the ATT MTU is small), paced at 130 Hz of the
        patient's time — the ward's, ``speed`` times faster than the loop clock, so that the strap's ECG
        covers every beat its heart-rate service reports — or of the loop clock without a patient;
        timestamps advance by the sample count on the device clock (which follows the ward)."""
        loop = asyncio.get_running_loop()
        period_ns = 1e9 / ECG_RATE_HZ * (1.0 + self.clock.drift_ppm * 1e-6)
        start_ns = polar_ns(self.clock.now())
        if self.patient is not None:
            self.ecg_stream = self.patient.ecg_stream(ECG_RATE_HZ)
        total = 0
        deadline = loop.time()
        while True:
            n = max(1, min(SAMPLES_PER_FRAME, (connection.att_mtu - 3 - FRAME_HEADER) // 3))
            deadline += n / (ECG_RATE_HZ * (self.patient.speed if self.patient is not None else 1.0))
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            samples = self.ecg_samples(n)
            total += n
            last_ns = start_ns + round(total * period_ns)
            frame = EcgFrame(last_ns, samples.tolist()).to_bytes()
            await self.notify_measurement(self.data_char, frame, connection=connection)
            self.frames_sent += 1
