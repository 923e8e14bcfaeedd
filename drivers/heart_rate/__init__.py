"""Heart Rate Service 0x180D (protocols.md §2): heart-rate straps.

- Heart Rate Measurement 0x2A37 (notify): heart rate, sensor contact, energy expended, RR intervals —
  :class:`~drivers.heart_rate.codec.HeartRateMeasurement`, points :func:`drivers.heart_rate.points.readings`;
- Body Sensor Location 0x2A38 (read) — :class:`~drivers.heart_rate.codec.BodySensorLocation`;
- Heart Rate Control Point 0x2A39 (write ``01`` = reset energy expended) —
  :data:`~drivers.heart_rate.codec.RESET_ENERGY_EXPENDED`.
"""

from __future__ import annotations

SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
BODY_SENSOR_LOCATION_UUID = "00002a38-0000-1000-8000-00805f9b34fb"
CONTROL_POINT_UUID = "00002a39-0000-1000-8000-00805f9b34fb"
