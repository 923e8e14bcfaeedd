"""The demo's Bluetooth: a virtual radio in its own process.

``python -m firmware_sim.ble.hub`` owns a bumble ``LocalLink`` and serves HCI over TCP on loopback; the
demo's ward (``ds4h-sim fleet``, gateway/demo_ward.py) attaches its simulated devices to it, and the
gateway's bumble backend attaches as a central through ``tcp-client:127.0.0.1:PORT``, exactly as it would
to a radio in another process. Needs the ``sim`` extra (bumble).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError

START_TIMEOUT_S = 30.0


def available() -> bool:
    """bumble is installed (the ``sim`` extra)."""
    return importlib.util.find_spec("bumble") is not None


@dataclass
class DemoRadio:
    port: int
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
