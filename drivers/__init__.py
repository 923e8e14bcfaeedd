"""Device drivers: one package per device profile.

Each driver is a pure codec (bytes ⇄ typed values, no I/O, no asyncio) plus a thin session that knows
which characteristics or topics to use. Drivers import only the standard library, numpy and the driver
SDK; they register by name through the ``ds4h_gateway.drivers`` entry-point group and are loaded lazily.
The first drivers arrive with the BLE and MQTT work (see docs/architecture.md, "Planned").
"""
