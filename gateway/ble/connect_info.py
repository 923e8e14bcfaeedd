"""What the gateway reads right after every connect: the device's clock, identity and battery.

- Current Time (0x2A2B) and Local Time Information (0x2A0F) → the connection's
  :class:`~drivers.sdk.clock.DeviceClock` (skew = gateway − device, protocols.md §7.4). The skew is
  recorded per device (``ds4h_ble_clock_skew_seconds``, the registry) so the device's own time of any
  stored point is its stored time minus that skew.
- Device Information (0x180A) → manufacturer, model, serial, firmware. A device registered with a
  serial number must present that serial: another device behind a known address is refused.
- Battery Level (0x2A19) → a ``battery_level`` reading and the device's status.

Optional characteristics a device lacks are skipped; one that answers garbage is logged and skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.device_info import (
    BATTERY_LEVEL_UUID,
    CURRENT_TIME_UUID,
    LOCAL_TIME_INFORMATION_UUID,
    STRING_UUIDS,
    points,
)
from drivers.device_info.codec import BatteryLevel, CurrentTime, LocalTimeInformation, decode_string
from drivers.sdk.clock import DeviceClock
from drivers.sdk.session import read_optional
from gateway.errors import GatewayError, PayloadError
from gateway.model import Batch, SourceKey

if TYPE_CHECKING:
    from bleak import BleakClient

log = logging.getLogger(__name__)


_SHOWN = ("manufacturer_name", "model_number", "firmware_revision")


class IdentityMismatch(GatewayError):
    """The device at a registered address is not the registered device (its serial differs)."""


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    clock: DeviceClock
    strings: dict[str, str]
    battery_pct: int | None
    battery: Batch | None
    connected_ns: int

    def status(self) -> dict[str, Any]:
        return {
            "clock_skew_s": None if self.clock.skew_ns is None else round(self.clock.skew_ns / 1e9, 3),
            "battery_pct": self.battery_pct,
            **{k: v for k, v in self.strings.items() if k in _SHOWN},
        }


def gateway_utc_offset_ns() -> int:
    """The gateway's own zone offset now (local − UTC), used when a device does not say its zone."""
    return time.localtime().tm_gmtoff * 1_000_000_000


async def read_connect_info(
    client: BleakClient,
    device_id: str,
    *,
    expected_serial: str | None,
    timeout_s: float,
    gateway_unsynced: bool,
) -> ConnectInfo:
    strings: dict[str, str] = {}
    for name, uuid in STRING_UUIDS.items():
        raw = await read_optional(client, uuid, timeout_s)
        if raw is None:
            continue
        try:
            strings[name] = decode_string(raw)
        except PayloadError as e:
            log.warning("BLE device %s: %s unreadable: %s", device_id, name, e)
    serial = strings.get("serial_number")
    if expected_serial is not None and serial != expected_serial:
        raise IdentityMismatch(
            f"serial number {'missing' if serial is None else repr(serial)}, registered {expected_serial!r}"
        )

    zone = gateway_utc_offset_ns()
    lti = await read_optional(client, LOCAL_TIME_INFORMATION_UUID, timeout_s)
    if lti is not None:
        try:
            device_zone = LocalTimeInformation.from_bytes(lti).utc_offset_ns
            zone = zone if device_zone is None else device_zone
        except PayloadError as e:
            log.warning("BLE device %s: local time information unreadable: %s", device_id, e)
    clock = DeviceClock(None, zone, gateway_unsynced)
    raw_time = await read_optional(client, CURRENT_TIME_UUID, timeout_s)
    if raw_time is not None:
        try:
            clock = CurrentTime.from_bytes(raw_time).device_clock(
                time.time_ns(), zone, gateway_unsynced=gateway_unsynced
            )
        except PayloadError as e:
            log.warning("BLE device %s: current time unreadable, stamps stay uncorrected: %s", device_id, e)

    connected_ns = time.time_ns()
    battery_pct: int | None = None
    battery: Batch | None = None
    raw_battery = await read_optional(client, BATTERY_LEVEL_UUID, timeout_s)
    if raw_battery is not None:
        try:
            level = BatteryLevel.from_bytes(raw_battery)
            battery_pct = level.percent if level.valid else None
            readings = points.battery_readings(level, clock, connected_ns)
            battery = Batch(SourceKey(device_id, ("battery", connected_ns)), connected_ns, readings, kind="battery")
        except PayloadError as e:
            log.warning("BLE device %s: battery level unreadable: %s", device_id, e)
    return ConnectInfo(clock, strings, battery_pct, battery, connected_ns)
