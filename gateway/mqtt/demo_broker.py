"""A broker for ``ds4h-gateway demo``, so its 5G devices need no external service.

When ``mosquitto`` is installed the demo runs it the way a site does: a site PKI in the demo's state
directory, mutual TLS, the generated ACL, MQTT v5 — on a free loopback port. Otherwise it runs an
embedded amqtt broker in its own process: plain MQTT 3.1.1 on loopback, anonymous, for the demo only
(amqtt 0.12 delivers nothing to MQTT v5 clients — field notes). Never used by ``ds4h-gateway run``.

    python -m gateway.mqtt.demo_broker --port N     # the embedded broker process
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


@dataclass(slots=True)
class DemoBroker:
    kind: str
    """``mosquitto`` (mutual TLS, v5) or ``amqtt`` (plain 3.1.1 on loopback)."""
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def tls(self) -> bool:
        return self.kind == "mosquitto"

    @property
    def protocol(self) -> str:
        return "5" if self.kind == "mosquitto" else "3.1.1"

    def mqtt_section(self) -> dict[str, Any]:
        return {"enabled": True, "host": LOOPBACK, "port": self.port, "tls": self.tls, "protocol": self.protocol}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def mosquitto_binary() -> str | None:
    for p in MOSQUITTO_PATHS:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("mosquitto")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


async def start(state_dir: Path, devices: dict[str, str], *, prefer_mosquitto: bool = True) -> DemoBroker:
    """Start the demo's broker; ``devices`` (id → kind) get certificates (mosquitto) and registry entries."""
    binary = mosquitto_binary() if prefer_mosquitto else None
    port = _free_port()
    if binary is not None:
        broker = await _start_mosquitto(binary, state_dir, devices, port)
    else:
        _register(state_dir, devices)
        broker = await _spawn(
            "amqtt", [sys.executable, "-m", "gateway.mqtt.demo_broker", "--port", str(port)], state_dir, port
        )
    await _wait_port(broker)
    return broker


def _register(state_dir: Path, devices: dict[str, str]) -> None:
    from gateway.devices import DeviceRegistry

    reg = DeviceRegistry.open(state_dir)
    try:
        for device_id, kind in devices.items():
            if reg.get(device_id) is None:
                reg.add(device_id, kind, identities={"mqtt_cn": device_id})
    finally:
        reg.close()


async def _start_mosquitto(binary: str, state_dir: Path, devices: dict[str, str], port: int) -> DemoBroker:
    from gateway.cli_pki import enroll_device
    from gateway.pki.ca import SitePki
    from gateway.pki.mosquitto import write_mosquitto_config

    pki = SitePki(state_dir)
    if not pki.has_ca():
        pki.init_ca("ds4h demo site")
    if not pki.gateway_cert.exists():
        pki.issue_gateway()
    for device_id, kind in devices.items():
        if not pki.device_files(device_id)[0].exists():
            enroll_device(state_dir, device_id, kind)
    broker_dir = state_dir / "mosquitto"
    (broker_dir / "data").mkdir(parents=True, exist_ok=True)
    files = write_mosquitto_config(
        pki,
        broker_dir,
        port=port,
        bind=LOOPBACK,
        persistence_dir=broker_dir / "data",
        user=pwd.getpwuid(os.geteuid()).pw_name,
    )
    return await _spawn("mosquitto", [binary, "-c", str(files.conf)], state_dir, port)


async def _spawn(kind: str, cmd: list[str], state_dir: Path, port: int) -> DemoBroker:
    log_path = state_dir / f"{kind}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=fd, stderr=fd, stdin=asyncio.subprocess.DEVNULL)
    finally:
        os.close(fd)
    return DemoBroker(kind, port, proc, log_path)


async def _wait_port(broker: DemoBroker, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if broker.proc.returncode is not None:
            tail = broker.log_path.read_text(errors="replace")[-1500:]
            raise GatewayError(f"the demo's {broker.kind} broker exited ({broker.proc.returncode}):\n{tail}")
        with contextlib.suppress(OSError):
            _, w = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, broker.port), timeout=1)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return
        if loop.time() > deadline:
            await broker.stop()
            raise GatewayError(f"the demo's {broker.kind} broker did not open port {broker.port}")
        await asyncio.sleep(0.05)


# --- the embedded broker process ---------------------------------------------------------------------
async def _run_amqtt(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},  # loopback only, demo only
        "topic-check": {"enabled": False},
    }
    broker = Broker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Embedded MQTT 3.1.1 broker for the demo (loopback only).")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_run_amqtt(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
