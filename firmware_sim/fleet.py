"""A fleet of simulated patients and their devices, producing ingest batch maps.

Each patient ``pNN`` wears five devices (ids are deterministic for a given number of patients):

=============  ==================  ==========================================================
device id      kind                batches
=============  ==================  ==========================================================
``pNN-hr``     ``heart_rate``      one per second: ``heart_rate`` (/min)
``pNN-ecg``    ``ecg``             one per second: 250 samples of ``ecg`` (uV) at 250 Hz
``pNN-spo2``   ``pulse_oximeter``  one per second: ``spo2`` (%)
``pNN-cgm``    ``cgm``             one per CGM interval (5 min sim time): ``glucose_isf``
``pNN-bgm``    ``glucose_meter``   one per spot check (~4 h sim time):
                                   ``glucose_capillary_whole_blood``
=============  ==================  ==========================================================

Glucose readings below 70 mg/dL carry ``alert: true``. Every batch map follows
``docs/ingest.md``: ``device``, ``key = [boot_id, seq]``, ``clock`` (the device's now, ns),
``readings`` and/or ``waveforms`` (``i32le`` bytes).

Time: the devices stamp everything on their own clock, the ``now_ns`` given to :meth:`Fleet.tick`.
``speed`` only compresses *physiological* time (meals, glucose curve, CGM and spot-check
schedule): at ``speed=60`` a CGM reading comes every 5 s of device time. Heart rate, SpO2 and ECG
stay at their real rates so stamps never overlap and the gateway's clock correction stays sane.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from firmware_sim.physiology import ECG_FS_HZ, ECG_PERIOD_NS, HYPO_MG_DL, Patient

# Names copied from the gateway's vocabulary (a device only knows the wire, not the gateway).
METRIC_HEART_RATE = "heart_rate"
METRIC_SPO2 = "spo2"
METRIC_GLUCOSE_CGM = "glucose_isf"
METRIC_GLUCOSE_CAPILLARY = "glucose_capillary_whole_blood"
METRIC_ECG = "ecg"
UNIT_PER_MIN = "/min"
UNIT_PERCENT = "%"
UNIT_MG_DL = "mg/dL"
UNIT_UV = "uV"

KIND_HEART_RATE = "heart_rate"
KIND_CGM = "cgm"
KIND_GLUCOSE_METER = "glucose_meter"
KIND_ECG = "ecg"
KIND_PULSE_OXIMETER = "pulse_oximeter"

DEVICE_SUFFIX: dict[str, str] = {
    KIND_HEART_RATE: "hr",
    KIND_CGM: "cgm",
    KIND_GLUCOSE_METER: "bgm",
    KIND_ECG: "ecg",
    KIND_PULSE_OXIMETER: "spo2",
}
"""Device kind → device id suffix, in the order devices are listed per patient."""

DEVICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")

NS = 1_000_000_000
BatchMap = dict[str, Any]


def patient_prefix(index: int, patients: int) -> str:
    """``p01`` … ``p99``; three digits or more once there are 100 patients or more."""
    width = max(2, len(str(patients)))
    return f"p{index + 1:0{width}d}"


def new_boot_id() -> str:
    """A fresh boot id, as a device picks one each time it boots (16 hex digits)."""
    return secrets.token_hex(8)


@dataclass(slots=True)
class SimDevice:
    """One simulated device: its id, kind, current boot id and frame sequence counter."""

    device_id: str
    kind: str
    boot_id: str = field(default_factory=new_boot_id)
    seq: int = 0
    """Sequence number of the last frame sent in this boot (the first frame is 1)."""

    def next_key(self) -> list[str | int]:
        self.seq += 1
        return [self.boot_id, self.seq]

    def reboot(self) -> None:
        """Pick a new boot id and restart the frame counter, as a rebooted device does."""
        self.boot_id = new_boot_id()
        self.seq = 0


class _PatientDevices:
    def __init__(self, patient: Patient, prefix: str) -> None:
        self.patient = patient
        self.by_kind = {kind: SimDevice(f"{prefix}-{suffix}", kind) for kind, suffix in DEVICE_SUFFIX.items()}
        self.frames = 0
        """1 s frames emitted so far (heart rate, SpO2, ECG)."""
        self.cgm_readings = 0
        self.spot_checks = 0
        self.next_spot_sim_s = 0.0


class Fleet:
    """``patients`` simulated patients, each with the five devices listed in the module docstring.

    ``seed`` fixes the physiology (baselines, random walks, meals, noise); device ids depend only on
    ``patients``; boot ids are random per construction (a new process is a rebooted device).
    """

    def __init__(
        self,
        patients: int,
        *,
        seed: int = 0,
        speed: float = 1.0,
        cgm_interval_s: float = 300.0,
        spot_check_interval_s: float = 4 * 3600.0,
        start_ns: int | None = None,
    ) -> None:
        if patients < 1:
            raise ValueError("a fleet needs at least one patient")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if cgm_interval_s <= 0 or spot_check_interval_s <= 0:
            raise ValueError("intervals must be > 0")
        self.speed = float(speed)
        self.cgm_interval_s = float(cgm_interval_s)
        self.spot_check_interval_s = float(spot_check_interval_s)
        self.start_ns = start_ns
        self._patients = [_PatientDevices(Patient(i, seed), patient_prefix(i, patients)) for i in range(patients)]
        for p in self._patients:
            # First spot check somewhere in the first interval (sim time), then ~every interval.
            p.next_spot_sim_s = float(p.patient.schedule_uniform(0.05, 1.0)) * self.spot_check_interval_s

    @property
    def patients(self) -> int:
        return len(self._patients)

    def devices(self) -> list[tuple[str, str]]:
        """(device_id, kind) pairs, patient by patient."""
        return [(d.device_id, d.kind) for p in self._patients for d in p.by_kind.values()]

    def device(self, device_id: str) -> SimDevice:
        for p in self._patients:
            for d in p.by_kind.values():
                if d.device_id == device_id:
                    return d
        raise KeyError(device_id)

    def _device_ns(self, sim_s: float) -> int:
        """Device time of a point ``sim_s`` seconds of physiological time after the start."""
        assert self.start_ns is not None
        return self.start_ns + round(sim_s / self.speed * NS)

    def tick(self, now_ns: int) -> list[BatchMap]:
        """Batch maps that became due since the last tick (the first tick only starts the clock).

        1 s frames are due at their end: a frame covering ``[s, s + 1 s)`` is sent once
        ``now_ns >= s + 1 s``. CGM readings and spot checks are due at their own time stamp.
        """
        if self.start_ns is None:
            self.start_ns = now_ns
            return []
        out: list[BatchMap] = []
        for p in self._patients:
            out.extend(self._tick_patient(p, now_ns))
        return out

    def _tick_patient(self, p: _PatientDevices, now_ns: int) -> Iterator[BatchMap]:
        assert self.start_ns is not None
        # 1 s frames: heart rate, SpO2 and ECG share the patient's heart rate for that second.
        while self.start_ns + (p.frames + 1) * NS <= now_ns:
            t0 = self.start_ns + p.frames * NS
            p.frames += 1
            hr = p.patient.heart_rate.step()
            yield self._batch(
                p.by_kind[KIND_HEART_RATE],
                now_ns,
                readings=[_reading(METRIC_HEART_RATE, round(hr), UNIT_PER_MIN, t0)],
            )
            yield self._batch(
                p.by_kind[KIND_PULSE_OXIMETER],
                now_ns,
                readings=[_reading(METRIC_SPO2, p.patient.spo2.step(), UNIT_PERCENT, t0)],
            )
            samples = p.patient.ecg.frame(hr, ECG_FS_HZ)
            yield self._batch(
                p.by_kind[KIND_ECG],
                now_ns,
                waveforms=[
                    {
                        "metric": METRIC_ECG,
                        "u": UNIT_UV,
                        "t0": t0,
                        "period": ECG_PERIOD_NS,
                        "i32le": samples.astype("<i4").tobytes(),
                    }
                ],
            )
        # CGM: a reading every cgm_interval_s of sim time (the first one after one interval).
        while True:
            sim_s = (p.cgm_readings + 1) * self.cgm_interval_s
            t = self._device_ns(sim_s)
            if t > now_ns:
                break
            p.cgm_readings += 1
            yield self._batch(
                p.by_kind[KIND_CGM],
                now_ns,
                readings=[_glucose(METRIC_GLUCOSE_CGM, p.patient.glucose.cgm(sim_s), t)],
            )
        # Glucose meter: spot checks at jittered intervals of sim time.
        while True:
            sim_s = p.next_spot_sim_s
            t = self._device_ns(sim_s)
            if t > now_ns:
                break
            p.spot_checks += 1
            p.next_spot_sim_s += float(p.patient.schedule_uniform(0.5, 1.5)) * self.spot_check_interval_s
            yield self._batch(
                p.by_kind[KIND_GLUCOSE_METER],
                now_ns,
                readings=[_glucose(METRIC_GLUCOSE_CAPILLARY, p.patient.glucose.spot_check(sim_s), t)],
            )

    @staticmethod
    def _batch(
        dev: SimDevice,
        now_ns: int,
        *,
        readings: list[dict[str, Any]] | None = None,
        waveforms: list[dict[str, Any]] | None = None,
    ) -> BatchMap:
        b: BatchMap = {"device": dev.device_id, "key": dev.next_key()}
        if readings:
            b["readings"] = readings
        if waveforms:
            b["waveforms"] = waveforms
        return b


def _reading(metric: str, value: int | float, unit: str, t_ns: int, *, precision: int = 0) -> dict[str, Any]:
    return {"metric": metric, "v": value, "u": unit, "t": t_ns, "p": precision}


def _glucose(metric: str, mg_dl: int, t_ns: int) -> dict[str, Any]:
    r = _reading(metric, mg_dl, UNIT_MG_DL, t_ns)
    if mg_dl < HYPO_MG_DL:
        r["alert"] = True
    return r
