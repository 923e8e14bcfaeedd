"""Simulated medical-device firmware: a fleet of patients whose devices post to the gateway.

- :mod:`firmware_sim.physiology` — deterministic signal models (heart rate, glucose, SpO2, ECG);
- :mod:`firmware_sim.fleet` — :class:`~firmware_sim.fleet.Fleet`: devices, ids, boot ids, frame
  counters, and the batch maps of ``docs/ingest.md``;
- :mod:`firmware_sim.ingest_client` — :class:`~firmware_sim.ingest_client.IngestClient`, the
  at-least-once asyncio HTTP client with its ack log;
- :mod:`firmware_sim.cli` — the ``ds4h-sim`` command.

This package speaks only the wire format: it never imports from ``gateway``.
"""

from firmware_sim.fleet import Fleet
from firmware_sim.ingest_client import ClientStats, IngestClient

__all__ = ["ClientStats", "Fleet", "IngestClient"]
