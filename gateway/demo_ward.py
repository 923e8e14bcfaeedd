"""The demo's ward: a ``ds4h-sim fleet`` scenario (default ``demo-ward``) run in its own process.

``python -m firmware_sim fleet SCENARIO --list`` names the ward's devices first (BLE: driver, address,
serial; 5G: the ids and kinds the broker's PKI must issue; each with its patient and scheduled faults),
then the same command runs the ward against the demo's hub and broker. Its progress lines (stderr) and
final summary (stdout) feed the live view and the demo's JSON summary. The gateway never imports the
simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

DEFAULT_SCENARIO = "demo-ward"
LIST_TIMEOUT_S = 60.0


@dataclass
class Ward:
    scenario: str
    """The scenario's name (as the fleet reports it)."""
    devices: list[dict[str, Any]]
    """The fleet's device lines (``--list``)."""
    source: str = ""
    """What ``--ward`` named: a shipped scenario's name or a scenario file (what the fleet is run with)."""
    proc: asyncio.subprocess.Process | None = None
    progress: str = ""
    """The fleet's latest progress line, without its ``[fleet]`` prefix."""
    summary: dict[str, Any] | None = None
    """The fleet's final one-line summary (``faults_fired``, ``settled`` …) once it has stopped."""
    errors: list[str] = field(default_factory=list)
    """The last other lines the fleet wrote on stderr (for diagnostics)."""
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ble(self) -> dict[str, dict[str, Any]]:
        """``[devices.<id>]`` entries of the ward's BLE devices."""
        return {
            d["id"]: {"kind": d["gateway_kind"], "ble_address": d["address"], "serial": d["serial"]}
            for d in self.devices
            if d["transport"] == "ble"
        }

    @property
    def g5(self) -> dict[str, str]:
        """The ward's 5G devices: id → registry kind."""
        return {d["id"]: d["gateway_kind"] for d in self.devices if d["transport"] == "mqtt"}

    def patient(self, device_id: str) -> int | None:
        for d in self.devices:
            if d["id"] == device_id:
                return int(d["patient"])
        return None

    def active_faults(self) -> dict[str, list[str]]:
        """Device id → fault kinds active now (from the latest progress line)."""
        _, _, active = self.progress.rpartition("active: ")
        out: dict[str, list[str]] = {}
        for item in active.split(", "):
            kind, sep, device_id = item.partition("@")
            if sep:
                out.setdefault(device_id, []).append(kind)
        return out

    def fault_plan(self) -> list[str]:
        """One human line per scheduled fault: what to watch for in the live view."""
        out = []
        for d in self.devices:
            for f in d.get("faults", []):
                every = f" every ~{f['every_s']:g} s" if "every_s" in f else ""
                lasting = f" for {f['duration_s']:g} s" if "duration_s" in f else ""
                out.append(
                    f"{d['id']} (patient {d['patient']}): {f['kind']}{every}{lasting}, first at ~{f['first_s']:g} s"
                )
        return out

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.returncode


async def list_ward(scenario: str) -> Ward:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim", "fleet", scenario, "--list",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(LIST_TIMEOUT_S):
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise GatewayError(f"the ward {scenario!r} could not be listed: {err.decode(errors='replace').strip()}")
    lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
    if not lines or "listed" not in lines[-1]:
        raise GatewayError(f"the ward {scenario!r} listed no devices")
    return Ward(str(lines[-1]["scenario"]), lines[:-1], source=scenario)


def fleet_cmd(
    ward: Ward, *, hub_port: int | None, broker_port: int | None, protocol: str, pki_dir: Path | None
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "firmware_sim",
        "fleet",
        ward.source or ward.scenario,
        "--progress",
        "1",
        "--settle-timeout",
        "10",
    ]
    if hub_port is not None:
        cmd += ["--hub", f"127.0.0.1:{hub_port}"]
    if broker_port is not None:
        cmd += ["--broker", f"127.0.0.1:{broker_port}", "--protocol", protocol]
        if pki_dir is not None:
            cmd += ["--pki-dir", str(pki_dir)]
    return cmd


async def start(ward: Ward, cmd: list[str]) -> None:
    ward.proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    assert ward.proc.stdout is not None and ward.proc.stderr is not None
    ward._readers = [
        asyncio.create_task(_read_stdout(ward, ward.proc.stdout)),
        asyncio.create_task(_read_stderr(ward, ward.proc.stderr)),
    ]


async def _read_stdout(ward: Ward, stream: asyncio.StreamReader) -> None:
    async for raw in stream:
        with contextlib.suppress(ValueError):
            doc = json.loads(raw)
            if isinstance(doc, dict) and doc.get("mode") == "fleet":
                ward.summary = doc


async def _read_stderr(ward: Ward, stream: asyncio.StreamReader) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("[fleet] "):
            ward.progress = line.removeprefix("[fleet] ")
        elif line:
            ward.errors = [*ward.errors[-9:], line]


async def stop(ward: Ward, timeout_s: float = 20.0) -> None:
    """SIGTERM the fleet (it settles first: at most its ``--settle-timeout``), then collect its output."""
    p = ward.proc
    if p is None:
        return
    if p.returncode is None:
        p.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            await p.wait()
    except TimeoutError:
        p.kill()
        await p.wait()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.gather(*ward._readers, return_exceptions=True)
    for t in ward._readers:
        t.cancel()


@dataclass
class LinkTracker:
    """What the live view tells of each BLE link: up now, how often it went down and came back."""

    up: dict[str, bool] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)

    def update(self, ble_devices: dict[str, dict[str, Any]]) -> None:
        for device_id, d in ble_devices.items():
            now, before = bool(d["connected"]), self.up.get(device_id)
            if before is True and not now:
                self.drops[device_id] = self.drops.get(device_id, 0) + 1
            elif before is False and now and self.drops.get(device_id, 0):
                self.reconnects[device_id] = self.reconnects.get(device_id, 0) + 1
            self.up[device_id] = now
