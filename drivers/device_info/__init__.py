"""Device Information 0x180A, Current Time 0x1805 and Battery 0x180F (protocols.md §7).

- Current Time 0x2A2B — :class:`~drivers.device_info.codec.CurrentTime` (→ a :class:`~drivers.sdk.clock.DeviceClock`);
- Local Time Information 0x2A0F — :class:`~drivers.device_info.codec.LocalTimeInformation`;
- Device Information strings 0x2A24–0x2A29 — :func:`~drivers.device_info.codec.decode_string`;
  System ID 0x2A23 — :class:`~drivers.device_info.codec.SystemId`;
  PnP ID 0x2A50 — :class:`~drivers.device_info.codec.PnpId`;
- Battery Level 0x2A19 — :class:`~drivers.device_info.codec.BatteryLevel`,
  points :func:`drivers.device_info.points.battery_readings`.
"""

from __future__ import annotations

CURRENT_TIME_SERVICE_UUID = "00001805-0000-1000-8000-00805f9b34fb"
DEVICE_INFORMATION_SERVICE_UUID = "0000180a-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
CURRENT_TIME_UUID = "00002a2b-0000-1000-8000-00805f9b34fb"
LOCAL_TIME_INFORMATION_UUID = "00002a0f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
SYSTEM_ID_UUID = "00002a23-0000-1000-8000-00805f9b34fb"
PNP_ID_UUID = "00002a50-0000-1000-8000-00805f9b34fb"
STRING_UUIDS = {
    "manufacturer_name": "00002a29-0000-1000-8000-00805f9b34fb",
    "model_number": "00002a24-0000-1000-8000-00805f9b34fb",
    "serial_number": "00002a25-0000-1000-8000-00805f9b34fb",
    "hardware_revision": "00002a27-0000-1000-8000-00805f9b34fb",
    "firmware_revision": "00002a26-0000-1000-8000-00805f9b34fb",
    "software_revision": "00002a28-0000-1000-8000-00805f9b34fb",
}
