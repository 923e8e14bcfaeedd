"""`ds4h-gateway demo`: data flows within seconds, /metrics answers while it runs, nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import http_get


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_json_and_metrics_while_running(tmp_path: Path, broker: str) -> None:
    state = tmp_path / "demo-state"
    extra = ["--embedded-broker"] if broker == "embedded" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--duration", "20", "--json", "--state-dir", str(state), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # the demo first starts the simulators, the BLE hub and the broker (fresh PKI): on a loaded 2-core box
        # that alone can take 20 s; a demo that dies on the way fails at once
        deadline = time.monotonic() + 90
        control = state / "control.json"
        while not control.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "demo did not publish its control URL"
            time.sleep(0.1)
        url = json.loads(control.read_text())["url"]
        committed = 0.0
        deadline = time.monotonic() + 30
        while committed == 0 and time.monotonic() < deadline:
            status, body = http_get(f"{url}/metrics", timeout=5)
            assert status == 200
            for line in body.decode().splitlines():
                if line.startswith("ds4h_readings_committed_total "):
                    committed = float(line.split()[1])
            time.sleep(0.5)
        assert committed > 0, "no data flowed within seconds"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["readings_committed"] > 0
    assert summary["readings_lost"] == 0
    assert summary["readings_forwarded"] == summary["readings_committed"]
    assert summary["did"].startswith("did:key:z6Mk")
    assert not (state / "control.json").exists()
    # the ward's 5G devices delivered over MQTT through the demo's own broker
    mqtt = summary["mqtt"]
    assert mqtt["broker"] == ("amqtt" if broker == "embedded" else "mosquitto")
    assert mqtt["devices"] == ["ward-cgm-01", "ward-mon-01"]
    assert mqtt["messages_committed"] > 0 and mqtt["points_committed"] > 0 and mqtt["simulator_exit"] == 0
    # and the ward's BLE devices (one per profile, two HR straps) delivered over the virtual radio
    ble = summary["ble"]
    assert len(ble["devices"]) == 7
    assert ble["connected_at_end"] >= 5 and ble["points_committed"] > 0
    # the ward ran its scenario, and at least one scheduled fault was visible at the gateway within the run:
    # a strap's drop-out (link down, then up again) or garbage notifications quarantined
    ward = summary["ward"]
    assert ward["scenario"] == "demo-ward" and len(ward["devices"]) == 9
    assert ward["faults_fired"] > 0 and ward["simulator_exit"] == 0
    assert ble["drops"].get("heart-rate-0", 0) > 0 or ward["quarantine"].get("malformed", 0) > 0
