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


def run_script(name: str, args: list[str], timeout_s: float) -> int:
    """Run ``benchmarks/<name>.py ARGS`` as its own process (bounded by ``timeout_s``); its exit code."""
    script = HERE / f"{name}.py"
    if not script.exists():
        print(f"({script.name} not present: skipped)")
        return 0
    print(f"\n== {name} ({load_text()}): {' '.join([script.name, *args])}", flush=True)
    try:
        return subprocess.run(
            [sys.executable, str(script), *args], cwd=HERE.parent, check=False, timeout=timeout_s
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout_s:g} s")
        return 1


SCRIPTS: tuple[tuple[str, list[str], list[str], float], ...] = (
    ("bench_lineproto", [], ["--repeat", "1", "--no-e2e"], 900),
    ("bench_mqtt", [], ["--quick"], 1800),
    ("bench_ble", [], ["--quick"], 900),
    ("bench_fleet", [], ["--straps", "4", "--g5", "50", "--seconds", "20"], 1200),
)
"""The scripts after the pipeline scenarios: (name, full-size arguments, ``--quick`` arguments, timeout s)."""


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
        rc = 0
        for name, full, quick, timeout_s in SCRIPTS:
            if not rc and not getattr(args, f"no_{name.removeprefix('bench_')}"):
                rc = run_script(name, quick if args.quick else full, timeout_s)
    except KeyboardInterrupt:
        print("interrupted; every process this run started was stopped", file=sys.stderr)
        return 130
    bench_pipeline.print_table(figures)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
