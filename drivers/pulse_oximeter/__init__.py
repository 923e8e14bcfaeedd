"""Pulse Oximeter Service 0x1822 (protocols.md §4).

- PLX Spot-check Measurement 0x2A5E (indicate) — :class:`~drivers.pulse_oximeter.codec.PlxSpotCheck`;
- PLX Continuous Measurement 0x2A5F (notify) — :class:`~drivers.pulse_oximeter.codec.PlxContinuous`
  (normal, fast and slow SpO2/PR, pulse amplitude index);
- PLX Features 0x2A60 (read) — :class:`~drivers.pulse_oximeter.codec.PlxFeatures`;
- Record Access Control Point 0x2A52 for stored spot-checks — :mod:`drivers.sdk.racp`.

Points: :func:`drivers.pulse_oximeter.points.readings`. Demonstration/test data is flagged by
:func:`drivers.pulse_oximeter.points.is_demo_or_test`; the session drops it.
"""

from __future__ import annotations

SERVICE_UUID = "00001822-0000-1000-8000-00805f9b34fb"
SPOT_CHECK_UUID = "00002a5e-0000-1000-8000-00805f9b34fb"
CONTINUOUS_UUID = "00002a5f-0000-1000-8000-00805f9b34fb"
FEATURES_UUID = "00002a60-0000-1000-8000-00805f9b34fb"
RACP_UUID = "00002a52-0000-1000-8000-00805f9b34fb"
