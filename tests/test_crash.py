"""kill -9 of the gateway mid-stream, 20 times: every acknowledged reading is stored exactly once.

The source runs in its own process (``ds4h-sim flood``) and records every source key the gateway
acknowledged. Checked at the outbox (source keys, unique by construction) and in VictoriaMetrics
(unique points — its export can show not-yet-merged duplicates, so they are counted per series/time).
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
from pathlib import Path

import pytest

from gateway.outbox.store import OutboxStore, open_outbox
from gateway.provenance.chain import verify_chain
from tests.services import VictoriaMetrics, free_port, http_ok

KILLS = 20
PATIENTS = 2


def write_config(tmp: Path, state: Path, vm_url: str, port: int) -> Path:
    devices = json.loads(
        subprocess.run(
            [sys.executable, "-m", "firmware_sim", "devices", "--patients", str(PATIENTS), "--json"],
            capture_output=True, check=True, text=True, timeout=60,
        ).stdout
    )["devices"]  # fmt: skip
    token = tmp / "influx.token"
    token.write_text("crash-test")
    token.chmod(0o600)
    lines = [
        "[encryption]",
        "insecure_key_on_disk = true",
        "[gateway]",
        f"state_dir = '{state}'",
        "clock = 'synced'",
        "shutdown_flush_s = 2",
        "[web]",
        f"port = {port}",
        "[outbox]",
        "synchronous = 'FULL'",
        "[sinks]",
        "retry_initial_s = 0.05",
        "retry_max_s = 0.5",
        "[sinks.influx]",
        f"url = '{vm_url}'",
        f"token_file = '{token}'",
    ]
    for device_id, d in devices.items():
        lines += [f"[devices.{device_id}]", f"kind = '{d['kind']}'"]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_gateway(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)], stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while not http_ok(f"http://127.0.0.1:{port}/healthz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gateway did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing(tmp_path: Path, vm_private: VictoriaMetrics) -> None:
    state = tmp_path / "state"
    port = free_port()
    config = write_config(tmp_path, state, vm_private.url, port)
    log = tmp_path / "gateway.log"
    acks = tmp_path / "acks.log"
    gw = start_gateway(config, port, log)
    source = subprocess.Popen(
        [
            sys.executable, "-m", "firmware_sim", "flood", "--url", f"http://127.0.0.1:{port}",
            "--token-file", str(state / "control.token"), "--patients", str(PATIENTS),
            "--batches", "1000000", "--readings-per-batch", "1", "--batches-per-request", "100",
            "--concurrency", "2", "--ack-log", str(acks), "--max-time", "600",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rng = random.Random(7)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 0.9))
            os.kill(gw.pid, signal.SIGKILL)
            gw.wait(timeout=10)
            gw = start_gateway(config, port, log)
        time.sleep(0.5)
        source.send_signal(signal.SIGTERM)  # the source flushes what it holds, then reports
        out, _ = source.communicate(timeout=120)
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["acked"] > 1000, summary
        # let the gateway forward everything, then stop it cleanly
        deadline = time.monotonic() + 120
        while True:
            conn = open_outbox(state, readonly=True)
            pending, _ = OutboxStore(conn).pending_stats("influx")
            conn.close()
            if pending == 0:
                break
            assert time.monotonic() < deadline, "outbox did not drain"
            time.sleep(0.2)
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        for p in (source, gw):
            if p.poll() is None:
                p.kill()
                p.wait()

    acked = {line for line in acks.read_text().split("\n") if line}
    assert len(acked) >= summary["acked"] * 0.99
    conn = sqlite3.connect(state / "outbox.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    committed = [r[0] for r in conn.execute("SELECT source_key FROM batches")]
    conn.close()
    assert len(committed) == len(set(committed))
    missing = acked - set(committed)
    assert not missing, f"{len(missing)} acknowledged batches missing from the outbox, e.g. {sorted(missing)[:3]}"
    # every committed batch (a superset of the acknowledged ones) is in the store exactly once
    vm_private.force_flush()
    stored = vm_private.count_unique_points('{__name__="heart_rate_value"}')
    assert stored == len(committed)
    # and the signed history is one unbroken chain across all 20 crashes
    conn = open_outbox(state, readonly=True)
    report = verify_chain(OutboxStore(conn).envelopes())
    conn.close()
    assert report.ok, report.problems
