"""Scenario files: the shipped ones load, bad ones name the file and the key, the fleet lists its devices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.scenario import FaultKind, ScenarioError, load_scenario, parse_scenario, shipped_scenarios

BASE: dict[str, Any] = {
    "scenario": {"seed": 3, "speed": 60, "duration": "2h"},
    "patients": 2,
    "devices": [{"kind": "glucose-meter"}, {"kind": "5g-cardiac", "id_prefix": "mon-"}],
}


def with_(**parts: Any) -> dict[str, Any]:
    return {**BASE, **parts}


def test_shipped_scenarios_load() -> None:
    names = shipped_scenarios()
    assert {"diabetes-ward-night", "stroke-unit-af", "ambulance-5g"} <= set(names)
    for name in names:
        s = load_scenario(name)
        assert s.devices and s.faults, name
    night = load_scenario("diabetes-ward-night")
    assert night.start_clock_min == 22 * 60 and night.speed == 60
    assert any(sched.boluses for _, sched in night.events)  # the over-bolus
    kinds = {f.kind for f in night.faults}
    assert {FaultKind.OUT_OF_RANGE, FaultKind.SEQUENCE_RESET} <= kinds
    stroke = load_scenario("stroke-unit-af")
    assert any(p.cardiac is not None and p.cardiac.af_episodes for p in stroke.patients)
    assert {FaultKind.RADIO_DROPOUT, FaultKind.GARBAGE} <= {f.kind for f in stroke.faults}
    amb = load_scenario("ambulance-5g")
    assert {d.kind for d in amb.devices} == {"5g-cardiac", "5g-cgm"}
    assert FaultKind.DUPLICATE_PUBLISH in {f.kind for f in amb.faults}


def test_devices_faults_and_schedules() -> None:
    s = parse_scenario(
        with_(
            faults=[
                {"kind": "radio-dropout", "devices": "*", "at": ["10min", "1h"], "duration": "5min"},
                {"kind": "sequence-reset", "devices": "glucose-meter:1", "at": 60, "count": 2},
                {"kind": "duplicate-publish", "devices": "5g-cardiac", "every": "30min", "jitter": "1min"},
            ]
        )
    )
    assert [d.device_id for d in s.devices] == ["glucose-meter-0", "glucose-meter-1", "mon-01", "mon-02"]
    drop, reset, dup = s.faults
    assert drop.times_s == (600.0, 3600.0) and drop.duration_s == 300.0 and len(drop.targets) == 4
    assert reset.targets == ("glucose-meter-1",) and reset.count == 2
    assert dup.targets == ("mon-01", "mon-02") and len(dup.times_s) == 4  # 30, 60, 90, 120 min ± 1 min
    assert all(abs(t - 1800 * (k + 1)) <= 60 for k, t in enumerate(dup.times_s))


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (with_(patients=0), "patients"),
        (with_(devices=[{"kind": "toaster"}]), "devices[0].kind"),
        (with_(devices=[{"kind": "cgm", "patients": [5]}]), "devices[0].patients[0]"),
        (with_(devices=[{"kind": "cgm", "colour": "red"}]), "devices[0].colour"),
        (with_(faults=[{"kind": "meltdown", "at": 0}]), "faults[0].kind"),
        (with_(faults=[{"kind": "sequence-reset", "devices": "5g-cardiac", "at": 0}]), "faults[0].devices"),
        (with_(faults=[{"kind": "radio-dropout", "at": 0}]), "faults[0]"),  # no duration
        (with_(faults=[{"kind": "garbage", "devices": "nobody", "at": 0}]), "faults[0].devices"),
        (with_(faults=[{"kind": "radio-dropout", "at": "soon", "duration": 5}]), "faults[0].at"),
        (with_(scenario={"start": "25:00"}), "scenario.start"),
        (with_(scenario={"speed": 0}), "scenario.speed"),
        ({**BASE, "patients": [{"seed": 1, "af_episodes": [["10min", "5min"]]}]}, "patients[0]"),
        ({**BASE, "patients": [{"events": [{"at": "1h", "kind": "nap"}]}]}, "patients[0].events[0].kind"),
    ],
)
def test_bad_scenarios_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, "ward.toml")
    assert info.value.file == "ward.toml"
    assert info.value.key == key, str(info.value)
    assert str(info.value).startswith(f"ward.toml: {key}: ")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario\nseed = 1\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_fleet_list_prints_devices_and_exits(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "fleet", "diabetes-ward-night", "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert lines[-1] == {"listed": 8, "scenario": "diabetes-ward-night"}
    meters = [x for x in lines[:-1] if x["kind"] == "glucose-meter"]
    assert len(meters) == 4 and all(x["transport"] == "ble" and x["address"] and x["serial"] for x in meters)
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nseed = -1\n")
    r = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "fleet", str(bad), "--list"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "scenario.seed" in r.stderr
