"""A scenario fleet against a gateway: every device's report reconciles exactly with what was committed.

``ds4h-sim fleet`` runs as its own process: three patients' BLE devices (two glucose meters, two CGMs, a
heart-rate strap, an ECG strap) on a virtual-radio hub, two 5G devices through a Mosquitto with the
site's PKI, and a fault schedule on ward time (speed 60: a real second is a ward minute). The gateway
runs in-process with [ble] and [mqtt]. After the fleet settles and writes its report, the outbox must
hold, per device, exactly what the device reports as sent:

- glucose meter: one batch per record it holds at the end (control solution aside) plus each record a
  sequence reset erased after it had been transmitted — sequence numbers equal, nothing twice;
- CGM: one batch per record it holds (its time offsets), nothing else;
- heart-rate / ECG strap: one live batch per notification delivered to the gateway's subscription
  (HR measurements, PMD frames), and one ``malformed`` quarantine row per garbage notification;
- 5G: one batch per frame the ack watermark covered, which is every frame produced (none left
  buffered); the injected duplicate publishes were answered as duplicates and stored nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.ble.hub import BleHub
from firmware_sim.scenario import load_scenario
from gateway.config import DeviceEntry
from tests.gw import make_config, running
from tests.mqtt_site import MqttSite

SCENARIO = """
[scenario]
name = "ci-fleet"
seed = 17
start = "21:00"
speed = 60
pacing = "fast"

[[patients]]
count = 3

[[devices]]
kind = "glucose-meter"
patients = [0, 1]
records = 40
reading_every = "1min"

[[devices]]
kind = "cgm"
patients = [0, 2]
records = 12

[[devices]]
kind = "heart-rate"
patients = [1]

[[devices]]
kind = "ecg"
patients = [2]

[[devices]]
kind = "5g-cardiac"
patients = [0]
id_prefix = "ci-mon-"

[[devices]]
kind = "5g-cgm"
patients = [2]
id_prefix = "ci-cgm-"

[[faults]]                      # the first backfill stops answering after 10 records
kind = "hang-mid-racp"
devices = "glucose-meter:0"
at = 0
records = 10
duration = "6min"

[[faults]]                      # out of range: keeps recording, backfilled on return
kind = "out-of-range"
devices = "glucose-meter:0"
at = "12min"
duration = "6min"

[[faults]]
kind = "sequence-reset"
devices = "glucose-meter:1"
at = "15min"
count = 3

[[faults]]
kind = "radio-dropout"
devices = ["cgm:0", "heart-rate"]
at = "9min"
duration = "4min"

[[faults]]
kind = "garbage"
devices = ["heart-rate", "ecg"]
at = ["5min", "16min"]
count = 4

[[faults]]
kind = "out-of-range"
devices = "5g-cardiac"
at = "8min"
duration = "5min"

