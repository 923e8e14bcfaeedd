"""End to end: simulated research glucose sensors (``kind="nig"``) over a real Mosquitto into the gateway,
spectra into the local history and one point per bin into VictoriaMetrics; the estimate stays research-only."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np

from firmware_sim.models.nig_sensor import POINTS
from firmware_sim.mqtt_fleet import FleetOptions, MqttFleet
from firmware_sim.ward import ManualClock, Ward
from gateway.sinks.local import History
from gateway.vocabulary import METRICS
from tests.gw import make_config, running, wait_until
from tests.mqttgw import T0, mqtt_count
from tests.services import Mosquitto, VictoriaMetrics

SWEEPS = 5


async def test_nig_devices_over_mqtt_reach_history_and_the_store(
    tmp_path: Path, mosquitto_private: Mosquitto, victoria_metrics: VictoriaMetrics
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
    )
    clock = ManualClock()
    ward = Ward(2, seed=4, clock=clock, epoch_s=T0, start_clock_min=7 * 60.0)
    opts = FleetOptions(mosquitto_private.host, mosquitto_private.port, None, ids, kind="nig", seed=3)
    fleet = MqttFleet(opts, ward=ward)
    async with running(config) as gw:
        assert gw.mqtt is not None
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

    with History(state) as h:
        metrics = {r.metric for r in h.readings() if r.device.startswith("nig-")}
        assert metrics == {"glucose_research_estimate"}
        rows = h.spectra(ids[0])
    assert [r.metric for r in rows] == ["nig_s21_magnitude", "nig_s21_phase"] * SWEEPS
    for r in rows:
        assert (r.axis_start, r.axis_step, r.axis_unit, r.values.size) == (1e9, 8e7, "Hz", POINTS)
        assert r.unit == ("dB" if r.metric == "nig_s21_magnitude" else "deg")
        assert np.isfinite(r.values).all()
