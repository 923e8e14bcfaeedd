"""Polar Measurement Data (PMD) service: ECG from a Polar H10 chest strap (protocols.md §8).

Vendor UUIDs: service ``fb005c80-02e7-f387-1cad-8acd2d8df0c8``, control point ``…5c81…``
(read, write, indicate), data ``…5c82…`` (notify). Polar does not publish PMD as a stable spec.

- control point requests: :class:`~drivers.polar_pmd.codec.PmdRequest` (``start_ecg()``, ``stop()``,
  ``get_settings()``); responses: :class:`~drivers.polar_pmd.codec.PmdControlPointResponse`;
- ECG data frames: :class:`~drivers.polar_pmd.codec.EcgFrame` (int24 µV samples → numpy int32);
- points: :func:`drivers.polar_pmd.points.waveform` with a :class:`~drivers.polar_pmd.points.PolarTimebase`.
"""

from __future__ import annotations

SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
CONTROL_POINT_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
