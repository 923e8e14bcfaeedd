"""The driver registry: drivers found through the ``ds4h_gateway.drivers`` entry-point group.

A vendor package declares, in its ``pyproject.toml``::

    [project.entry-points."ds4h_gateway.drivers"]
    acme_glucose = "acme_ds4h.glucose:DRIVER"

where ``DRIVER`` satisfies :class:`drivers.sdk.driver.Driver`. Entry points are loaded on first use;
a driver that fails to load is reported with its name and skipped, so one broken package cannot keep
the gateway from reading the other devices.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points

from drivers.sdk.driver import Driver

log = logging.getLogger(__name__)

GROUP = "ds4h_gateway.drivers"


class DriverLoadError(Exception):
    """A registered driver could not be loaded or does not satisfy the driver protocol."""


class DriverRegistry:
    """Drivers by name, and the matcher that picks one for a device."""

    def __init__(self, drivers: Iterable[Driver]) -> None:
        self._drivers: dict[str, Driver] = {}
        for d in drivers:
            if d.name in self._drivers:
                raise DriverLoadError(f"two drivers are named {d.name!r}")
            self._drivers[d.name] = d

    @classmethod
    def from_entry_points(cls, group: str = GROUP) -> DriverRegistry:
        loaded: list[Driver] = []
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as e:  # a vendor package's import error must not stop the gateway
                log.error("driver %s (%s) failed to load: %s: %s", ep.name, ep.value, type(e).__name__, e)
                continue
            if not isinstance(obj, Driver):
                log.error("driver %s (%s) does not satisfy the driver protocol; skipped", ep.name, ep.value)
                continue
            if obj.name != ep.name:
                log.error("driver %s (%s) calls itself %r; skipped", ep.name, ep.value, obj.name)
                continue
            loaded.append(obj)
        return cls(loaded)

    def names(self) -> list[str]:
        return sorted(self._drivers)

    def get(self, name: str) -> Driver | None:
        return self._drivers.get(name)

    def __len__(self) -> int:
        return len(self._drivers)

    def match(self, service_uuids: Sequence[str], name: str | None = None) -> Driver | None:
        """The best driver for a device advertising ``service_uuids`` (and ``name``), or None."""
        found = [d for d in self._drivers.values() if d.match.matches(service_uuids, name)]
        if not found:
            return None
        return max(found, key=lambda d: (d.match.priority, d.name))
