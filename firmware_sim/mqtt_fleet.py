"""``ds4h-sim mqtt``: N simulated 5G devices publishing SenML frames to a broker, in real time or flooding.

Real time: every device is a cardiac monitor on a patient (firmware_sim.physiology): one frame per second
with heart rate (1/s), SpO2 (ratio) and an ECG strip at ``ecg_fs`` Hz; a CGM device (``kind="cgm"``)
sends interstitial glucose every ``cgm_interval_s``. With a ward (``patients`` or ``MqttFleet(…,
ward=…)``, :mod:`firmware_sim.ward`) device ``i`` observes ``ward.patient(i mod patients)``: heart rate
from its beat train, SpO2 from its model, the ECG samples due since the last frame from the ward's
synth, and a CGM sends its sensor's readings as they fall due (each with its own time; none while the
sensor warms up). A research glucose sensor (``kind="nig"``, docs/research-sensor.md) sends a raw S21
sweep and its research-only estimate every ``nig_interval_s`` (all devices' sweeps computed at once by
one :class:`~firmware_sim.models.nig_sensor.NigSensor`), from its ward patient's plasma glucose when
there is a ward. Flood: every device sends ``flood`` frames as fast
as its buffer allows — one heart-rate reading each, or ``flood_ecg_samples`` ECG samples each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from paho.mqtt.enums import MQTTProtocolVersion

from firmware_sim.device_signing import DeviceSigner, signing_key_path
from firmware_sim.models.nig_sensor import NigSensor, encode_s21
from firmware_sim.mqtt_device import AckLog, DeviceTls, MqttDevice, readings_topic
from firmware_sim.physiology import Patient
from firmware_sim.senml import CBOR, Record, ecg_records, nig_records
from firmware_sim.ward import CgmStream, EcgStream, PatientView, Ward

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetOptions:
    host: str
    port: int
    pki_dir: Path | None
    """``<state_dir>/pki`` of the site: ``ca.crt`` and ``devices/<id>.crt|.key``. None: no TLS (loopback only)."""
    device_ids: Sequence[str]
    kind: str = "cardiac"
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5
    content_type: str = CBOR
    ack_log: Path | None = None
    ecg_fs: int = 130
    cgm_interval_s: float = 300.0
    seed: int = 1
    resend_after_s: float = 5.0
    reboot_after: int = 0
    """Reboot each device after this many frames (0: never) — tests a boot change mid-stream."""
    patients: int | None = None
    """Simulated patients behind the devices (a :class:`~firmware_sim.ward.Ward` seeded ``seed``); None:
    each device its own simple patient, as before."""
    nig_interval_s: float = 60.0
    """``kind="nig"``: seconds between sweeps."""
    sign: bool | None = None
    """Sign frames (COSE_Sign1) with ``<pki_dir>/devices/<id>.signing.key``: None = when that key exists;
    True = required (a missing key is an error); False = never."""


def device_signer(pki_dir: Path | None, device_id: str, sign: bool | None) -> DeviceSigner | None:
    """The device's signer, by the rule of :attr:`FleetOptions.sign`."""
    if sign is False:
        return None
    path = signing_key_path(pki_dir, device_id) if pki_dir is not None else None
    if path is None or not path.exists():
        if sign:
            raise FileNotFoundError(f"no signing key for {device_id}: {path} (pki issue-device --signing-key)")
        return None
    return DeviceSigner.load(path, readings_topic(device_id))


def device_tls(pki_dir: Path | None, device_id: str) -> DeviceTls | None:
    if pki_dir is None:
        return None
    return DeviceTls(
        pki_dir / "ca.crt", pki_dir / "devices" / f"{device_id}.crt", pki_dir / "devices" / f"{device_id}.key"
    )


@dataclass(slots=True)
class _Observer:
    """What one device observes of its ward patient."""

    patient: PatientView
    ecg: EcgStream | None
    cgm: CgmStream | None


