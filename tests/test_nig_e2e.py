"""End to end: simulated research glucose sensors (``kind="nig"``) over a real Mosquitto into the gateway,
spectra into the local history and one point per bin into VictoriaMetrics; the estimate stays research-only.
For a consenting patient the research endpoint serves them when asked by name: the estimate as FHIR flagged
research-only, the spectra as signed CSV only; every-kind queries leave them out."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B.bundle import Bundle

from firmware_sim.models.nig_sensor import POINTS
from firmware_sim.mqtt_fleet import FleetOptions, MqttFleet
from firmware_sim.ward import ManualClock, Ward
from gateway.cli import main as cli
from gateway.dataspace.bundlesig import verify_bundle, verify_csv
from gateway.dataspace.patients import ConsentDb
from gateway.dataspace.pseudonym import open_pseudonymiser
from gateway.sinks.local import History
from gateway.vocabulary import METRICS
from tests.gw import make_config, running, wait_until
from tests.mqttgw import T0, mqtt_count
from tests.services import Mosquitto, VictoriaMetrics
from tests.test_consent import _get, consent, load_fhir_text

SWEEPS = 5
PATIENT = "trial-participant-0017"


async def test_nig_devices_over_mqtt_reach_history_and_the_store(
    tmp_path: Path, mosquitto_private: Mosquitto, victoria_metrics: VictoriaMetrics, capsys: pytest.CaptureFixture[str]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ids = [f"nig-{suffix}-a", f"nig-{suffix}-b"]
    token = tmp_path / "influx.token"
    token.write_text("test-token")
    token.chmod(0o600)
    state = tmp_path / "state"
    config = make_config(
        state,
        devices={d: {"kind": "nig"} for d in ids},
        mqtt={
            "enabled": True,
            "tls": False,
            "host": mosquitto_private.host,
            "port": mosquitto_private.port,
            "ack_interval_ms": 20,
        },
        sinks={"influx": {"url": victoria_metrics.url, "token_file": str(token), "timeout_s": 5}},
        research={"enabled": True, "insecure_key_on_disk": True},
    )
    clock = ManualClock()
    ward = Ward(2, seed=4, clock=clock, epoch_s=T0, start_clock_min=7 * 60.0)
    opts = FleetOptions(mosquitto_private.host, mosquitto_private.port, None, ids, kind="nig", seed=3)
    fleet = MqttFleet(opts, ward=ward)
    async with running(config) as gw:
        assert gw.mqtt is not None
        with ConsentDb.open(state) as db:  # the trial participant wears sensor a; sensor b is nobody's
            db.bind(ids[0], PATIENT, 0)
            db.add_consents(load_fhir_text(tmp_path, [consent("t1", PATIENT)]).records)
        await asyncio.wait_for(gw.mqtt.connected.wait(), 20)
        await asyncio.to_thread(fleet.start)
        try:
            for k in range(SWEEPS):
                clock.advance(60.0)
                fleet.tick(T0 + 60.0 * k)
            assert await asyncio.to_thread(fleet.settle, 30.0)
        finally:
            await asyncio.to_thread(fleet.close)
        await wait_until(lambda: mqtt_count(gw, "committed") == SWEEPS * len(ids), what="frames committed")
        await wait_until(
            lambda: gw.local.count_spectra() == (2 * SWEEPS * len(ids), 2 * SWEEPS * len(ids) * POINTS),
            what="spectra in the local history",
        )
        points = gw.metrics.registry.get_sample_value("ds4h_readings_committed_total")
        assert points == SWEEPS * len(ids) * (1 + 2 * POINTS)

        def stored() -> int:
            return victoria_metrics.count_unique_points(f'{{__name__=~".*_value",device=~"nig-{suffix}-.*"}}')

        await wait_until(lambda: stored() == SWEEPS * len(ids) * (1 + 2 * POINTS), timeout=30, what="points in VM")
        assert gw.research is not None
        await wait_until(lambda: sum(gw.research.sink.decided.values()) == SWEEPS * len(ids), what="research")  # type: ignore[union-attr]
        await _research_endpoint(gw, state)

    t_ns = [int((T0 + 60.0 * k) * 1e9) for k in range(SWEEPS)]
    for device in ids:
        got = victoria_metrics.export(f'{{device="{device}"}}')
        names = {s["metric"]["__name__"] for s in got}
        # absolute device times without a clock reading: every point also has tq = DEVICE_UNCORRECTED
        values = {"nig_s21_magnitude_value", "nig_s21_phase_value", "glucose_research_estimate_value"}
        assert names == values | {n.replace("_value", "_tq") for n in values}
        clinical = {m.name for m in METRICS.values() if m.name.startswith("glucose_") and not m.research_only}
        assert not any(n.rsplit("_", 1)[0] in clinical for n in names), "no clinical glucose metric"
        mag = [s for s in got if s["metric"]["__name__"] == "nig_s21_magnitude_value"]
        assert sorted(int(s["metric"]["hz"]) for s in mag) == [1_000_000_000 + 80_000_000 * k for k in range(POINTS)]
        for s in mag:  # one point per bin and sweep
            assert s["metric"]["unit"] == "dB"
            assert sorted(set(s["timestamps"])) == [t // 1_000_000 for t in t_ns]
        est = next(s for s in got if s["metric"]["__name__"] == "glucose_research_estimate_value")
        assert est["metric"]["unit"] == "mg/dL" and len(set(est["timestamps"])) == SWEEPS
        assert all(20 < v < 600 for v in est["values"])

    # the offline export follows the endpoint: spectra as CSV, never as FHIR
    out = tmp_path / "spectra.csv"
    sd = ["--state-dir", str(state)]
    assert cli(["dataspace", "export", *sd, "--kind", "nig-spectrum", "--format", "csv", "--out", str(out)]) == 0
    assert len(out.read_text().strip().splitlines()) == 1 + 2 * SWEEPS
    assert cli(["dataspace", "export", *sd, "--kind", "nig-spectrum", "--out", str(out)]) == 2
    assert "CSV only" in capsys.readouterr().err

    with History(state) as h:
        metrics = {r.metric for r in h.readings() if r.device.startswith("nig-")}
        assert metrics == {"glucose_research_estimate"}
        rows = h.spectra(ids[0])
    assert [r.metric for r in rows] == ["nig_s21_magnitude", "nig_s21_phase"] * SWEEPS
    for r in rows:
        assert (r.axis_start, r.axis_step, r.axis_unit, r.values.size) == (1e9, 8e7, "Hz", POINTS)
        assert r.unit == ("dB" if r.metric == "nig_s21_magnitude" else "deg")
        assert np.isfinite(r.values).all()


async def _research_endpoint(gw: Any, state: Path) -> None:
    psn = open_pseudonymiser(state).patient(PATIENT)
    url = f"{gw.url}/dataspace/v1/observations?patient={psn}"
    token = (state / "research.token").read_text().strip()
    # every kind: clinical kinds only, so nothing of the research sensor
    status, text, _ = await _get(url, token)
    assert status == 200 and json.loads(text)["total"] == 0
    # the estimate, asked for by name: FHIR, flagged research-only, never a clinical code
    status, text, _ = await _get(f"{url}&kind=research-glucose-estimate&_count=100", token)
    assert status == 200, text
    doc = json.loads(text)
    Bundle.model_validate(doc)
    assert verify_bundle(doc, gw.identity.did).ok
    obs = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert doc["total"] == SWEEPS and len(obs) == SWEEPS
    for o in obs:
        assert o["status"] == "preliminary"
        assert {"system": "urn:ds4h:tag", "code": "research-only"}.items() <= o["meta"]["tag"][0].items()
        assert o["meta"]["security"][0]["code"] == "HRESCH"
        assert [c["display"] for c in o["code"]["coding"]] == ["DS4H_PRIVATE_GLUCOSE_RESEARCH_ESTIMATE"]
        assert "not a clinical value" in o["note"][0]["text"]
        assert o["valueQuantity"]["code"] == "mg/dL" and 20 < o["valueQuantity"]["value"] < 600
    # the spectra: CSV only, signed, one row per sweep and metric with the frequency axis
    status, text, _ = await _get(f"{url}&kind=nig-spectrum", token)
    assert status == 400 and "CSV only" in text
    status, text, headers = await _get(f"{url}&kind=nig-spectrum&_count=100", token, accept="text/csv")
    assert status == 200, text
    assert verify_csv(text.encode(), headers["X-DS4H-Signature"], gw.identity.did).ok
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2 * SWEEPS
    assert {r["metric"] for r in rows} == {"nig_s21_magnitude", "nig_s21_phase"}
    for r in rows:
        assert r["kind"] == "nig-spectrum" and r["patient"] == psn and r["device"].startswith("pdv-")
        assert (float(r["axis_start"]), float(r["axis_step"]), r["axis_unit"]) == (1e9, 8e7, "Hz")
        values = [float(v) for v in r["samples"].split()]
        assert len(values) == POINTS and all(np.isfinite(values))
        assert r["unit"] == ("dB" if r["metric"] == "nig_s21_magnitude" else "deg")
    # sensor b is bound to nobody: its data is not served under any pseudonym
    assert {r["device"] for r in rows} == {rows[0]["device"]}
