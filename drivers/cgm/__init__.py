"""Continuous Glucose Monitoring Service 0x181F (protocols.md §6).

- CGM Measurement 0x2AA7 (notify; several records per notification) — :class:`~drivers.cgm.codec.CgmMeasurement`,
  points :func:`drivers.cgm.points.readings`;
- CGM Feature 0x2AA8 — :class:`~drivers.cgm.codec.CgmFeature` (says whether E2E-CRC is in use);
- CGM Status 0x2AA9 — :class:`~drivers.cgm.codec.CgmStatus`;
- CGM Session Start Time 0x2AAA — :class:`~drivers.cgm.codec.CgmSessionStartTime` (record time = start + offset);
- CGM Session Run Time 0x2AAB — :class:`~drivers.cgm.codec.CgmSessionRunTime`;
- CGM Specific Ops Control Point 0x2AAC — :mod:`drivers.cgm.socp`;
- Record Access Control Point 0x2A52 (filter: time offset) — :mod:`drivers.sdk.racp`.

E2E-CRC: CRC-16/MCRF4XX (:func:`drivers.sdk.gatt.crc16_mcrf4xx`); a wrong CRC is a
``PayloadError`` with reason ``bad_crc``.
"""

from __future__ import annotations

SERVICE_UUID = "0000181f-0000-1000-8000-00805f9b34fb"
MEASUREMENT_UUID = "00002aa7-0000-1000-8000-00805f9b34fb"
FEATURE_UUID = "00002aa8-0000-1000-8000-00805f9b34fb"
STATUS_UUID = "00002aa9-0000-1000-8000-00805f9b34fb"
SESSION_START_TIME_UUID = "00002aaa-0000-1000-8000-00805f9b34fb"
SESSION_RUN_TIME_UUID = "00002aab-0000-1000-8000-00805f9b34fb"
SPECIFIC_OPS_CONTROL_POINT_UUID = "00002aac-0000-1000-8000-00805f9b34fb"
RACP_UUID = "00002a52-0000-1000-8000-00805f9b34fb"