def ward_frame(
    patient: PatientView, ecg: EcgStream | None, cgm: CgmStream | None, ecg_fs: int, *, speed: float = 1.0
) -> list[Record]:
    """The SenML measurements a 5G device sends now from its ward patient: the CGM readings due since its
    last frame (each timed relative to the frame, ward seconds ÷ ``speed``), else heart rate, SpO2 and the
    ECG samples due."""
    hr: Record = {"n": "heart-rate", "u": "1/s", "v": round(patient.heart_rate() / 60, 4)}
    if cgm is not None:
        now_s = patient.now_s()
        readings: list[Record] = [
            {"n": "cgm-glucose", "u": "kg/m3", "v": r.mg_dl / 100, "t": round((r.time_s - now_s) / speed, 3)}
            for r in cgm.take(now_s)
            if r.mg_dl is not None
        ]
        return readings or [hr]
    assert ecg is not None
    samples = ecg.take_due().uv
    return [
        hr,
        {"n": "spo2", "u": "/", "v": round(patient.spo2()) / 100},
        *(ecg_records(samples, ecg_fs) if samples.size else []),
    ]


class MqttFleet:
    def __init__(self, opts: FleetOptions, *, ward: Ward | None = None) -> None:
        self.opts = opts
        self.ack_log = AckLog(opts.ack_log) if opts.ack_log is not None else None
        self.devices = [
            MqttDevice(
                d,
                opts.host,
                opts.port,
                device_tls(opts.pki_dir, d),
                protocol=opts.protocol,
                content_type=opts.content_type,
                ack_log=self.ack_log,
                resend_after_s=opts.resend_after_s,
                signer=device_signer(opts.pki_dir, d, opts.sign),
            )
            for d in opts.device_ids
        ]
        self.patients = [Patient(i, opts.seed) for i in range(len(self.devices))]
        for p in self.patients:
            p.ecg.fs = opts.ecg_fs
        self._next_cgm = [0.0] * len(self.devices)
        if ward is None and opts.patients is not None:
            ward = Ward(opts.patients, seed=opts.seed)
        self.ward = ward
        self._observers: list[_Observer] = []
        if ward is not None:
            for i in range(len(self.devices)):
                view = ward.patient(i % ward.patients)
                cgm = opts.kind == "cgm"
                ecg = opts.kind == "cardiac"
                self._observers.append(
                    _Observer(view, view.ecg_stream(opts.ecg_fs) if ecg else None, view.cgm_stream() if cgm else None)
                )
        self._nig = NigSensor(len(self.devices), opts.seed) if opts.kind == "nig" else None
        self._nig_next = -float("inf")
        self._nig_out: list[list[Record]] = [[] for _ in self.devices]
        self.started = time.monotonic()

    def start(self, connect_timeout_s: float = 30.0) -> None:
        for d in self.devices:
            d.start()
        deadline = time.monotonic() + connect_timeout_s
        for d in self.devices:
            if not d.connected.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"device {d.device_id} could not connect to {self.opts.host}:{self.opts.port}")

    def close(self) -> None:
        for d in self.devices:
            d.close()
        if self.ack_log is not None:
            self.ack_log.close()

    # --- real time ---------------------------------------------------------------------------------
    def run_realtime(self, duration_s: float | None, stop: threading.Event) -> None:
        next_tick = time.monotonic()
        frames = 0
        while not stop.is_set() and (duration_s is None or time.monotonic() - self.started < duration_s):
            self.tick(time.time())
            frames += 1
            next_tick += 1.0
            stop.wait(max(0.0, next_tick - time.monotonic()))

    def tick(self, now: float) -> None:
        """One real-time step: every device sends what is due at ``now`` (Unix s; nothing when nothing is due)."""
        for i, d in enumerate(self.devices):
            self._maybe_reboot(d)
            m = self._measurements(i, now)
            if m:
                d.send(now, m)
            d.resend_due()

    def _measurements(self, i: int, now: float) -> list[Record]:
        if self._nig is not None:
            return self._nig_measurements(i, now)
        if self._observers:
            return self._ward_measurements(self._observers[i])
        p = self.patients[i]
        if self.opts.kind == "cgm":
            if now < self._next_cgm[i]:
                return [{"n": "heart-rate", "u": "1/s", "v": round(p.heart_rate.step() / 60, 4)}]
            self._next_cgm[i] = now + self.opts.cgm_interval_s
            return [{"n": "cgm-glucose", "u": "kg/m3", "v": p.glucose.cgm(now) / 100}]
        hr = p.heart_rate.step()
        samples = p.ecg.frame(hr)
        return [
            {"n": "heart-rate", "u": "1/s", "v": round(hr / 60, 4)},
            {"n": "spo2", "u": "/", "v": p.spo2.step() / 100},
            *ecg_records(samples, self.opts.ecg_fs),
        ]

    def _nig_measurements(self, i: int, now: float) -> list[Record]:
        """Device ``i``'s sweep when one is due: the sweeps of all devices are computed together."""
        assert self._nig is not None
        t = self.ward.now_s() if self.ward is not None else now
        if i == 0 and t >= self._nig_next:
            if self.ward is not None:
                plasma = self.ward.plasma(t)[[o.patient.index for o in self._observers]]
            else:
                plasma = np.array([p.glucose.level(now) for p in self.patients])
            sw = self._nig.sweep(t, plasma)
            self._nig_out = [
                nig_records(
                    encode_s21(self._nig.f_start_hz, self._nig.f_step_hz, sw.magnitude_db[k], sw.phase_deg[k]),
                    float(sw.estimate_mg_dl[k]),
                )
                for k in range(len(self.devices))
            ]
            self._nig_next = t + self.opts.nig_interval_s
        out, self._nig_out[i] = self._nig_out[i], []
        return out

    def _ward_measurements(self, o: _Observer) -> list[Record]:
        return ward_frame(o.patient, o.ecg, o.cgm, self.opts.ecg_fs)

    def _maybe_reboot(self, d: MqttDevice) -> None:
        if self.opts.reboot_after and d.stats.frames and d.stats.frames % self.opts.reboot_after == 0:
            d.reboot()

    # --- flood -------------------------------------------------------------------------------------
    def run_flood(self, frames: int, ecg_samples: int, stop: threading.Event) -> None:
        """Each device sends ``frames`` frames as fast as its buffer takes them."""
        step = max(1.0, ecg_samples / self.opts.ecg_fs)  # frames never overlap in time
        t0 = time.time() - frames * step  # distinct, past times: one per frame and device
        wave = np.zeros(ecg_samples, dtype=np.int32) if ecg_samples else None
        if wave is not None:
            wave[:] = (np.sin(np.arange(ecg_samples) / 5) * 800).astype(np.int32)
        for n in range(frames):
            if stop.is_set():
                return
            t = t0 + n * step
            for d in self.devices:
                self._maybe_reboot(d)
                m: list[Record] = (
                    ecg_records(wave, self.opts.ecg_fs)
                    if wave is not None
                    else [{"n": "heart-rate", "u": "1/s", "v": 1.2}]
                )
                while not d.send(t, m):
                    if stop.wait(0.05):
                        return
                    d.resend_due()
            if n % 500 == 0:
                for d in self.devices:
                    d.resend_due()

    def settle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(d.wait_settled(max(0.0, deadline - time.monotonic())) for d in self.devices)

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        total: dict[str, int] = {}
        for d in self.devices:
            for k, v in d.stats.as_dict().items():
                total[k] = total.get(k, 0) + v
        pending = sum(d.pending for d in self.devices)
        return {
            "mode": "mqtt",
            "devices": len(self.devices),
            **total,
            "pending": pending,
            "elapsed_s": round(elapsed, 3),
            "acked_per_s": round(total.get("acked", 0) / elapsed, 1) if elapsed > 0 else None,
        }
