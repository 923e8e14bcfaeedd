"""Run every benchmark and print one table of figures next to their 2-core targets (asserts nothing).

    .venv/bin/python benchmarks/run_all.py --quick     # small sizes, under 2 minutes
    .venv/bin/python benchmarks/run_all.py             # full sizes (1,000,000-reading backlog …)
    .venv/bin/python benchmarks/run_all.py --no-lineproto --no-mqtt --no-ble --no-fleet

Every scenario starts (and stops) its own VictoriaMetrics and gateway process; run it on an otherwise
quiet machine and read the load averages printed next to each figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_pipeline
from benchmarks.common import load_text, machine

HERE = Path(__file__).resolve().parent


def run_lineproto(quick: bool) -> int:
    script = HERE / "bench_lineproto.py"
    if not script.exists():
        print("(bench_lineproto.py not present: skipped)")
        return 0
    cmd = [sys.executable, str(script)]
    if quick:
        cmd += ["--repeat", "1", "--no-e2e"]
    print(f"\n== bench_lineproto ({load_text()}): {' '.join([script.name, *cmd[2:]])}", flush=True)
    try:
        return subprocess.run(cmd, cwd=HERE.parent, check=False, timeout=900).returncode
    except subprocess.TimeoutExpired:
        print("bench_lineproto: timed out after 900 s")
        return 1


def run_mqtt(quick: bool) -> int:
    cmd = [sys.executable, str(HERE / "bench_mqtt.py"), *(["--quick"] if quick else [])]
    print(f"\n== bench_mqtt ({load_text()}): {' '.join(['bench_mqtt.py', *cmd[2:]])}", flush=True)
    try:
        return subprocess.run(cmd, cwd=HERE.parent, check=False, timeout=1800).returncode
    except subprocess.TimeoutExpired:
        print("bench_mqtt: timed out after 1800 s")
        return 1


def run_ble(quick: bool) -> int:
    cmd = [sys.executable, str(HERE / "bench_ble.py"), *(["--quick"] if quick else [])]
    print(f"\n== bench_ble ({load_text()}): {' '.join(['bench_ble.py', *cmd[2:]])}", flush=True)
    try:
        return subprocess.run(cmd, cwd=HERE.parent, check=False, timeout=900).returncode
    except subprocess.TimeoutExpired:
        print("bench_ble: timed out after 900 s")
        return 1


def run_fleet(quick: bool) -> int:
    sizes = ["--straps", "4", "--g5", "50", "--seconds", "20"] if quick else []
    cmd = [sys.executable, str(HERE / "bench_fleet.py"), *sizes]
    print(f"\n== bench_fleet ({load_text()}): {' '.join(['bench_fleet.py', *cmd[2:]])}", flush=True)
    try:
        return subprocess.run(cmd, cwd=HERE.parent, check=False, timeout=1200).returncode
    except subprocess.TimeoutExpired:
        print("bench_fleet: timed out after 1200 s")
        return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    ap.add_argument("--no-lineproto", action="store_true", help="skip benchmarks/bench_lineproto.py")
    ap.add_argument("--no-mqtt", action="store_true", help="skip benchmarks/bench_mqtt.py")
    ap.add_argument("--no-ble", action="store_true", help="skip benchmarks/bench_ble.py")
    ap.add_argument("--no-fleet", action="store_true", help="skip benchmarks/bench_fleet.py")
    ap.add_argument("--only", default=bench_pipeline.ALL, help="pipeline scenarios to run (default: abcde)")
    args = ap.parse_args(argv)
    m = machine()
    mode = "quick" if args.quick else "full"
    print(f"run_all ({mode}): nproc={m['nproc']} python={m['python']} {m['platform']}, {m['load']}", flush=True)
    started = time.monotonic()
    try:
        print("\n== bench_pipeline", flush=True)
        only = "".join(ch for ch in args.only.lower() if ch in bench_pipeline.ALL)
        figures = bench_pipeline.run(args.quick, only)
        rc = 0 if args.no_lineproto else run_lineproto(args.quick)
        rc = rc or (0 if args.no_mqtt else run_mqtt(args.quick))
        rc = rc or (0 if args.no_ble else run_ble(args.quick))
        rc = rc or (0 if args.no_fleet else run_fleet(args.quick))
    except KeyboardInterrupt:
        print("interrupted; every process this run started was stopped", file=sys.stderr)
        return 130
    bench_pipeline.print_table(figures)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
