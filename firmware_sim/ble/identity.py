"""Stable device identities: the same (seed, profile, index) always gives the same address,
serial and name."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

MANUFACTURER = "DS4H Simulated Devices"
FIRMWARE_REVISION = "sim-1.0.0"
HARDWARE_REVISION = "1.0"


class Profile(enum.StrEnum):
    HEART_RATE = "heart-rate"
    BLOOD_PRESSURE = "blood-pressure"
    PULSE_OXIMETER = "pulse-oximeter"
    GLUCOSE_METER = "glucose-meter"
    CGM = "cgm"
    ECG = "ecg"


_CODES = {
    Profile.HEART_RATE: ("HR", "SIM-HRS-1"),
    Profile.BLOOD_PRESSURE: ("BP", "SIM-BPS-1"),
    Profile.PULSE_OXIMETER: ("SPO2", "SIM-PLX-1"),
    Profile.GLUCOSE_METER: ("GLU", "SIM-GLS-1"),
    Profile.CGM: ("CGM", "SIM-CGM-1"),
    Profile.ECG: ("ECG", "SIM-PMD-H10"),
}


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    profile: Profile
    index: int
    address: str
    """Static random address, most significant octet first (two top bits set)."""
    name: str
    serial: str
    model: str
    manufacturer: str = MANUFACTURER
    firmware: str = FIRMWARE_REVISION
    hardware: str = HARDWARE_REVISION

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile.value,
            "index": self.index,
            "address": self.address,
            "name": self.name,
            "serial": self.serial,
            "model": self.model,
            "manufacturer": self.manufacturer,
            "firmware": self.firmware,
        }


def device_identity(profile: Profile, index: int, seed: int) -> DeviceIdentity:
    digest = hashlib.sha256(f"ds4h-sim/ble/{seed}/{profile.value}/{index}".encode()).digest()
    octets = bytearray(digest[:6])
    octets[0] |= 0xC0  # static random address
    code, model = _CODES[profile]
    tag = digest[6:10].hex().upper()
    return DeviceIdentity(
        profile=profile,
        index=index,
        address=":".join(f"{b:02X}" for b in octets),
        name=f"{code} {tag[:4]}",
        serial=f"SIM{code}{tag}",
        model=model,
    )
