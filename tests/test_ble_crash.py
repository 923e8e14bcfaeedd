"""kill -9 of the gateway during glucose backfills: every stored record ends up committed exactly once.

Everything runs in its own process, as on a real site: the virtual radio (``python -m firmware_sim.ble.hub``),
the simulated glucose meters (``ds4h-sim ble``) and the gateway (``ds4h-gateway run``, bumble backend
over the hub). Checked at the outbox, where source keys are unique by construction: each meter's
records 0…N−1 appear exactly once, and the signed history is one unbroken chain across the crashes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO

import pytest

from gateway.outbox.store import OutboxStore, open_outbox
from gateway.provenance.chain import verify_chain
from tests.services import free_port
from tests.test_crash import start_gateway

KILLS = 6
METERS = 2
RECORDS = 8000


def read_line(stream: IO[bytes], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    line = stream.readline().decode().strip()
    if not line and time.monotonic() > deadline:
        raise AssertionError("no output")
    return line


def glucose_keys(state: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT source_key FROM batches WHERE source_key LIKE '%/g/%'")]
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_during_glucose_backfill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    hub = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim.ble.hub", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    procs: list[subprocess.Popen[bytes]] = [hub]
    try:
        assert hub.stdout is not None
        ready = read_line(hub.stdout)
        assert ready.startswith("READY"), ready
        hub_port = int(ready.split()[1])
        sim = subprocess.Popen(
            [
                sys.executable, "-m", "firmware_sim", "ble", "--hub", f"127.0.0.1:{hub_port}",
                "--glucose-meters", str(METERS), "--records", str(RECORDS), "--seed", "11",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(sim)
        assert sim.stdout is not None
        meters = [json.loads(read_line(sim.stdout)) for _ in range(METERS)]
        state = tmp_path / "state"
        port = free_port()
        lines = [
            "[gateway]", f"state_dir = '{state}'", "clock = 'synced'", "shutdown_flush_s = 2",
            "[encryption]", "insecure_key_on_disk = true",
            "[web]", f"port = {port}",
            "[outbox]", "synchronous = 'FULL'",
            "[ble]", "enabled = true", "backend = 'bumble'", f"bumble_transport = 'tcp-client:127.0.0.1:{hub_port}'",
            "max_connections = 2", "store_interval_s = 0.2", "reconnect_initial_s = 0.2", "reconnect_max_s = 1.0",
            "racp_timeout_s = 5.0",
        ]  # fmt: skip
        ids = []
        for m in meters:
            device = f"meter-{m['index']}"
            ids.append(device)
            lines += [
                f"[devices.{device}]", "kind = 'glucose_meter'", f"ble_address = '{m['address']}'",
                f"serial = '{m['serial']}'",
            ]  # fmt: skip
        config = tmp_path / "gateway.toml"
        config.write_text("\n".join(lines) + "\n")
        log = tmp_path / "gateway.log"

        rng = random.Random(3)
        gw = start_gateway(config, port, log)
        procs.append(gw)
        kills = 0
        deadline = time.monotonic() + 240
        while kills < KILLS:
            # kill a gateway that is backfilling: once it committed something since its start, at a random moment
            at_start = len(glucose_keys(state))
            while len(glucose_keys(state)) == at_start and at_start < METERS * RECORDS:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(rng.uniform(0.1, 0.6))
            before = len(glucose_keys(state))
            if before >= METERS * RECORDS:
                break  # everything already in: nothing left to interrupt
            os.kill(gw.pid, signal.SIGKILL)
            gw.wait(timeout=10)
            kills += 1
            gw = start_gateway(config, port, log)
            procs.append(gw)
            assert time.monotonic() < deadline
        while len(set(glucose_keys(state))) < METERS * RECORDS:
            assert time.monotonic() < deadline, f"only {len(set(glucose_keys(state)))} records after {kills} kills"
            time.sleep(0.3)
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()

    print(f"{kills} kills")
    assert kills >= 4, "the backfill finished before the gateway was killed 4 times: make it longer"
    keys = glucose_keys(state)
    assert len(keys) == len(set(keys)) == METERS * RECORDS
    per_device = Counter(k.split("/")[0] for k in keys)
    assert per_device == dict.fromkeys(ids, RECORDS)
    for device in ids:
        seqs = sorted(int(k.split("/")[2]) for k in keys if k.startswith(device + "/"))
        assert seqs == list(range(RECORDS)), device
    conn = open_outbox(state, readonly=True)
    report = verify_chain(OutboxStore(conn).envelopes())
    conn.close()
    assert report.ok, report.problems
