"""Device drivers: one package per device profile.

Each driver is a pure codec (bytes ⇄ typed values, no I/O, no asyncio) plus, for BLE profiles, a thin
session that knows which characteristics to use. Codecs produce the gateway's core types
(``gateway.model``: ``Reading``, ``Waveform``), name metrics from ``gateway.vocabulary`` and raise
``gateway.errors.PayloadError`` with a quarantine reason; besides those they use the standard library,
numpy and cbor2.

- ``drivers.senml``: SenML (RFC 8428) for 5G/MQTT devices — docs/mqtt.md.

The BLE profiles and the driver SDK (entry-point registration) arrive with the BLE work.
"""
