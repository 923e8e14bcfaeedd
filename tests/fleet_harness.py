"""Run a ``ds4h-sim fleet`` scenario against an in-process gateway and reconcile its report with the outbox.

Used by the fleet tests (tests/test_fleet_scenario.py) and the fleet benchmark (benchmarks/bench_fleet.py).
The fleet runs as its own process: BLE devices on a virtual-radio hub (given as HOST:PORT), 5G devices
through the site's Mosquitto with their own certificates (issued here). The gateway runs in the calling
process with [ble] and [mqtt]. After the fleet settles and writes its report, the outbox must hold,
per device, exactly what the device reports as sent:

- glucose meter: one batch per record it holds at the end (control solution aside) plus each record a
  sequence reset erased after it had been transmitted — sequence numbers equal, nothing twice; each
  control-solution record it transmitted quarantined as ``control_solution`` (at least once, at most
  once per transmission), never stored;
- CGM: one batch per record it holds (its time offsets), nothing else;
- heart-rate / ECG strap, cuff, oximeter: one live batch per notification delivered to the gateway's
  subscription, and one quarantine row per garbage notification;
- 5G: one batch per frame the ack watermark covered, which is every frame produced (none left
  buffered); the injected duplicate publishes were answered as duplicates and stored nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.scenario import G5Kind, load_scenario
from gateway.config import DeviceEntry
from tests.gw import make_config, running
from tests.mqtt_site import MqttSite

G5_REGISTRY_KIND = {G5Kind.CARDIAC.value: "cardiac_monitor", G5Kind.CGM.value: "cgm"}
STORED_CHARACTERISTICS = frozenset(
    {"heart_rate_measurement", "pmd_data", "blood_pressure_measurement", "plx_spot_check", "plx_continuous"}
)
"""Streaming characteristics whose notifications become batches (cuff pressure is live view only, battery
and time notifications are read again on connect)."""


@dataclass
class FleetOutcome:
    report: dict[str, Any]
    summary: dict[str, Any]
    exit_code: int
    batches: list[tuple[str, str]]
    """(device id, source key) of every committed batch."""
    quarantine: Counter[tuple[str, str]]
    """(device id, reason) → rows."""
    duplicates: float
    """``ds4h_mqtt_messages_total{outcome="duplicate"}``."""
    counters: dict[str, Any]
    log: str
    """The fleet's stderr (progress lines)."""
    real_s: float = 0.0
    fleet_cpu_s: float | None = None
    gateway_cpu_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    """What does not reconcile (empty: everything does)."""


def outbox(state: Path) -> tuple[list[tuple[str, str]], Counter[tuple[str, str]]]:
    conn = sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True)
    try:
        batches = [(r[0], r[1]) for r in conn.execute("SELECT device_id, source_key FROM batches")]
        quarantine: Counter[tuple[str, str]] = Counter()
        for device, reason, n in conn.execute("SELECT device_id, reason, COUNT(*) FROM quarantine GROUP BY 1, 2"):
            quarantine[(device or "", reason)] = int(n)
        return batches, quarantine
    finally:
        conn.close()


