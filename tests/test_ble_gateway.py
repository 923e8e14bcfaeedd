"""End to end over a virtual radio: simulated peripherals → bumble → bleak → drivers → outbox → local history."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.ble.clock import DeviceClock as SimClock
from firmware_sim.ble.devices.blood_pressure import BloodPressureCuff
from firmware_sim.ble.devices.cgm import Cgm
from firmware_sim.ble.devices.ecg import EcgStrap
from firmware_sim.ble.devices.glucose_meter import GlucoseMeter
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.devices.pulse_oximeter import PulseOximeter
from firmware_sim.ble.identity import Profile
from firmware_sim.ble.peripheral import SimPeripheral
from gateway.sinks.local import History
from tests.blegw import ble_config, ble_gateway, committed, device_id, history, ident, radio, settled, until
from tests.gw import running
from tests.services import VictoriaMetrics


async def test_heart_rate_strap_streams_into_the_outbox(tmp_path: Path) -> None:
    strap = HeartRateStrap(ident(Profile.HEART_RATE), interval_s=0.1)
    async with ble_gateway(tmp_path, [strap]) as (gw, _sim):
        await until(lambda: committed(gw) > 30, what="heart-rate points committed")
        stats = gw.stats()["ble"]["devices"][device_id(strap.identity)]
        assert stats["connected"] is True
        assert stats["battery_pct"] is not None
    rows = history(tmp_path, "SELECT metric, unit, COUNT(*) FROM readings GROUP BY metric, unit")
    got = {(m, u): n for m, u, n in rows}
    assert got[("heart_rate", "/min")] >= 3
    assert got[("rr_interval", "ms")] >= 3
    assert ("battery_level", "%") in got


# --- glucose meters: RACP backfill --------------------------------------------------------------------------


def glucose_rows(state_dir: Path, device: str) -> list[tuple[int, float]]:
    with History(state_dir) as h:
        rows = [r for r in h.readings(device) if r.metric.startswith("glucose")]
    return sorted((int(r.seq or 0), float(r.value or 0.0)) for r in rows)


async def test_glucose_meter_backfill_new_records_only_and_resets(tmp_path: Path) -> None:
    meter = GlucoseMeter(ident(Profile.GLUCOSE_METER), records=25)
    meter.add_control_solution(2)
    dev = device_id(meter.identity)
    async with ble_gateway(tmp_path, [meter], store_interval_s=0.3) as (gw, _sim):
        await until(lambda: len(glucose_rows(tmp_path, dev)) == 25 and settled(gw), what="first backfill")
        # new readings on the meter: only they are fetched on the next turn
        now = meter.clock.now()
        for i in range(5):
            meter.add_reading(now + timedelta(seconds=i))
        await until(lambda: len(glucose_rows(tmp_path, dev)) == 30 and settled(gw), what="new records")
        # the meter is reset: sequence numbers restart at 0 with new readings
        meter.reset_meter(new_records=4)
        await until(lambda: len(glucose_rows(tmp_path, dev)) == 34 and settled(gw), what="after reset")
        await asyncio.sleep(1.0)  # several more turns: nothing new may appear
        counters = gw.counters()
        quarantine = gw.stats().get("quarantine", {})
    rows = glucose_rows(tmp_path, dev)
    assert len(rows) == 34
    assert sorted(seq for seq, _ in rows) == sorted([*range(25), *range(27, 32), *range(4)])  # 25, 26: control
    assert counters["readings_lost"] == 0
    assert quarantine.get("control_solution", 0) == 2


async def test_glucose_meter_disconnect_mid_transfer_then_every_record_once(tmp_path: Path) -> None:
    meter = GlucoseMeter(ident(Profile.GLUCOSE_METER, 1), records=200)
    meter.faults.racp_disconnect_after = 70
    dev = device_id(meter.identity)
    async with ble_gateway(tmp_path, [meter]) as (gw, _sim):
        await until(lambda: len(glucose_rows(tmp_path, dev)) == 200 and settled(gw), what="all records")
        failures = gw.stats()["ble"]["devices"][dev]["failures"]
    rows = glucose_rows(tmp_path, dev)
    assert [seq for seq, _ in rows] == list(range(200))
    assert failures == 0  # the next turn completed


# --- every device type into the time-series store -----------------------------------------------------------


async def test_one_of_each_device_type_lands_in_victoria_metrics(
    tmp_path: Path, victoria_metrics: VictoriaMetrics
) -> None:
    clock = SimClock(offset_s=-5400.0, drift_ppm=40.0)  # the meter's clock is 1.5 h behind and drifting
    meter = GlucoseMeter(ident(Profile.GLUCOSE_METER, 50), records=6, clock=clock)
    devices: list[SimPeripheral] = [
        HeartRateStrap(ident(Profile.HEART_RATE, 50), interval_s=0.2),
        BloodPressureCuff(ident(Profile.BLOOD_PRESSURE, 50), interval_s=1.0, cuff_step_s=0.05),
        PulseOximeter(ident(Profile.PULSE_OXIMETER, 50), interval_s=0.2, spot_check_every=3),
        meter,
        Cgm(ident(Profile.CGM, 50), records=8),
        EcgStrap(ident(Profile.ECG, 50), interval_s=0.3),
    ]
    token = tmp_path / "token"
    token.write_text("dummy")
    sinks = {"influx": {"url": victoria_metrics.url, "token_file": str(token), "timeout_s": 5}}
    expected = {
        "heart_rate": ("/min", 50),
        "rr_interval": ("ms", 50),
        "battery_level": ("%", 50),
        "bp_systolic": ("mm[Hg]", 50),
        "bp_diastolic": ("mm[Hg]", 50),
        "spo2": ("%", 50),
        "pulse_rate_oximeter": ("/min", 50),
        "glucose_capillary_whole_blood": ("mg/dL", 50),
        "glucose_isf": ("mg/dL", 50),
        "ecg": ("uV", 50),
    }

    def series(metric: str) -> list[dict[str, Any]]:
        return victoria_metrics.export(f'{{__name__="{metric}_value",device=~".*-50"}}')

    async with ble_gateway(tmp_path, devices, {"sinks": sinks}, max_connections=8) as (gw, _sim):
        await until(lambda: len(glucose_rows(tmp_path, device_id(meter.identity))) == 6, what="glucose records")
        for metric in expected:
            await until(lambda m=metric: bool(series(m)), timeout_s=30, what=f"{metric} in VictoriaMetrics")  # type: ignore[misc]
        ble = gw.stats()["ble"]["devices"]
    for metric, (unit, _) in expected.items():
        units = {s["metric"]["unit"] for s in series(metric)}
        assert units == {unit}, metric
    # the meter's stamps were corrected by its clock skew: stored time = true time of each record
    skew = ble[device_id(meter.identity)]["clock_skew_s"]
    assert skew == pytest.approx(5400.0, abs=2.0)
    stored = {
        seq: t
        for seq, t in history(tmp_path, "SELECT seq, t_ns FROM readings WHERE device = ?", device_id(meter.identity))
    }
    for rec in meter.records:
        true_utc_s = (rec.base_time - datetime(1970, 1, 1)).total_seconds() - clock.offset_s
        assert stored[rec.sequence] / 1e9 == pytest.approx(true_utc_s, abs=2.0)


# --- scale and scheduling ----------------------------------------------------------------------------------


async def test_32_heart_rate_straps_all_connected_and_streaming(tmp_path: Path) -> None:
    straps = [HeartRateStrap(ident(Profile.HEART_RATE, i), interval_s=0.5) for i in range(32)]
    ids = [device_id(s.identity) for s in straps]
    async with ble_gateway(tmp_path, straps, max_connections=32, store_slots=0) as (gw, _sim):

        def streaming() -> bool:
            rows = dict(
                history(tmp_path, "SELECT device, COUNT(*) FROM readings WHERE metric = 'heart_rate' GROUP BY device")
            )
            return all(rows.get(i, 0) >= 3 for i in ids)

        await until(streaming, timeout_s=60, what="every strap streaming")
        devices = gw.stats()["ble"]["devices"]
    assert all(devices[i]["connected"] for i in ids)


async def test_12_glucose_meters_share_4_slots_and_every_record_arrives(tmp_path: Path) -> None:
    meters = [GlucoseMeter(ident(Profile.GLUCOSE_METER, 100 + i), records=30) for i in range(12)]
    ids = [device_id(m.identity) for m in meters]
    async with ble_gateway(tmp_path, meters, max_connections=4) as (gw, _sim):

        def collected() -> bool:
            rows = dict(
                history(tmp_path, "SELECT device, COUNT(*) FROM readings WHERE metric LIKE 'glucose%' GROUP BY device")
            )
            return all(rows.get(i, 0) == 30 for i in ids) and settled(gw)

        await until(collected, timeout_s=60, what="every meter's records")
        peak = gw.metrics.registry.get_sample_value("ds4h_ble_connects_total")
    assert peak is not None and peak >= 12
    for i in ids:
        seqs = [s for s, _ in glucose_rows(tmp_path, i)]
        assert seqs == list(range(30)), i


async def test_a_device_sending_garbage_or_hanging_does_not_delay_the_others(tmp_path: Path) -> None:
    good = HeartRateStrap(ident(Profile.HEART_RATE, 200), interval_s=0.1)
    noisy = HeartRateStrap(ident(Profile.HEART_RATE, 201), interval_s=0.1)
    noisy.faults.garbage = 1_000_000
    hung = GlucoseMeter(ident(Profile.GLUCOSE_METER, 202), records=5)
    hung.faults.hang()
    meter = GlucoseMeter(ident(Profile.GLUCOSE_METER, 203), records=5)
    async with ble_gateway(tmp_path, [good, noisy, hung, meter], max_connections=4, store_slots=2) as (gw, _sim):
        await until(
            lambda: len(glucose_rows(tmp_path, device_id(meter.identity))) == 5, timeout_s=20, what="the good meter"
        )
        await until(lambda: committed(gw) > 40, what="the good strap")
        quarantined = gw.metrics.registry.get_sample_value("ds4h_rejected_total", {"reason": "malformed"}) or 0
        hung_state = gw.stats()["ble"]["devices"][device_id(hung.identity)]
    assert quarantined >= 1  # garbage that does not decode is counted, not stored (random bytes may decode)
    assert glucose_rows(tmp_path, device_id(hung.identity)) == []
    assert hung_state["failures"] >= 1 or hung_state["connected"]


async def test_a_device_registered_by_serial_only_is_found_and_strangers_are_left_alone(tmp_path: Path) -> None:
    mine = HeartRateStrap(ident(Profile.HEART_RATE, 400), interval_s=0.2)
    stranger = HeartRateStrap(ident(Profile.HEART_RATE, 401), interval_s=0.2)
    async with radio([mine, stranger]) as (hub, _sim):
        cfg = ble_config(tmp_path, hub, [mine])
        entry = cfg.devices[device_id(mine.identity)]
        cfg = cfg.model_copy(
            update={
                "devices": {**cfg.devices, device_id(mine.identity): entry.model_copy(update={"ble_address": None})}
            }
        )
        async with running(cfg) as gw:
            await until(lambda: committed(gw) > 10, what="the serial-registered strap streaming")
            devices = gw.stats()["ble"]["devices"]
    assert devices[device_id(mine.identity)]["connected"]
    assert set(devices) == {device_id(mine.identity)}
    rows = history(tmp_path, "SELECT DISTINCT device FROM readings")
    assert rows == [(device_id(mine.identity),)]


async def test_a_cgm_notification_with_a_bad_crc_costs_no_record(tmp_path: Path) -> None:
    cgm = Cgm(ident(Profile.CGM, 500), records=30, interval_s=0.2)
    cgm.faults.bad_crc = 3  # the first records the gateway receives are corrupted
    dev = device_id(cgm.identity)

    def offsets() -> list[int]:
        rows = history(tmp_path, "SELECT seq FROM readings WHERE device = ? AND metric = 'glucose_isf'", dev)
        return sorted(int(s) for (s,) in rows)

    async with ble_gateway(tmp_path, [cgm]) as (gw, _sim):
        await until(
            lambda: (
                settled(gw) and offsets() == sorted(r.time_offset_min for r in cgm.records) and len(offsets()) >= 30
            ),
            what="every CGM record, the corrupted ones fetched again",
        )
        bad = gw.metrics.registry.get_sample_value("ds4h_rejected_total", {"reason": "bad_crc"})
    assert bad is not None and bad >= 1
