"""BLE benchmark: simulated heart-rate straps on a virtual radio → gateway (bumble backend) → committed.

Three processes, as in the demo and the crash test: the virtual-radio hub (``python -m firmware_sim.ble.hub
--port 0``), the simulated straps (``python -m firmware_sim ble --hub … --heart-rate N --hr-interval S``, each
strap its own HCI-over-TCP connection to the hub) and the gateway (``ds4h-gateway run``, ``[ble] backend =
"bumble"`` on ``tcp-client:127.0.0.1:PORT``, ``max_connections`` = N, ``store_slots`` = 0, every strap
registered by address + serial, local sink only, ``synchronous = FULL``).

1. **Time to streaming** (fresh hub, straps and gateway state per run; straps notify every 1 s like real
   ones; then a 5 s CPU window at that pace as a baseline): from the first ``GET /healthz`` = 200 to the
   first ``/api/v1/stats`` poll (every 50 ms) where every strap is connected (``ble.devices.<id>.connected``
   with a ``connected_since_ns``) and has committed at least one heart-rate reading (its ``devices`` entry
   shows more than the battery batch read at connect). Also shown: the first and last link up
   (``connected_since_ns``, i.e. before DIS/CTS/battery are read).
2. **CPU per 1,000 notifications** (fresh processes, straps notifying every ``--interval`` s): once all are
   streaming and a settle second has passed, the gateway's CPU time (psutil, user + sys, all threads) and
   ``ds4h_ble_notifications_total`` (``/metrics``, summed over labels) are sampled at both ends of a fixed
   window; printed: notifications/s (offered: N / interval), gateway CPU ms per 1,000 notifications, and the
   CPU share of gateway, simulator and hub (100 % = one core).

Every child runs in its own session and is stopped by PID (SIGTERM, then SIGKILL). Load averages are
printed next to the figures: the machine is shared.

    python benchmarks/bench_ble.py [--straps 32] [--runs 3] [--interval 0.01] [--window 10] [--quick] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    GatewayProcess,
    cpu_seconds,
    load_text,
    log,
    machine,
    stop_process,
    summarise_profile,
)

START_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 180.0
POLL_S = 0.05
SEED = 1
NOTIFICATIONS = "ds4h_ble_notifications_total"
LOST = "ds4h_readings_lost_total"
HR_METRICS = ("heart_rate ", "rr_interval ")
"""``latest`` of a device's activity once a heart-rate batch was committed (the battery batch shows battery_level)."""


class Lines:
    """A child's stdout read line by line on a daemon thread, so a wait for a line can time out."""

    def __init__(self, stream: IO[bytes], what: str) -> None:
        self.what = what
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), name=f"lines-{what}", daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                self._q.put(raw.decode(errors="replace").strip())
        self._q.put(None)

    def next(self, timeout_s: float) -> str:
        try:
            line = self._q.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"{self.what}: no output within {timeout_s:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.what} exited before it was ready")
        return line


def spawn(cmd: list[str], stderr_to: Path) -> subprocess.Popen[bytes]:
    """A child in its own session (Ctrl-C is for the benchmark), stdout piped, stderr to a file."""
    with open(stderr_to, "ab") as err:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )


@dataclass
class Radio:
    """The hub and the strap simulator, each its own process."""

    workdir: Path
    straps: int
    interval_s: float
    hub: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    port: int = 0
    devices: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> Radio:
        self.hub = spawn([sys.executable, "-m", "firmware_sim.ble.hub", "--port", "0"], self.workdir / "hub.log")
        assert self.hub.stdout is not None
        ready = Lines(self.hub.stdout, "the hub").next(START_TIMEOUT_S)
        if not ready.startswith("READY "):
            raise RuntimeError(f"the hub said {ready!r}")
        self.port = int(ready.split()[1])
        self.sim = spawn(
            [sys.executable, "-m", "firmware_sim", "ble", "--hub", f"127.0.0.1:{self.port}", "--seed", str(SEED),
             "--heart-rate", str(self.straps), "--hr-interval", str(self.interval_s)],
            self.workdir / "sim.log",
        )  # fmt: skip
        assert self.sim.stdout is not None
        lines = Lines(self.sim.stdout, "the simulator")
        for _ in range(self.straps):
            self.devices.append(json.loads(lines.next(START_TIMEOUT_S)))
        return self

    def stop(self) -> None:
        for p in (self.sim, self.hub):
            if p is not None:
                stop_process(p, timeout=15.0)

    def ble_section(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "backend": "bumble",
            "bumble_transport": f"tcp-client:127.0.0.1:{self.port}",
            "max_connections": self.straps,
            "store_slots": 0,
        }

    def device_tables(self) -> tuple[dict[str, str], str]:
        """Device id per address, and the ``[devices.<id>]`` tables (address + serial)."""
        ids: dict[str, str] = {}
        lines = []
        for d in self.devices:
            device_id = f"hr-{d['index'] + 1}"
            ids[d["address"]] = device_id
            lines += [
                f"[devices.{json.dumps(device_id)}]",
                'kind = "heart_rate"',
                f"ble_address = {json.dumps(d['address'])}",
                f"serial = {json.dumps(d['serial'])}",
                "",
            ]
        return ids, "\n".join(lines)


