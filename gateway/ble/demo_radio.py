"""The demo's Bluetooth: a virtual radio and simulated BLE devices, each in its own process.

``python -m firmware_sim.ble.hub`` owns a bumble ``LocalLink`` and serves HCI over TCP on loopback;
``python -m firmware_sim ble --hub …`` runs one simulated device of each profile on it; the gateway's
bumble backend attaches as a central through ``tcp-client:127.0.0.1:PORT``, exactly as it would to a
radio in another process. Needs the ``sim`` extra (bumble).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError

DRIVER_BY_PROFILE = {
    "heart-rate": "heart_rate",
    "blood-pressure": "blood_pressure",
    "pulse-oximeter": "pulse_oximeter",
    "glucose-meter": "glucose_meter",
    "cgm": "cgm",
    "ecg": "polar_ecg",
}
SIM_FLAGS = ("--heart-rate", "--bp", "--oximeters", "--glucose-meters", "--cgm", "--ecg")
START_TIMEOUT_S = 30.0


def available() -> bool:
    """bumble is installed (the ``sim`` extra)."""
    return importlib.util.find_spec("bumble") is not None


@dataclass
class DemoRadio:
    port: int
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``[devices.<id>]`` entries of the simulated BLE devices."""
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def transport(self) -> str:
        return f"tcp-client:127.0.0.1:{self.port}"

    def ble_section(self, *, store_interval_s: float = 30.0) -> dict[str, Any]:
        return {
            "enabled": True,
            "backend": "bumble",
            "bumble_transport": self.transport,
            "max_connections": 8,
            "store_interval_s": store_interval_s,
        }

    async def stop(self) -> None:
        for p in reversed(self.procs):
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                async with asyncio.timeout(10):
                    await p.wait()
            except TimeoutError:
                p.kill()
                await p.wait()


async def _line(proc: asyncio.subprocess.Process, what: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        line = (await proc.stdout.readline()).decode().strip()
    if not line:
        raise GatewayError(f"{what} exited before it was ready")
    return line


async def start_hub() -> DemoRadio:
    """Start the virtual radio hub alone (devices attach to it later, e.g. a ``ds4h-sim fleet`` ward)."""
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim.ble.hub", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    radio = DemoRadio(0, procs=[hub])
    try:
        ready = await _line(hub, "the virtual radio hub")
        if not ready.startswith("READY "):
            raise GatewayError(f"the virtual radio hub said {ready!r}")
        radio.port = int(ready.split()[1])
    except BaseException:
        with contextlib.suppress(Exception):
            await radio.stop()
        raise
    return radio


async def start(per_profile: int, seed: int = 1) -> DemoRadio:
    """Start the hub and ``per_profile`` simulated devices of each profile (``ds4h-sim ble``)."""
    radio = await start_hub()
    try:
        counts = [str(per_profile)] * len(SIM_FLAGS)
        flags = [x for pair in zip(SIM_FLAGS, counts, strict=True) for x in pair]
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_sim", "ble", "--hub", f"127.0.0.1:{radio.port}", "--seed", str(seed),
            *flags, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        radio.procs.append(sim)
        for _ in range(per_profile * len(SIM_FLAGS)):
            d = json.loads(await _line(sim, "the BLE device simulator"))
            device_id = f"ble-{d['profile']}-{d['index'] + 1}"
            radio.devices[device_id] = {
                "kind": DRIVER_BY_PROFILE[d["profile"]],
                "ble_address": d["address"],
                "serial": d["serial"],
            }
    except BaseException:
        with contextlib.suppress(Exception):
            await radio.stop()
        raise
    return radio
