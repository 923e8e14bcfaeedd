"""End to end over a virtual radio: simulated peripherals → bumble → bleak → drivers → outbox → local history."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from firmware_sim.ble.devices.glucose_meter import GlucoseMeter
from firmware_sim.ble.devices.heart_rate import HeartRateStrap
from firmware_sim.ble.identity import Profile
from tests.blegw import ble_gateway, committed, device_id, history, ident, settled, until


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
    return [
        (int(seq), float(v))
        for seq, v in history(
            state_dir,
            "SELECT seq, value FROM readings WHERE device = ? AND metric LIKE 'glucose%' ORDER BY seq",
            device,
        )
    ]


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
