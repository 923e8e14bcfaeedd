"""Blood Pressure Service 0x1810 (protocols.md §3): blood-pressure cuffs.

- Blood Pressure Measurement 0x2A35 (indicate) — :class:`~drivers.blood_pressure.codec.BloodPressureMeasurement`,
  points :func:`drivers.blood_pressure.points.readings` (systolic, diastolic, MAP, pulse rate);
- Intermediate Cuff Pressure 0x2A36 (notify) — :class:`~drivers.blood_pressure.codec.IntermediateCuffPressure`,
  **live display only**: :func:`drivers.blood_pressure.points.live_cuff_pressure` returns a
  :class:`~drivers.blood_pressure.points.LiveCuffPressure`, never a stored :class:`~gateway.model.Reading`;
- Blood Pressure Feature 0x2A49 (read) — :class:`~drivers.blood_pressure.codec.BloodPressureFeature`.
"""

from __future__ import annotations

SERVICE_UUID = "00001810-0000-1000-8000-00805f9b34fb"
MEASUREMENT_UUID = "00002a35-0000-1000-8000-00805f9b34fb"
INTERMEDIATE_CUFF_PRESSURE_UUID = "00002a36-0000-1000-8000-00805f9b34fb"
FEATURE_UUID = "00002a49-0000-1000-8000-00805f9b34fb"
