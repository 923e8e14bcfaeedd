"""Helpers for end-to-end BLE tests: a virtual radio (hub), simulated peripherals, a gateway on bumble.

The hub owns a bumble ``LocalLink``; simulated peripherals attach to it in-process, the gateway's
central attaches over the hub's HCI TCP socket exactly as a gateway in another process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from firmware_sim.ble.hub import BleHub
from firmware_sim.ble.identity import DeviceIdentity, Profile, device_identity
from firmware_sim.ble.peripheral import SimPeripheral
from firmware_sim.ble.runner import BleSimulation
from gateway.config import Config
from gateway.pipeline import Gateway
from tests.gw import make_config, running

KIND = {
    Profile.HEART_RATE: "heart_rate",
    Profile.BLOOD_PRESSURE: "blood_pressure",
    Profile.PULSE_OXIMETER: "pulse_oximeter",
    Profile.GLUCOSE_METER: "glucose_meter",
    Profile.CGM: "cgm",
    Profile.ECG: "polar_ecg",
}


def device_id(ident: DeviceIdentity) -> str:
    return f"{ident.profile.value}-{ident.index}"


def ble_config(
    state_dir: Path,
    hub: BleHub,
    peripherals: Sequence[SimPeripheral],
    sections: dict[str, Any] | None = None,
    **ble: Any,
) -> Config:
    devices = {
        device_id(p.identity): {
            "kind": KIND[p.identity.profile],
            "ble_address": p.identity.address,
            "serial": p.identity.serial,
        }
        for p in peripherals
    }
    cfg = make_config(
        state_dir,
        ble={
            "enabled": True,
            "backend": "bumble",
            "bumble_transport": hub.spec,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 2.0,
            "store_interval_s": 0.5,
            "gatt_timeout_s": 5.0,
            "racp_timeout_s": 3.0,
            **ble,
        },
        **(sections or {}),
    )
    return cfg.model_copy(update={"devices": {**cfg.devices, **parse_devices(devices)}})


def parse_devices(devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from gateway.config import DeviceEntry

    return {k: DeviceEntry(**v) for k, v in devices.items()}


def ident(profile: Profile, index: int = 0, seed: int = 7) -> DeviceIdentity:
    return device_identity(profile, index, seed)


@contextlib.asynccontextmanager
async def radio(peripherals: Sequence[SimPeripheral]) -> AsyncIterator[tuple[BleHub, BleSimulation]]:
    async with BleHub(port=0) as hub, BleSimulation(peripherals, link=hub.link, advertising_interval_ms=30) as sim:
        yield hub, sim


@contextlib.asynccontextmanager
async def ble_gateway(
    state_dir: Path, peripherals: Sequence[SimPeripheral], sections: dict[str, Any] | None = None, **ble: Any
) -> AsyncIterator[tuple[Gateway, BleSimulation]]:
    cfg = ble_config
    async with radio(peripherals) as (hub, sim), running(cfg(state_dir, hub, peripherals, sections, **ble)) as gw:
        yield gw, sim


async def until(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def history(state_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of the gateway's local history (the ``local`` sink)."""
    conn = sqlite3.connect(f"file:{state_dir / 'history.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def committed(gw: Gateway) -> int:
    return int(gw.counters()["readings_committed"])


def settled(gw: Gateway) -> bool:
    """Everything committed is in the local history."""
    c = gw.counters()
    return bool(c["readings_forwarded"]["local"] == c["readings_committed"])
