"""Crashes during a QoS 1 flood over mutual TLS: nothing a device saw acknowledged is lost or duplicated.

Publishers (``ds4h-sim mqtt``) run in their own processes with their own certificates and log every
frame the gateway's ack watermark covered. The gateway (``ds4h-gateway run``) is SIGKILLed ten times
mid-stream; in a second test the broker is SIGKILLed and restarted, losing what it had not saved.
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

from tests.mqtt_site import MqttSite
from tests.services import free_port, http_get
from tests.test_crash import start_gateway

KILLS = 10
DEVICES = [f"flood-{i}" for i in range(4)]
FRAMES_PER_DEVICE = 5000  # 20,000 messages


def write_config(tmp: Path, site: MqttSite, port: int) -> Path:
    lines = [
        "[encryption]",
        "insecure_key_on_disk = true",
        "[gateway]",
        f"state_dir = '{site.state_dir}'",
        "clock = 'synced'",
        "shutdown_flush_s = 2",
        "[web]",
        f"port = {port}",
        "[mqtt]",
        "enabled = true",
        f"host = '{site.broker.host}'",
        f"port = {site.broker.port}",
        f"ca_file = '{site.ca_cert}'",
        f"cert_file = '{site.gateway_cert}'",
        f"key_file = '{site.gateway_key}'",
        "reconnect_initial_s = 0.1",
        "reconnect_max_s = 1",
    ]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_publishers(site: MqttSite, acks: Path, log: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for half in (DEVICES[:2], DEVICES[2:]):
        with open(log, "ab") as err:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "firmware_sim",
                        "mqtt",
                        "--broker",
                        f"{site.broker.host}:{site.broker.port}",
                        "--pki-dir",
                        str(site.state_dir / "pki"),
                        "--device-ids",
                        ",".join(half),
                        "--flood",
                        str(FRAMES_PER_DEVICE),
                        "--ack-log",
                        str(acks),
                        "--resend-after",
                        "5",
                        "--settle-timeout",
                        "240",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
            )
    return procs


def finish(procs: list[subprocess.Popen[bytes]], log: Path) -> list[dict[str, int]]:
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"publisher failed ({p.returncode}): {stdout.decode()}\n{log.read_text()[-3000:]}"
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def committed(state: Path) -> list[str]:
    conn = sqlite3.connect(state / "outbox.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [r[0] for r in conn.execute("SELECT source_key FROM batches")]
    finally:
        conn.close()


def check_exactly_once(acks: Path, state: Path, summaries: list[dict[str, int]]) -> None:
    acked = [line for line in acks.read_text().split("\n") if line]
    assert len(acked) == len(set(acked)), "a frame was acknowledged twice"
    assert len(acked) == len(DEVICES) * FRAMES_PER_DEVICE, summaries
    keys = committed(state)
    assert len(keys) == len(set(keys))
    missing = set(acked) - set(keys)
    assert not missing, f"{len(missing)} acknowledged frames missing from the outbox, e.g. {sorted(missing)[:3]}"
    assert len(keys) == len(acked)  # nothing else, nothing twice


@pytest.fixture
def site_devices(mqtt_site: MqttSite) -> MqttSite:
    for d in DEVICES:
        mqtt_site.issue_device(d, kind="cardiac_monitor")
    return mqtt_site


@pytest.mark.slow
def test_kill_9_gateway_during_flood(tmp_path: Path, site_devices: MqttSite) -> None:
    site = site_devices
    port = free_port()
    config = write_config(tmp_path, site, port)
    log, acks = tmp_path / "gateway.log", tmp_path / "acks.log"
    gw = start_gateway(config, port, log)
    pubs = start_publishers(site, acks, tmp_path / "publishers.log")
    rng = random.Random(11)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 0.8))
            os.kill(gw.pid, signal.SIGKILL)
            gw.wait(timeout=10)
            gw = start_gateway(config, port, log)
        summaries = finish(pubs, tmp_path / "publishers.log")
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "ds4h_readings_lost_total 0.0" in body.decode()
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        for p in [*pubs, gw]:
            if p.poll() is None:
                p.kill()
                p.wait()
    check_exactly_once(acks, site.state_dir, summaries)


@pytest.mark.slow
def test_broker_killed_and_restarted_mid_flood(tmp_path: Path, site_devices: MqttSite) -> None:
    site = site_devices
    port = free_port()
    config = write_config(tmp_path, site, port)
    log, acks = tmp_path / "gateway.log", tmp_path / "acks.log"
    gw = start_gateway(config, port, log)
    pubs = start_publishers(site, acks, tmp_path / "publishers.log")
    try:
        for _ in range(2):
            time.sleep(1.0)
            site.broker.kill()  # SIGKILL: whatever it had not autosaved is gone
            time.sleep(0.5)
            site.broker.start()
        summaries = finish(pubs, tmp_path / "publishers.log")
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        for p in [*pubs, gw]:
            if p.poll() is None:
                p.kill()
                p.wait()
    check_exactly_once(acks, site.state_dir, summaries)


def test_device_reboot_mid_stream(tmp_path: Path, mqtt_site: MqttSite) -> None:
    """Devices reboot every 300 frames (new boot id, seq from 0): no loss, and no new frame taken for a replay."""
    site = mqtt_site
    for d in ("reboot-1", "reboot-2"):
        site.issue_device(d, kind="cardiac_monitor")
    port = free_port()
    config = write_config(tmp_path, site, port)
    acks = tmp_path / "acks.log"
    gw = start_gateway(config, port, tmp_path / "gateway.log")
    try:
        out = subprocess.run(
            [
                sys.executable, "-m", "firmware_sim", "mqtt",
                "--broker", f"{site.broker.host}:{site.broker.port}", "--pki-dir", str(site.state_dir / "pki"),
                "--device-ids", "reboot-1,reboot-2", "--flood", "1000", "--reboot-after", "300",
                "--format", "json", "--ack-log", str(acks), "--settle-timeout", "60",
            ],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr[-2000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=30) == 0
    finally:
        if gw.poll() is None:
            gw.kill()
            gw.wait()
    acked = [line for line in acks.read_text().split("\n") if line]
    keys = committed(site.state_dir)
    assert summary["frames"] == 2000 and len(acked) == 2000
    assert sorted(keys) == sorted(acked)
    boots = {k.rsplit("/", 1)[0] for k in keys}
    assert len(boots) == 2 * 4  # each device: the first boot and three reboots
