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

import json
from collections import Counter
from pathlib import Path

import pytest

from firmware_sim.ble.hub import BleHub
from firmware_sim.scenario import shipped_scenarios
from gateway.sinks.local import History
from tests.fleet_harness import expected_batches, run_fleet
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

[[faults]]                      # quarantined, never stored as patient data
kind = "control-solution"
devices = "glucose-meter:1"
at = ["4min", "17min"]
count = 2

[[faults]]                      # quarantined, then fetched again: reconciles like any record
kind = "bad-crc"
devices = "cgm:2"
at = "10min"
count = 2

[[faults]]
kind = "low-battery"
devices = ["5g-cgm", "heart-rate"]
at = "7min"
level = 9
"""

RUN_S = 24
"""Real seconds the fleet runs before settling (ward time: 24 min)."""


def history_values(state: Path, device: str, metric: str) -> list[float]:
    with History(state) as h:
        return [float(r.value) for r in h.readings(device, metric) if r.value is not None]


@pytest.mark.slow
async def test_fleet_report_reconciles_with_the_gateway(tmp_path: Path, mqtt_site: MqttSite) -> None:
    scenario_file = tmp_path / "ci-fleet.toml"
    scenario_file.write_text(SCENARIO)
    async with BleHub(port=0) as hub:
        out = await run_fleet(
            tmp_path,
            mqtt_site,
            scenario_file,
            hub=("127.0.0.1", hub.port),
            run_s=RUN_S,
            fleet_args=["--resend-after", "2"],
        )
    print(json.dumps(out.summary), out.log[-1500:])
    assert out.exit_code == 0, out.log[-3000:]
    assert out.report["settled"] is True
    assert out.problems == []
    assert out.counters["readings_lost"] == 0

    devices = out.report["devices"]
    fired = Counter(f["kind"] for d in devices.values() for f in d["faults"])
    for kind in (
        "hang-mid-racp", "out-of-range", "sequence-reset", "radio-dropout", "garbage", "duplicate-publish",
        "control-solution", "low-battery",
    ):  # fmt: skip
        assert fired[kind] >= 1, (kind, fired)
    meter0 = devices["glucose-meter-0"]["sent"]
    assert meter0["records_expected"] > 40  # it kept recording while out of range
    meter1 = devices["glucose-meter-1"]["sent"]
    assert meter1["erased_by_reset"] > 0
    assert meter1["control_solution_transmitted"] >= 2
    assert out.quarantine[("glucose-meter-1", "control_solution")] >= meter1["control_solution_transmitted"]
    assert sum(d["sent"]["garbage"] for d in devices.values() if d["kind"] in ("heart-rate", "ecg")) == 16
    dup_sent = sum(d["sent"]["duplicates_sent"] for d in devices.values() if d["transport"] == "mqtt")
    assert dup_sent >= 1
    assert out.duplicates >= dup_sent
    # the 5G CGM's battery records: full at the start, then the low-battery fault's level
    battery = history_values(mqtt_site.state_dir, "ci-cgm-01", "battery_level")
    assert battery[0] == 100 and battery[-1] == 9, battery


SHIPPED_RUN_S = 12
"""Real seconds each shipped scenario runs in CI (before settling)."""

SHIPPED_SPEED = {"ambulance-5g": 60.0, "diabetes-ward-night": 600.0, "stroke-unit-af": 60.0}
"""Shipped scenarios are sped up so that their faults fire within the CI run."""


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_scenarios()))
async def test_shipped_scenario_runs_against_a_gateway_and_reconciles(
    tmp_path: Path, mqtt_site: MqttSite, name: str
) -> None:
    speed = ["--speed", str(SHIPPED_SPEED[name])] if name in SHIPPED_SPEED else []
    async with BleHub(port=0) as hub:
        out = await run_fleet(
            tmp_path,
            mqtt_site,
            Path(name),  # a shipped scenario's name
            hub=("127.0.0.1", hub.port),
            run_s=SHIPPED_RUN_S,
            fleet_args=["--resend-after", "2", *speed],
        )
    print(json.dumps(out.summary), out.log[-1500:])
    assert out.exit_code == 0, out.log[-3000:]
    assert out.report["settled"] is True
    assert out.problems == []
    assert out.counters["readings_lost"] == 0
    assert out.report["faults_fired"] >= 1
    sent = expected_batches(out.report)
    assert all(n > 0 for n in sent.values()), sent  # every device delivered something