def healthz_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2.0) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def streaming(stats: dict[str, Any], ids: list[str]) -> tuple[int, int, int]:
    """(linked, committed a heart-rate reading, both) over ``ids``."""
    ble = stats.get("ble", {}).get("devices", {})
    activity = {d["id"]: d for d in stats.get("devices", [])}
    linked = hr = both = 0
    for i in ids:
        b = ble.get(i, {})
        up = bool(b.get("connected")) and b.get("connected_since_ns") is not None
        a = activity.get(i, {})
        latest = str(a.get("latest") or "")
        committed = int(a.get("batches", 0)) >= 2 or latest.startswith(HR_METRICS)
        linked += up
        hr += committed
        both += up and committed
    return linked, hr, both


def metric_sum(text: str, name: str) -> float:
    """A counter summed over its labels (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def log_problems(gw: GatewayProcess) -> list[str]:
    try:
        text = gw.log_path.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if any(k in ln for k in ("WARNING", "ERROR", "CRITICAL", "Traceback"))]


def one_run(
    straps: int, interval_s: float, window_s: float | None, label: str, profile: Path | None = None
) -> dict[str, Any]:
    """Fresh hub, straps and gateway; time to all streaming, then (``window_s``) the CPU window."""
    tmp = Path(tempfile.mkdtemp(prefix="ds4h-bench-ble-"))
    radio = Radio(tmp, straps, interval_s)
    out: dict[str, Any] = {"run": label, "straps": straps, "hr_interval_s": interval_s, "load_start": load_text()}
    try:
        radio.start()
        by_address, tables = radio.device_tables()
        ids = list(by_address.values())
        (tmp / "gw").mkdir()
        gw = GatewayProcess(None, {}, extra={"ble": radio.ble_section()}, workdir=tmp / "gw", profile_to=profile)
        with gw.config_path.open("a") as f:
            f.write("\n" + tables)
        try:
            spawned = time.monotonic()
            gw.start(timeout=START_TIMEOUT_S)
            while not healthz_ok(gw.url):
                if time.monotonic() - spawned > START_TIMEOUT_S:
                    raise RuntimeError(f"gateway not healthy:\n{gw.log_tail()}")
                time.sleep(0.01)
            t_up, t_up_wall = time.monotonic(), time.time()
            out["spawn_to_healthz_s"] = round(t_up - spawned, 3)
            deadline = t_up + STREAM_TIMEOUT_S
            stats: dict[str, Any] = {}
            first_all_linked: float | None = None
            while True:
                stats = gw.stats()
                now = time.monotonic()
                linked, hr, both = streaming(stats, ids)
                if first_all_linked is None and linked == straps:
                    first_all_linked = now
                if both == straps:
                    break
                if now > deadline:
                    ble = stats.get("ble", {}).get("devices", {})
                    missing = {i: ble.get(i, {}).get("last_error") for i in ids if i in ble}
                    raise RuntimeError(
                        f"only {both}/{straps} streaming after {STREAM_TIMEOUT_S:.0f} s "
                        f"(linked {linked}, committed {hr}); last errors: {missing}\n{gw.log_tail()}"
                    )
                time.sleep(POLL_S)
            since = [stats["ble"]["devices"][i]["connected_since_ns"] for i in ids]
            out["to_streaming_s"] = round(now - t_up, 3)
            out["last_link_up_s"] = round(max(since) / 1e9 - t_up_wall, 3)
            out["first_link_up_s"] = round(min(since) / 1e9 - t_up_wall, 3)
            out["failures"] = sum(int(stats["ble"]["devices"][i].get("failures", 0)) for i in ids)
            log(
                f"{label}: {straps} straps streaming {out['to_streaming_s']:.2f} s after /healthz "
                f"(links up {out['first_link_up_s']:.2f} … {out['last_link_up_s']:.2f} s, "
                f"connect failures {out['failures']}; spawn → healthz {out['spawn_to_healthz_s']:.2f} s), "
                f"{load_text()}"
            )
            if window_s:
                out.update(cpu_window(gw, radio, straps, interval_s, window_s))
                log(
                    f"{label}: {out['notifications_per_s']:,.0f} notifications/s (offered "
                    f"{out['offered_per_s']:,.0f}/s); gateway {out['gateway_cpu_ms_per_1000']:.0f} ms CPU per "
                    f"1,000 notifications; CPU share gateway {out['gateway_cpu_pct']:.0f} %, simulator "
                    f"{out['sim_cpu_pct']:.0f} %, hub {out['hub_cpu_pct']:.0f} % of one core; {out['load_window']}"
                )
            out["gateway_peak_rss_mb"] = round(gw.peak_rss_bytes() / 2**20, 1)
        finally:
            running = log_problems(gw)
            gw.stop()
            at_stop = log_problems(gw)[len(running) :]
            out["gateway_log_warnings"] = len(running)
            out["gateway_log_warnings_at_stop"] = len(at_stop)
            if running:
                log(f"{label}: {len(running)} warning/error line(s) in the gateway log while running: {running[:3]}")
            if at_stop:
                log(f"{label}: {len(at_stop)} warning/error line(s) while stopping, first: {at_stop[0]}")
            if profile is not None and profile.exists():
                log(f"{label}: gateway profile (py-spy, {profile}):\n{summarise_profile(profile, top=25)}")
    finally:
        radio.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cpu_window(gw: GatewayProcess, radio: Radio, straps: int, interval_s: float, window_s: float) -> dict[str, Any]:
    assert radio.sim is not None and radio.hub is not None
    time.sleep(1.0)  # settle: the last straps' first notifications, the connect-time reads
    pids = {"gateway": gw.pid, "sim": radio.sim.pid, "hub": radio.hub.pid}
    m0, c0 = gw.metrics_text(), {k: cpu_seconds(p) or 0.0 for k, p in pids.items()}
    t0 = time.monotonic()
    b0 = int(gw.counters()["batches_committed"])
    time.sleep(window_s)
    m1, c1 = gw.metrics_text(), {k: cpu_seconds(p) or 0.0 for k, p in pids.items()}
    wall = time.monotonic() - t0
    b1 = int(gw.counters()["batches_committed"])
    n = metric_sum(m1, NOTIFICATIONS) - metric_sum(m0, NOTIFICATIONS)
    cpu = {k: c1[k] - c0[k] for k in pids}
    return {
        "window_s": round(wall, 2),
        "notifications": int(n),
        "notifications_per_s": round(n / wall, 1),
        "offered_per_s": round(straps / interval_s, 1),
        "batches_committed_per_s": round((b1 - b0) / wall, 1),
        "readings_lost": int(metric_sum(m1, LOST) - metric_sum(m0, LOST)),
        "gateway_cpu_ms_per_1000": round(cpu["gateway"] * 1e6 / n, 1) if n else None,
        "gateway_cpu_pct": round(100 * cpu["gateway"] / wall, 1),
        "sim_cpu_pct": round(100 * cpu["sim"] / wall, 1),
        "hub_cpu_pct": round(100 * cpu["hub"] / wall, 1),
        "load_window": load_text(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--straps", type=int, default=32, help="simulated heart-rate straps (default: 32, max 64)")
    ap.add_argument(
        "--runs", type=int, default=3, help="time-to-streaming runs at 1 s pacing, 5 s CPU window each (default: 3)"
    )
    ap.add_argument(
        "--interval", type=float, default=0.01, help="seconds between a strap's notifications in the CPU run (0.01)"
    )
    ap.add_argument("--window", type=float, default=10.0, help="CPU sampling window in seconds (default: 10)")
    ap.add_argument("--quick", action="store_true", help="one time-to-streaming run and a 5 s window")
    ap.add_argument("--profile", type=Path, help="py-spy the gateway of the CPU run; raw stacks go to this directory")
    args = ap.parse_args(argv)
    if not 1 <= args.straps <= 64:
        ap.error("--straps must be 1 … 64 (the gateway's max_connections)")
    if not args.interval > 0:
        ap.error("--interval must be > 0")
    runs, window = (1, min(args.window, 5.0)) if args.quick else (args.runs, args.window)
    report: dict[str, Any] = {"machine": machine(), "connect": [], "cpu": None}
    for i in range(runs):
        report["connect"].append(one_run(args.straps, 1.0, min(window, 5.0), f"connect {i + 1}/{runs}"))
    prof = args.profile / "ble-cpu.txt" if args.profile else None
    report["cpu"] = one_run(args.straps, args.interval, window, f"cpu (interval {args.interval:g} s)", prof)
    for r in report["connect"]:
        print(
            f"BLE {r['run']}: {args.straps} straps connected and streaming {r['to_streaming_s']:.2f} s after "
            f"/healthz (last link up {r['last_link_up_s']:.2f} s); at 1 s pacing gateway "
            f"{r['gateway_cpu_pct']} % of a core for {r['notifications_per_s']:g} notifications/s; {r['load_start']}",
            flush=True,
        )
    c = report["cpu"]
    print(
        f"BLE {c['run']}: streaming after {c['to_streaming_s']:.2f} s; {c['notifications_per_s']:,.0f} "
        f"notifications/s of {c['offered_per_s']:,.0f} offered, gateway "
        f"{c['gateway_cpu_ms_per_1000']} ms CPU per 1,000 notifications (gateway {c['gateway_cpu_pct']} %, "
        f"simulator {c['sim_cpu_pct']} %, hub {c['hub_cpu_pct']} % of one core); {c['load_window']}",
        flush=True,
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
