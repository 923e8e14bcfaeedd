"""Which Bluetooth stack bleak runs on: the host's BlueZ, or Google's bumble (virtual radio, USB dongle).

The BLE manager only ever calls bleak's public API (``BleakScanner``, ``BleakClient``); a stack is the
set of keyword arguments that selects and configures bleak's backend, plus whatever must be started
first (bumble's radio). bumble is imported only when configured: it costs ~0.3 s and ~20 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from gateway.ble.pairing import PairingPolicy
from gateway.config import BleSection


class BleStack(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def scanner_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``BleakScanner``."""
        ...

    def client_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``BleakClient``."""
        ...


class BlueZStack:
    """bleak's default backend on Linux; pairing policy is BlueZ's (``/etc/bluetooth/main.conf``:
    ``SecureConnections = only``; docs/ble.md), the pairing window is enforced by the manager."""

    def __init__(self, adapter: str) -> None:
        self._adapter = adapter

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def scanner_kwargs(self) -> dict[str, Any]:
        return {"bluez": {"adapter": self._adapter}}

    def client_kwargs(self) -> dict[str, Any]:
        return {"bluez": {"adapter": self._adapter}}


def make_stack(cfg: BleSection, pairing: PairingPolicy, state_dir: Path) -> BleStack:
    if cfg.backend == "bumble":
        from gateway.ble.bumble_stack import BumbleStack

        assert cfg.bumble_transport is not None  # checked by the config
        return BumbleStack(cfg.bumble_transport, pairing, state_dir, active_scan=cfg.scan_mode == "active")
    return BlueZStack(cfg.adapter)
