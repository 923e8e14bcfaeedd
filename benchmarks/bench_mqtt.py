"""MQTT ingest benchmark: QoS 1 messages flooded into Mosquitto → gateway → committed (FULL) and acknowledged.

For each workload (single-reading frames; ECG frames of 250 samples) fast C publishers (``mosquitto_pub
-l``, one per device, from the Debian package ``mosquitto-clients``) flood the broker while one subscriber
takes everything:

- **publishers alone**: nobody subscribed — the broker + publisher ceiling on this machine;
- **bare**: a receive-only aiomqtt subscriber (acks on receipt, keeps nothing): the client library's ceiling
  (also shown: the same with paho alone on its own network thread, ``bare_paho``);
- **gateway**: ``ds4h-gateway run`` (its own process) decodes each SenML frame, commits it to the outbox
  (signed, synchronous=FULL), then sends the PUBACK and the device ack watermark.

Rates are messages (or samples) per second from the publishers' start to the last message received (bare)
or committed (gateway: ``batches.committed_ns`` in its outbox; every PUBACK follows its commit at once).
Target: gateway ≥ 80 % of bare. The broker keeps no persistence here (autosave would dominate).

    python benchmarks/bench_mqtt.py [--messages 100000] [--ecg-frames 20000] [--quick] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import GatewayProcess, log, machine  # noqa: E402
from benchmarks.mqtt_tools import device_ids, write_lines  # noqa: E402
from tests.services import Mosquitto  # noqa: E402

TOOLS = Path(__file__).resolve().parent / "mqtt_tools.py"
DEVICES = 4
"""One C publisher per device."""


class BenchBroker(Mosquitto):
    """No persistence: a saved queue rewritten every second would be what we measure."""

    autosave_interval_s = 0


def publishers(broker: Mosquitto, files: list[tuple[str, Path]]) -> list[subprocess.Popen[bytes]]:
    exe = shutil.which("mosquitto_pub")
    if exe is None:
        raise SystemExit("mosquitto_pub not found: apt-get install -y mosquitto-clients")
    procs = []
    for topic, path in files:
        with open(path, "rb") as f:
            procs.append(
                subprocess.Popen(
                    [
                        exe,
                        "-h",
                        broker.host,
                        "-p",
                        str(broker.port),
                        "-V",
                        "mqttv5",
                        "-q",
                        "1",
                        "-M",
                        "1000",
                        "-t",
                        topic,
                        "-D",
                        "publish",
                        "content-type",
                        "application/senml+json",
                        "-l",
                    ],
                    stdin=f,
                )
            )
    return procs


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float = 600) -> float:
    for p in procs:
        if p.wait(timeout=timeout) != 0:
            raise RuntimeError(f"mosquitto_pub exited with {p.returncode}")
    return time.time()


def run_publishers_alone(broker: Mosquitto, files: list[tuple[str, Path]]) -> float:
    t0 = time.time()
    end = wait_all(publishers(broker, files))
    return end - t0


def run_bare(
    broker: Mosquitto, files: list[tuple[str, Path]], messages: int, boot: str, *, paho: bool = False
) -> dict[str, Any]:
    bare = subprocess.Popen(
        [sys.executable, str(TOOLS), "bare", "--port", str(broker.port), "--client-id", f"bare-{boot}",
         "--messages", str(messages), "--idle", "10", *(["--paho"] if paho else [])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert bare.stdout is not None
    if bare.stdout.readline().strip() != "subscribed":
        raise RuntimeError("bare subscriber did not subscribe")
    t0 = time.time()
    pub_end = wait_all(publishers(broker, files))
    out, _ = bare.communicate(timeout=600)
    got: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {"received": got["received"], "seconds": got["last"] - t0, "publish_seconds": pub_end - t0}


def run_gateway(
    broker: Mosquitto, files: list[tuple[str, Path]], messages: int, boot: str, profile: Path | None
) -> dict[str, Any]:
    devices = {d: "cardiac_monitor" for d in device_ids(DEVICES)}
    mqtt = {"enabled": True, "tls": False, "host": broker.host, "port": broker.port, "client_id": f"gw-{boot}"}
    with GatewayProcess(None, devices, extra={"mqtt": mqtt}, profile_to=profile) as gw:
        _wait(lambda: gw.stats().get("mqtt", {}).get("connected"), "gateway connected")
        t0 = time.time()
        pub_end = wait_all(publishers(broker, files))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            stats = gw.stats()
            if int(stats["counters"]["batches_committed"]) >= messages:
                break
            time.sleep(0.1)
        if stats["mqtt"]["last_error"]:
            log(f"gateway: {stats['mqtt']['last_error']}")
        counters = stats["counters"]
        rss = gw.peak_rss_bytes()
        gw.stop()
        conn = sqlite3.connect(gw.state_dir / "outbox.db")
        last, count = conn.execute(
            "SELECT MAX(committed_ns), COUNT(*) FROM batches WHERE source_key LIKE ?", (f"%/{boot}/%",)
        ).fetchone()
        conn.close()
    return {
        "committed": count,
        "seconds": last / 1e9 - t0 if count else None,
        "publish_seconds": pub_end - t0,
        "readings_committed": counters["readings_committed"],
        "peak_rss_mb": round(rss / 2**20, 1),
    }


def _wait(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rate(n: float, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if seconds else None


def workload(broker: Mosquitto, tmp: Path, n: int, ecg_samples: int, tag: str, profile: Path | None) -> dict[str, Any]:
    per_msg = max(1, ecg_samples)
    alone = run_publishers_alone(broker, write_lines(tmp, n, DEVICES, ecg_samples, f"{tag}0"))
    bare = run_bare(broker, write_lines(tmp, n, DEVICES, ecg_samples, f"{tag}1"), n, f"{tag}1")
    gw = run_gateway(broker, write_lines(tmp, n, DEVICES, ecg_samples, f"{tag}2"), n, f"{tag}2", profile)
    bp = run_bare(broker, write_lines(tmp, n, DEVICES, ecg_samples, f"{tag}3"), n, f"{tag}3", paho=True)
    b, g = rate(bare["received"], bare["seconds"]), rate(gw["committed"], gw["seconds"])
    return {
        "messages": n,
        "publishers_alone_msgs_per_s": rate(n, alone),
        "bare_msgs_per_s": b,
        "bare_received": bare["received"],
        "bare_paho_msgs_per_s": rate(bp["received"], bp["seconds"]),
        "gateway_msgs_per_s": g,
        "gateway_committed": gw["committed"],
        "gateway_points_per_s": rate(gw["readings_committed"], gw["seconds"]),
        "bare_samples_per_s": round(b * per_msg, 1) if b else None,
        "gateway_vs_bare": round(g / b, 3) if b and g else None,
        "gateway_peak_rss_mb": gw["peak_rss_mb"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="single-reading frames (default: 100000)")
    ap.add_argument("--ecg-frames", type=int, default=20_000, help="ECG frames (default: 20000)")
    ap.add_argument("--ecg-samples", type=int, default=250, help="samples per ECG frame (default: 250)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the messages")
    ap.add_argument("--profile", type=Path, help="py-spy the gateway; raw stacks go to this directory")
    args = ap.parse_args(argv)
    n, frames = args.messages, args.ecg_frames
    if args.quick:
        n, frames = n // 10, frames // 10
    report: dict[str, Any] = {"machine": machine()}
    tmp = Path(tempfile.mkdtemp(prefix="ds4h-bench-mqtt-"))
    try:
        with BenchBroker() as broker:
            log(f"single-reading frames: {n}")
            prof = args.profile / "mqtt-single.txt" if args.profile else None
            report["single"] = workload(broker, tmp, n, 0, "s", prof)
            log(f"ECG frames: {frames} × {args.ecg_samples} samples")
            prof = args.profile / "mqtt-ecg.txt" if args.profile else None
            report["ecg"] = workload(broker, tmp, frames, args.ecg_samples, "e", prof)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
