"""Glucose Service 0x1808 (protocols.md §5): store-and-forward blood-glucose meters.

- Glucose Measurement 0x2A18 (notify) — :class:`~drivers.glucose.codec.GlucoseMeasurement`,
  points :func:`drivers.glucose.points.readings`;
- Glucose Measurement Context 0x2A34 (notify) — :class:`~drivers.glucose.codec.GlucoseContext`,
  points :func:`drivers.glucose.points.context_readings` (HbA1c);
- Glucose Feature 0x2A51 (read) — :class:`~drivers.glucose.codec.GlucoseFeature`;
- Record Access Control Point 0x2A52 — :mod:`drivers.sdk.racp`.

Control-solution results (type 10 or sample location 4) are identified by
:attr:`~drivers.glucose.codec.GlucoseMeasurement.is_control_solution` and never become readings.
"""

from __future__ import annotations

SERVICE_UUID = "00001808-0000-1000-8000-00805f9b34fb"
MEASUREMENT_UUID = "00002a18-0000-1000-8000-00805f9b34fb"
CONTEXT_UUID = "00002a34-0000-1000-8000-00805f9b34fb"
FEATURE_UUID = "00002a51-0000-1000-8000-00805f9b34fb"
RACP_UUID = "00002a52-0000-1000-8000-00805f9b34fb"
