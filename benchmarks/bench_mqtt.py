"""MQTT ingest benchmark: QoS 1 messages in Mosquitto → gateway → committed (FULL) and acknowledged.

For each workload (single-reading frames; ECG frames) the broker is first loaded with the messages for a
persistent session — by a fast paho publisher in its own process — and then drained:

- **bare**: a receive-only aiomqtt subscriber (acks on receipt, keeps nothing): the client library's ceiling;
- **gateway**: ``ds4h-gateway run`` (its own process) decodes each SenML frame, commits it to the outbox
  (signed, synchronous=FULL), then sends the PUBACK and the ack watermark.

Rates are messages (or samples) from the connection (CONNACK) to the last one handled: for the bare
subscriber its last receive, for the gateway its last commit in the outbox (``batches.committed_ns``) —
every PUBACK follows its commit at once. Target: gateway ≥ 80 % of bare.
The messages go over plain TCP on loopback for both (TLS would cost both the same).

    python benchmarks/bench_mqtt.py [--messages 100000] [--ecg-frames 20000] [--ecg-samples 250] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import GatewayProcess, log, machine  # noqa: E402
from benchmarks.mqtt_tools import device_ids  # noqa: E402
from tests.services import Mosquitto  # noqa: E402

TOOLS = Path(__file__).resolve().parent / "mqtt_tools.py"


class BenchBroker(Mosquitto):
    """No persistence: a saved queue of 100,000 messages, rewritten every second, would be what we measure."""

    autosave_interval_s = 0

GATEWAY_CLIENT_ID = "bench-gateway"
DEVICES = 10


def tool(*args: str, timeout: float = 900.0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(TOOLS), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"mqtt_tools {args[0]} failed:\n{out.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def preload(broker: Mosquitto, messages: int, ecg_samples: int, boot: str) -> dict[str, Any]:
    return tool(
        "publish", "--port", str(broker.port), "--messages", str(messages), "--devices", str(DEVICES),
        "--ecg-samples", str(ecg_samples), "--boot", boot,
    )  # fmt: skip


def run_bare(broker: Mosquitto, messages: int, ecg_samples: int, boot: str, uvloop: bool = False) -> dict[str, Any]:
    cid = f"bench-bare-{boot}"
    tool("bare", "--port", str(broker.port), "--client-id", cid, "--session-only")
    pub = preload(broker, messages, ecg_samples, boot)
    extra = ["--uvloop"] if uvloop else []
    got = tool("bare", "--port", str(broker.port), "--client-id", cid, "--messages", str(messages), *extra)
    got["publish"] = pub
    return got


def run_gateway(broker: Mosquitto, messages: int, ecg_samples: int, boot: str, profile: Path | None) -> dict[str, Any]:
    devices = {d: "cardiac_monitor" for d in device_ids(DEVICES)}
    mqtt = {"enabled": True, "tls": False, "host": broker.host, "port": broker.port, "client_id": GATEWAY_CLIENT_ID}
    with GatewayProcess(None, devices, extra={"mqtt": mqtt}, profile_to=profile) as gw:
        _wait(lambda: gw.stats().get("mqtt", {}).get("connected"), "gateway connected")
        gw.stop()  # the persistent session now exists: the broker keeps what follows for the gateway
        pub = preload(broker, messages, ecg_samples, boot)
        gw.start()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            stats = gw.stats()
            if int(stats["counters"]["batches_committed"]) >= messages:
                break
            time.sleep(0.2)
        connected_ns = int(stats["mqtt"]["connected_since_ns"])
        if stats["mqtt"]["last_error"] or gw.log_tail(1):
            log(f"gateway log: {gw.log_tail(5)}")
        counters = gw.counters()
        rss = gw.peak_rss_bytes()
        gw.stop()
        # the outbox's own commit times: first → last commit of this run's frames
        conn = sqlite3.connect(gw.state_dir / "outbox.db")
        first, last, count = conn.execute(
            "SELECT MIN(committed_ns), MAX(committed_ns), COUNT(*) FROM batches WHERE source_key LIKE ?",
            (f"%/{boot}/%",),
        ).fetchone()
        conn.close()
    return {
        "committed": count,
        "seconds": (last - connected_ns) / 1e9 if count else None,
        "first_commit_after_s": (first - connected_ns) / 1e9 if count else None,
        "readings_committed": counters["readings_committed"],
        "peak_rss_mb": round(rss / 2**20, 1),
        "publish": pub,
    }


def _wait(pred: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def rate(n: int, seconds: float | None) -> float | None:
    return round(n / seconds, 1) if seconds else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="single-reading frames (default: 100000)")
    ap.add_argument("--ecg-frames", type=int, default=20_000, help="ECG frames (default: 20000)")
    ap.add_argument("--ecg-samples", type=int, default=250, help="samples per ECG frame (default: 250)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the messages")
    ap.add_argument("--uvloop", action="store_true", help="also measure the bare subscriber on uvloop")
    ap.add_argument("--profile", type=Path, help="py-spy the gateway; raw stacks go to this directory")
    args = ap.parse_args(argv)
    n, frames = args.messages, args.ecg_frames
    if args.quick:
        n, frames = n // 10, frames // 10
    report: dict[str, Any] = {"machine": machine()}
    with BenchBroker() as broker:
        log(f"single-reading frames: {n}")
        bare = run_bare(broker, n, 0, "s1")
        gw = run_gateway(broker, n, 0, "s2", args.profile / "single.txt" if args.profile else None)
        report["single"] = {
            "bare_msgs_per_s": rate(bare["received"], bare["seconds"]),
            "gateway_msgs_per_s": rate(gw["committed"], gw["seconds"]),
            "publisher_msgs_per_s": rate(n, gw["publish"]["seconds"]),
            "gateway_peak_rss_mb": gw["peak_rss_mb"],
        }
        if args.uvloop:
            ub = run_bare(broker, n, 0, "s3", uvloop=True)
            report["single"]["bare_uvloop_msgs_per_s"] = rate(ub["received"], ub["seconds"])
        log(f"ECG frames: {frames} × {args.ecg_samples} samples")
        bare = run_bare(broker, frames, args.ecg_samples, "e1")
        gw = run_gateway(broker, frames, args.ecg_samples, "e2", args.profile / "ecg.txt" if args.profile else None)
        report["ecg"] = {
            "bare_frames_per_s": rate(bare["received"], bare["seconds"]),
            "gateway_frames_per_s": rate(gw["committed"], gw["seconds"]),
            "gateway_samples_per_s": rate(gw["readings_committed"], gw["seconds"]),
            "bare_samples_per_s": rate(bare["received"] * args.ecg_samples, bare["seconds"]),
            "gateway_peak_rss_mb": gw["peak_rss_mb"],
        }
    for k in ("single", "ecg"):
        r = report[k]
        b = r.get("bare_msgs_per_s") or r.get("bare_frames_per_s")
        g = r.get("gateway_msgs_per_s") or r.get("gateway_frames_per_s")
        r["gateway_vs_bare"] = round(g / b, 3) if b and g else None
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
