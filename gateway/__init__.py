"""ds4h-gateway: an edge gateway for medical devices.

Every reading takes one path: identify the device → normalise → sign → commit durably →
forward idempotently. See ``docs/`` for the contracts (schema, provenance, config, ingest).
"""

__version__ = "0.1.0"
