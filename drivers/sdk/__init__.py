"""The driver SDK: what a device driver codes against.

- :mod:`drivers.sdk.clock` — :class:`~drivers.sdk.clock.DeviceClock`, device time stamps → corrected UTC;
- :mod:`drivers.sdk.ieee11073` — SFLOAT / FLOAT (IEEE 11073-20601) with special values;
- the driver protocol, the matcher and the entry-point registry (``ds4h_gateway.drivers``) — see docs/drivers.md.
"""
