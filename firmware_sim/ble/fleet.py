"""Build a set of simulated peripherals from counts per profile, a seed and fault specs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from firmware_sim.ble.clock import DeviceClock
from firmware_sim.ble.devices.blood_pressure import BloodPressureCuff
from firmware_sim.ble.devices.cgm import Cgm
from firmware_sim.ble.devices.ecg import EcgStrap
from firmware_sim.ble.devices.glucose_meter import GlucoseMeter
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.devices.pulse_oximeter import PulseOximeter
from firmware_sim.ble.faults import FaultKind, FaultSpec
from firmware_sim.ble.identity import Profile, device_identity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ward import PatientView, Ward

PROFILE_ORDER = (
    Profile.HEART_RATE,
    Profile.BLOOD_PRESSURE,
    Profile.PULSE_OXIMETER,
    Profile.GLUCOSE_METER,
    Profile.CGM,
    Profile.ECG,
)


def apply_fault(p: SimPeripheral, spec: FaultSpec) -> bool:
    """Arm ``spec`` on ``p``; False if the fault does not apply to that device."""
    kind = spec.kind
    if kind is FaultKind.HANG:
        p.faults.hang()
    elif kind is FaultKind.GARBAGE:
        p.faults.garbage += spec.count
    elif kind is FaultKind.DISCONNECT_MID_RACP and isinstance(p, GlucoseMeter | Cgm):
        p.faults.racp_disconnect_after = spec.count
    elif kind is FaultKind.BAD_CRC and isinstance(p, Cgm) and p.e2e_crc:
        p.corrupt_crc(spec.count)
    elif kind is FaultKind.SEQUENCE_RESET and isinstance(p, GlucoseMeter):
        p.reset_meter(spec.count)
    elif kind is FaultKind.CONTROL_SOLUTION and isinstance(p, GlucoseMeter):
        p.add_control_solution(spec.count)
    else:
        return False
    return True


@dataclass(frozen=True, slots=True)
class FleetOptions:
    seed: int = 0
    records: int = 10
    """Stored records per glucose meter / CGM."""
    cgm_e2e_crc: bool = True
    realtime: bool = True
    """Real-device pacing (HR 1 s, oximeter 1 s, BP 60 s, CGM 60 s); False = fast pacing for tests."""
    hr_interval_s: float | None = None
    """Seconds between heart-rate notifications, overriding the pacing above (e.g. for load tests)."""
    patients: int | None = None
    """Put a ward of this many simulated patients (:mod:`firmware_sim.ward`) behind the devices: device
    ``k`` of each profile observes patient ``k mod patients``. None: every device has its own simple
    model (one patient per device, as before)."""


def build_fleet(
    counts: Mapping[Profile, int], options: FleetOptions = FleetOptions(), *, ward: Ward | None = None
) -> list[SimPeripheral]:
    """Devices in a stable order (profile, then index): identities depend only on the seed.

    With a ``ward`` (or ``options.patients``, which builds ``Ward(patients, seed=options.seed)``), device
    ``k`` of each profile observes ``ward.patient(k mod ward.patients)`` — so patient 0 wears strap 0,
    ECG 0, CGM 0 … — and the devices' clocks follow the ward's simulated time.
    """
    fast = not options.realtime
    if ward is None and options.patients is not None:
        if options.patients < 1:
            raise ValueError(f"patients must be >= 1, not {options.patients}")
        ward = Ward(options.patients, seed=options.seed)
    if options.hr_interval_s is not None and not options.hr_interval_s > 0:
        raise ValueError(f"hr_interval_s must be > 0, not {options.hr_interval_s}")
    out: list[SimPeripheral] = []
    for profile in PROFILE_ORDER:
        for index in range(counts.get(profile, 0)):
            ident = device_identity(profile, index, options.seed)
            seed = options.seed
            patient: PatientView | None = None
            clock: DeviceClock | None = None
            if ward is not None:
                patient = ward.patient(index % ward.patients)
                clock = DeviceClock(host_time=ward.epoch)
            p: SimPeripheral
            if profile is Profile.HEART_RATE:
                hr_interval = options.hr_interval_s
                if hr_interval is None:
                    hr_interval = 0.05 if fast else 1.0
                p = HeartRateStrap(ident, seed=seed, interval_s=hr_interval, clock=clock, patient=patient)
            elif profile is Profile.BLOOD_PRESSURE:
                p = BloodPressureCuff(
                    ident,
                    seed=seed,
                    interval_s=0.5 if fast else 60.0,
                    cuff_step_s=0.01 if fast else 0.2,
                    clock=clock,
                    patient=patient,
                )
            elif profile is Profile.PULSE_OXIMETER:
                p = PulseOximeter(
                    ident,
                    seed=seed,
                    interval_s=0.05 if fast else 1.0,
                    spot_check_every=5 if fast else 30,
                    clock=clock,
                    patient=patient,
                )
            elif profile is Profile.GLUCOSE_METER:
                p = GlucoseMeter(ident, seed=seed, records=options.records, clock=clock, patient=patient)
            elif profile is Profile.CGM:
                p = Cgm(
                    ident,
                    seed=seed,
                    records=options.records,
                    e2e_crc=options.cgm_e2e_crc,
                    interval_s=0.5 if fast else 60.0,
                    clock=clock,
                    patient=patient,
                )
            else:
                p = EcgStrap(ident, seed=seed, interval_s=0.05 if fast else 1.0, clock=clock, patient=patient)
            out.append(p)
    addresses = [p.identity.address for p in out]
    if len(set(addresses)) != len(addresses):
        raise ValueError("address collision in the fleet; pick another seed")
    return out


def arm_faults(peripherals: Sequence[SimPeripheral], specs: Sequence[FaultSpec]) -> int:
    """Arm every spec on every matching device it applies to; returns how many were armed."""
    return sum(apply_fault(p, s) for s in specs for p in peripherals if s.matches(p))