def expected_batches(report: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for device, entry in report["devices"].items():
        sent = entry["sent"]
        if entry["transport"] == "mqtt":
            out[device] = sent["acked"]
        elif "records_expected" in sent:
            out[device] = sent["records_expected"]
        else:
            out[device] = sum(n for c, n in sent["notifications"].items() if c in STORED_CHARACTERISTICS)
    return out


def committed_batches(batches: list[tuple[str, str]], report: dict[str, Any]) -> dict[str, int]:
    """Per device, the batches that carry what the device sent (BLE: records ``/g/``, ``/c/``; live
    notifications ``/n/``, blood-pressure results ``/bp/``; not the battery read on connect)."""
    out: dict[str, int] = dict.fromkeys(report["devices"], 0)
    for device, key in batches:
        if device not in out:
            continue
        part = key.split("/")[1]
        if report["devices"][device]["transport"] == "mqtt" or part in ("g", "c", "n", "bp"):
            out[device] += 1
    return out


def reconcile(
    report: dict[str, Any], batches: list[tuple[str, str]], quarantine: Counter[tuple[str, str]]
) -> list[str]:
    """Every way the outbox differs from what the devices report as sent (empty: none)."""
    problems: list[str] = []
    want, got = expected_batches(report), committed_batches(batches, report)
    for device in sorted(want):
        if want[device] != got[device]:
            problems.append(f"{device}: sent {want[device]}, committed {got[device]}")
    keys = [k for _, k in batches]
    if len(keys) != len(set(keys)):
        problems.append(f"{len(keys) - len(set(keys))} source keys committed twice")
    for device, entry in report["devices"].items():
        sent = entry["sent"]
        mine = [k for d, k in batches if d == device]
        rows = {reason: n for (d, reason), n in quarantine.items() if d == device}
        if entry["kind"] == "glucose-meter":
            seqs = sorted(int(k.split("/")[2]) for k in mine if k.split("/")[1] == "g")
            if seqs != sorted(s for s, _ in sent["expected_keys"]):
                problems.append(f"{device}: record sequence numbers differ")
            # every control-solution record that reached the gateway is quarantined (once per transmission
            # at most: one re-fetched after an interrupted transfer is quarantined again), none stored
            cs, low, high = (
                rows.get("control_solution", 0),
                sent["control_solution_transmitted"],
                sent["control_solution_notified"],
            )
            if not low <= cs <= high:
                problems.append(f"{device}: {low} control-solution records sent ({high} times), {cs} quarantined")
        elif entry["kind"] == "cgm":
            offsets = sorted(int(k.split("/")[3]) for k in mine if k.split("/")[1] == "c")
            if offsets != sorted(sent["expected_keys"]):
                problems.append(f"{device}: record time offsets differ")
        elif entry["transport"] == "ble":
            # 1 garbage byte: "malformed" as a measurement, "unsupported" as a PMD frame type
            if sum(rows.values()) != sent["garbage"]:
                problems.append(f"{device}: {sent['garbage']} garbage notifications, {sum(rows.values())} quarantined")
        elif sent["buffered"] != 0 or sent["acked"] != sent["frames"]:
            problems.append(f"{device}: {sent['frames']} frames, {sent['acked']} acked, {sent['buffered']} buffered")
    return problems


async def run_fleet(
    tmp_path: Path,
    site: MqttSite,
    scenario_file: Path,
    *,
    hub: tuple[str, int] | None,
    run_s: float,
    settle_timeout_s: float = 30.0,
    fleet_args: Sequence[str] = (),
    ble: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
    commit_wait_s: float = 20.0,
) -> FleetOutcome:
    """Issue the scenario's 5G devices, start the fleet, run a gateway for its BLE and 5G devices until the
    fleet has settled and exited, then read the outbox (waiting up to ``commit_wait_s`` for the last
    commits) and reconcile."""
    scenario = load_scenario(scenario_file)
    for d in scenario.devices:
        if not d.ble:
            site.issue_device(d.device_id, kind=G5_REGISTRY_KIND[d.kind])
    report_file = tmp_path / f"{scenario.name}-report.json"
    stderr = tmp_path / f"{scenario.name}-fleet.log"
    hub_args = ["--hub", f"{hub[0]}:{hub[1]}"] if hub is not None else []
    with stderr.open("wb") as err:
        fleet = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_sim", "fleet", str(scenario_file), *hub_args,
            "--broker", f"{site.broker.host}:{site.broker.port}", "--pki-dir", str(site.state_dir / "pki"),
            "--duration", str(run_s), "--settle-timeout", str(settle_timeout_s), "--progress", "3",
            "--report", str(report_file), *fleet_args,
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    started = time.monotonic()
    cpu0 = time.process_time()
    fleet_cpu: float | None = None
    try:
        assert fleet.stdout is not None
        lines: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while True:
                line = json.loads(await fleet.stdout.readline())
                if "listed" in line:
                    break
                lines.append(line)
        devices = {
            x["id"]: DeviceEntry(kind=x["gateway_kind"], ble_address=x["address"], serial=x["serial"])
            for x in lines
            if x["transport"] == "ble"
        }
        cfg = make_config(
            site.state_dir,
            ble={
                "enabled": bool(devices),
                "backend": "bumble",
                "bumble_transport": f"tcp-client:{hub[0]}:{hub[1]}" if hub is not None else None,
                "max_connections": 8,
                "store_slots": 2,
                "reconnect_initial_s": 0.2,
                "reconnect_max_s": 1.0,
                "store_interval_s": 0.5,
                "gatt_timeout_s": 3.0,
                "racp_timeout_s": 2.0,
                **(ble or {}),
            },
            mqtt={
                "enabled": True,
                "host": site.broker.host,
                "port": site.broker.port,
                "ca_file": str(site.ca_cert),
                "cert_file": str(site.gateway_cert),
                "key_file": str(site.gateway_key),
                "reconnect_initial_s": 0.1,
                "reconnect_max_s": 1,
                "ack_interval_ms": 50,
                **(mqtt or {}),
            },
        )
        cfg = cfg.model_copy(update={"devices": {**cfg.devices, **devices}})
        async with running(cfg) as gw:
            async with asyncio.timeout(run_s + settle_timeout_s + 90):
                out = (await fleet.stdout.read()).decode().strip().splitlines()
                code = await fleet.wait()
            summary = json.loads(out[-1]) if out else {}
            report = json.loads(report_file.read_text())
            fleet_cpu = report.get("cpu_s")
            want = expected_batches(report)
            deadline = time.monotonic() + commit_wait_s
            while time.monotonic() < deadline:  # the gateway commits what it received (bounded wait)
                if committed_batches(outbox(site.state_dir)[0], report) == want:
                    break
                await asyncio.sleep(0.1)
            duplicates = gw.metrics.registry.get_sample_value("ds4h_mqtt_messages_total", {"outcome": "duplicate"})
            counters = gw.counters()
    finally:
        if fleet.returncode is None:
            fleet.kill()
            with contextlib.suppress(ProcessLookupError):
                await fleet.wait()
    batches, quarantine = outbox(site.state_dir)
    return FleetOutcome(
        report,
        summary,
        code,
        batches,
        quarantine,
        duplicates or 0.0,
        counters,
        stderr.read_text(),
        real_s=time.monotonic() - started,
        fleet_cpu_s=fleet_cpu,
        gateway_cpu_s=time.process_time() - cpu0,
        problems=reconcile(report, batches, quarantine),
    )
