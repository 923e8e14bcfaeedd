"""Fleet benchmark: a ward at the simulator issue's scale — 30 BLE heart-rate straps and 1,000 5G devices —
run by ``ds4h-sim fleet`` against a gateway, and reconciled device by device.

Processes: the virtual-radio hub (``python -m firmware_sim.ble.hub``), the fleet (``python -m firmware_sim
fleet SCENARIO``: every BLE strap its own HCI-over-TCP link to the hub, every 5G device its own mutual-TLS
MQTT connection with its own certificate, all on one asyncio loop), a Mosquitto with the site's PKI and
ACL, and the gateway in this process (``[ble]`` bumble backend, ``[mqtt]``, local sink, ``synchronous =
FULL``). The scenario (written to a temporary file): ``--straps`` heart-rate straps (real pacing, one
notification a second), ``--g5`` 5G devices of ``--kind`` (one frame per real second each), a coverage gap
for a tenth of the 5G devices at 30 % of the run, duplicate publishes from as many at 60 %.

Printed: frames produced / acked / resent, duplicates the gateway answered, BLE notifications, the fleet's
settle result and unsettled devices, real time, CPU seconds of the fleet process and of the gateway
(this process: gateway, hub client side and the test site), and every reconciliation problem (none
expected: each acked frame and each notification committed exactly once).

    python benchmarks/bench_fleet.py [--straps 30] [--g5 1000] [--kind 5g-cgm] [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import load_text, log, machine, stop_process  # noqa: E402
from tests.fleet_harness import expected_batches, run_fleet  # noqa: E402
from tests.mqtt_site import make_site  # noqa: E402


def scenario(straps: int, g5: int, kind: str, seconds: float) -> str:
    gap_devices = ", ".join(f'"{kind}-{i:02d}"' for i in range(1, max(1, g5 // 10) + 1))
    dup_devices = ", ".join(f'"{kind}-{i:02d}"' for i in range(g5 - max(1, g5 // 10) + 1, g5 + 1))
    patients = max(straps, g5, 1)
    out = [f"patients = {patients}", "[scenario]", 'name = "bench-fleet"', "seed = 23", "speed = 1"]
    if straps:
        out += ["[[devices]]", 'kind = "heart-rate"', f"patients = {list(range(straps))}"]
    if g5:
        out += ["[[devices]]", f'kind = "{kind}"', f"patients = {list(range(g5))}"]
        out += ["[[faults]]", 'kind = "out-of-range"', f"devices = [{gap_devices}]"]
        out += [f"at = {seconds * 0.3:.0f}", f"duration = {max(2.0, seconds * 0.1):.0f}"]
        out += ["[[faults]]", 'kind = "duplicate-publish"', f"devices = [{dup_devices}]"]
        out += [f"at = {seconds * 0.6:.0f}", "count = 3"]
    return "\n".join(out) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench(args: argparse.Namespace, root: Path) -> dict[str, object]:
    scenario_file = root / "bench-fleet.toml"
    scenario_file.write_text(scenario(args.straps, args.g5, args.kind, args.seconds))
    port = free_port()
    hub = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped by PID below
        [sys.executable, "-m", "firmware_sim.ble.hub", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await asyncio.sleep(1.5)
        with make_site(root / "site") as site:
            log(f"issuing {args.g5} device certificates; fleet runs {args.seconds:.0f} s")
            out = await run_fleet(
                root,
                site,
                scenario_file,
                hub=("127.0.0.1", port) if args.straps else None,
                run_s=args.seconds,
                settle_timeout_s=args.settle,
                fleet_args=["--progress", "10"],
                ble={"max_connections": min(64, max(1, args.straps)), "store_slots": 0},
                commit_wait_s=30.0,
            )
    finally:
        stop_process(hub)
    devices = out.report["devices"]
    g5 = [d["sent"] for d in devices.values() if d["transport"] == "mqtt"]
    ble = expected_batches({"devices": {k: v for k, v in devices.items() if v["transport"] == "ble"}})
    return {
        "straps": args.straps,
        "g5_devices": args.g5,
        "g5_kind": args.kind,
        "run_s": args.seconds,
        "real_s": round(out.real_s, 1),
        "settled": out.report["settled"],
        "unsettled": len(out.report["unsettled"]),
        "frames": sum(s["frames"] for s in g5),
        "acked": sum(s["acked"] for s in g5),
        "resent": sum(s["resent"] for s in g5),
        "bursts": sum(len(s["bursts"]) for s in g5),
        "duplicates_sent": sum(s["duplicates_sent"] for s in g5),
        "duplicates_answered": int(out.duplicates),
        "ble_notifications": sum(ble.values()),
        "readings_lost": out.counters.get("readings_lost"),
        "fleet_cpu_s": None if out.fleet_cpu_s is None else round(out.fleet_cpu_s, 1),
        "gateway_process_cpu_s": round(out.gateway_cpu_s, 1),
        "problems": out.problems[:20],
        "problem_count": len(out.problems),
        "fleet_exit": out.exit_code,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--straps", type=int, default=30)
    p.add_argument("--g5", type=int, default=1000)
    p.add_argument("--kind", choices=("5g-cgm", "5g-cardiac"), default="5g-cgm")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--settle", type=float, default=60.0)
    args = p.parse_args()
    log(f"machine: {json.dumps(machine())}; load {load_text()}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ds4h-bench-fleet-") as tmp:
        result = asyncio.run(bench(args, Path(tmp)))
    result["bench_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))
    return 0 if result["problem_count"] == 0 and result["settled"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