[[faults]]
kind = "duplicate-publish"
devices = "*"
at = ["6min", "19min"]
count = 3
"""

RUN_S = 24
"""Real seconds the fleet runs before settling (ward time: 24 min)."""


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
            out[device] = sum(sent["notifications"].values())
    return out


def committed_batches(batches: list[tuple[str, str]], report: dict[str, Any]) -> dict[str, int]:
    """Per device, the batches that carry what the device sent (BLE: records ``/g/``, ``/c/``; live
    notifications ``/n/``; not the battery read on connect)."""
    out: dict[str, int] = dict.fromkeys(report["devices"], 0)
    for device, key in batches:
        if device not in out:
            continue
        part = key.split("/")[1]
        if report["devices"][device]["transport"] == "mqtt" or part in ("g", "c", "n"):
            out[device] += 1
    return out


@pytest.mark.slow
async def test_fleet_report_reconciles_with_the_gateway(tmp_path: Path, mqtt_site: MqttSite) -> None:
    site = mqtt_site
    scenario_file = tmp_path / "ci-fleet.toml"
    scenario_file.write_text(SCENARIO)
    scenario = load_scenario(scenario_file)
    for d in scenario.devices:
        if not d.ble:
            site.issue_device(d.device_id, kind="cardiac_monitor" if d.kind == "5g-cardiac" else "cgm")
    report_file = tmp_path / "report.json"
    stderr = tmp_path / "fleet.log"
    async with BleHub(port=0) as hub:
        with stderr.open("wb") as err:
            fleet = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "firmware_sim", "fleet", str(scenario_file),
                "--hub", f"127.0.0.1:{hub.port}", "--broker", f"{site.broker.host}:{site.broker.port}",
                "--pki-dir", str(site.state_dir / "pki"), "--duration", str(RUN_S), "--settle-timeout", "30",
                "--resend-after", "2", "--progress", "3", "--report", str(report_file),
                stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        try:
            assert fleet.stdout is not None
            lines: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while True:
                    line = json.loads(await fleet.stdout.readline())
                    if "listed" in line:
                        break
                    lines.append(line)
            ble = {
                x["id"]: DeviceEntry(kind=x["gateway_kind"], ble_address=x["address"], serial=x["serial"])
                for x in lines
                if x["transport"] == "ble"
            }
            cfg = make_config(
                site.state_dir,
                ble={
                    "enabled": True,
                    "backend": "bumble",
                    "bumble_transport": hub.spec,
                    "max_connections": 8,
                    "store_slots": 2,
                    "reconnect_initial_s": 0.2,
                    "reconnect_max_s": 1.0,
                    "store_interval_s": 0.5,
                    "gatt_timeout_s": 3.0,
                    "racp_timeout_s": 2.0,
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
                },
            )
            cfg = cfg.model_copy(update={"devices": {**cfg.devices, **ble}})
            async with running(cfg) as gw:
                async with asyncio.timeout(RUN_S + 60):
                    summary = json.loads((await fleet.stdout.read()).decode().strip().splitlines()[-1])
                    assert await fleet.wait() == 0, (summary, stderr.read_text()[-3000:])
                report = json.loads(report_file.read_text())
                want = expected_batches(report)
                got: dict[str, int] = {}
                for _ in range(200):  # the gateway commits what it received (bounded wait)
                    got = committed_batches(outbox(site.state_dir)[0], report)
                    if got == want:
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
    print(json.dumps(summary), stderr.read_text()[-1500:])
    assert report["settled"] is True
    assert got == want, {"committed": got, "sent": want}
    keys = [k for _, k in batches]
    assert len(keys) == len(set(keys))
    assert counters["readings_lost"] == 0

    devices = report["devices"]
    fired = Counter(f["kind"] for d in devices.values() for f in d["faults"])
    for kind in ("hang-mid-racp", "out-of-range", "sequence-reset", "radio-dropout", "garbage", "duplicate-publish"):
        assert fired[kind] >= 1, (kind, fired)

    for device, entry in devices.items():
        sent = entry["sent"]
        mine = [k for d, k in batches if d == device]
        if entry["kind"] == "glucose-meter":
            seqs = sorted(int(k.split("/")[2]) for k in mine if k.split("/")[1] == "g")
            assert seqs == sorted(s for s, _ in sent["expected_keys"]), device
        elif entry["kind"] == "cgm":
            offsets = sorted(int(k.split("/")[3]) for k in mine if k.split("/")[1] == "c")
            assert offsets == sorted(sent["expected_keys"]), device
        elif entry["transport"] == "ble":
            # 1 garbage byte: "malformed" as a measurement, "unsupported" as a PMD frame type
            assert sum(n for (d, _), n in quarantine.items() if d == device) == sent["garbage"], device
        else:
            assert sent["buffered"] == 0 and sent["acked"] == sent["frames"], (device, sent)
    meter0 = devices["glucose-meter-0"]["sent"]
    assert meter0["records_expected"] > 40  # it kept recording while out of range
    assert devices["glucose-meter-1"]["sent"]["erased_by_reset"] > 0
    assert sum(d["sent"]["garbage"] for d in devices.values() if d["kind"] in ("heart-rate", "ecg")) == 16
    dup_sent = sum(d["sent"]["duplicates_sent"] for d in devices.values() if d["transport"] == "mqtt")
    assert dup_sent >= 1
    assert (duplicates or 0) >= dup_sent
