"""The spine end to end: synthetic source (own process) → signed → committed (FULL) → VictoriaMetrics.

Each scenario starts its own VictoriaMetrics and its own gateway process (``ds4h-gateway run``),
prints what it measured next to the 2-core target, and asserts nothing.

    .venv/bin/python benchmarks/bench_pipeline.py --quick          # small sizes, ~1 minute
    .venv/bin/python benchmarks/bench_pipeline.py                  # full sizes
    .venv/bin/python benchmarks/bench_pipeline.py --only a,c       # some scenarios

Scenarios:
  a  single-reading batches/s, first send → last point forwarded to the store
  b  ECG samples/s end to end (1,000-sample waveform per batch)
  c  batch creation → COMMIT latency at half the rate of (a): client round trip of a paced
     1-batch probe + the gateway's ds4h_commit_latency_seconds histogram (bucket deltas)
  d  drain rate of a 1,000,000-reading backlog committed while the store was down
  e  peak RSS of the gateway process over all of the above (psutil every 100 ms + VmHWM)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    VALUE_SERIES,
    FloodResult,
    GatewayProcess,
    cpu_seconds,
    finish_flood,
    fleet_devices,
    histogram_delta,
    histogram_quantile,
    load_text,
    log,
    machine,
    parse_histogram,
    percentile,
    run_flood,
    stop_process,
    summarise_profile,
    victoria_metrics,
    watch,
)
from tests.services import free_port

MB = 1024 * 1024
PROBE_DEVICE = "bench-probe-hr"
PROFILE_DIR: Path | None = None
"""Set by ``--py-spy DIR``: each scenario's gateway is recorded by py-spy into DIR/<scenario>.txt."""


def _gateway(url: str, devices: dict[str, str], key: str) -> GatewayProcess:
    return GatewayProcess(url, devices, profile_to=None if PROFILE_DIR is None else PROFILE_DIR / f"{key}.txt")


def _report_profile(key: str) -> None:
    if PROFILE_DIR is None:
        return
    path = PROFILE_DIR / f"{key}.txt"
    if path.exists():
        print(f"({key}) py-spy profile of the gateway ({path}):\n{summarise_profile(path)}", flush=True)


@dataclass
class Figure:
    key: str
    what: str
    value: float | None
    unit: str
    target: float
    higher_is_better: bool
    load: str
    how: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def target_text(self) -> str:
        op = "≥" if self.higher_is_better else "≤"
        return f"{op} {fmt(self.target)}"

    def value_text(self) -> str:
        return "n/a" if self.value is None else fmt(self.value)


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


@dataclass
class Sizes:
    readings_batches: int
    ecg_batches: int
    ecg_samples: int
    latency_seconds: float
    probe_rate: float
    backlog_readings: int
    backlog_per_batch: int

    @classmethod
    def quick(cls) -> Sizes:
        return cls(20_000, 400, 1_000, 5.0, 100.0, 300_000, 100)

    @classmethod
    def full(cls) -> Sizes:
        return cls(200_000, 4_000, 1_000, 20.0, 200.0, 1_000_000, 100)


@dataclass
class Peak:
    """Largest gateway RSS seen in any scenario."""

    bytes: int = 0
    where: str = ""

    def update(self, gw: GatewayProcess, where: str) -> None:
        b = gw.peak_rss_bytes()
        if b > self.bytes:
            self.bytes, self.where = b, where


def _check_flood(res: FloodResult, what: str) -> None:
    if res.returncode != 0:
        log(f"{what}: source exited {res.returncode}: {res.summary} {res.stderr_tail}")


def _visible(vm: Any, expected: int) -> str:
    t0 = time.monotonic()
    vm.force_flush()
    n = vm.count_unique_points(VALUE_SERIES)
    return f"{n:,}/{expected:,} points visible in VM (flush+export {time.monotonic() - t0:.1f} s)"


# ------------------------------------------------------------------------------- (a) and (b)


def _flood_end_to_end(
    key: str,
    *,
    batches: int,
    readings_per_batch: int,
    ecg_samples: int,
    patients: int,
    concurrency: int,
    batches_per_request: int,
    peak: Peak,
) -> tuple[float, float, str, dict[str, Any]]:
    """Run one flood through a fresh gateway + VM; returns (points/s e2e, points/s committed, load, extra)."""
    points = batches * (readings_per_batch + ecg_samples)
    devices = fleet_devices(patients)
    with victoria_metrics() as vm, _gateway(vm.url, devices, key) as gw:
        load = load_text()
        log(f"({key}) {batches:,} batches x ({readings_per_batch} readings + {ecg_samples} samples), {load}")
        started = time.monotonic()
        cpu0 = cpu_seconds(gw.pid) or 0.0
        src = run_flood(
            gw.url,
            gw.token_file,
            batches=batches,
            readings_per_batch=readings_per_batch,
            ecg_samples=ecg_samples,
            patients=patients,
            concurrency=concurrency,
            batches_per_request=batches_per_request,
        )
        try:
            prog = watch(gw, points, timeout=900, source=src)
            gw_cpu = (cpu_seconds(gw.pid) or 0.0) - cpu0
            res = finish_flood(src, started)
        finally:
            stop_process(src)
        _check_flood(res, key)
        t_first = prog.first_time("readings_ingested")
        t_committed = prog.first_reaching("readings_committed", points)
        t_done = prog.samples[-1][0]
        assert t_first is not None
        e2e = points / (t_done - t_first)
        committed = points / (t_committed - t_first) if t_committed is not None else float("nan")
        extra = {
            "points": points,
            "e2e_s": round(t_done - t_first, 2),
            "commit_s": None if t_committed is None else round(t_committed - t_first, 2),
            "source_acked_per_s": res.summary.get("acked_per_s"),
            "source_elapsed_s": res.summary.get("elapsed_s"),
            "visible": _visible(vm, points),
            "gateway_cores": round(gw_cpu / (t_done - started), 2),
            "rss_mb": round(gw.peak_rss_bytes() / MB, 1),
        }
        peak.update(gw, key)
    log(f"({key}) {extra}")
    _report_profile(key)
    return e2e, committed, load, extra


def bench_readings(sizes: Sizes, peak: Peak, *, concurrency: int = 4, batches_per_request: int = 200) -> Figure:
    e2e, committed, load, extra = _flood_end_to_end(
        "a",
        batches=sizes.readings_batches,
        readings_per_batch=1,
        ecg_samples=0,
        patients=4,
        concurrency=concurrency,
        batches_per_request=batches_per_request,
        peak=peak,
    )
    extra["committed_batches_per_s"] = round(committed)
    return Figure(
        "a",
        "single-reading batches/s, first send → last forwarded",
        e2e,
        "batches/s",
        40_000,
        True,
        load,
        f"flood {sizes.readings_batches:,} x 1 reading, 4 devices, {concurrency} conns x "
        f"{batches_per_request} batches/request; commit-only rate {fmt(committed)}/s",
        extra,
    )


def bench_ecg(sizes: Sizes, peak: Peak, *, concurrency: int = 4, batches_per_request: int = 20) -> Figure:
    e2e, committed, load, extra = _flood_end_to_end(
        "b",
        batches=sizes.ecg_batches,
        readings_per_batch=0,
        ecg_samples=sizes.ecg_samples,
        patients=4,
        concurrency=concurrency,
        batches_per_request=batches_per_request,
        peak=peak,
    )
    extra["committed_samples_per_s"] = round(committed)
    return Figure(
        "b",
        "ECG samples/s end to end",
        e2e,
        "samples/s",
        500_000,
        True,
        load,
        f"flood {sizes.ecg_batches:,} x {sizes.ecg_samples:,}-sample waveform, 4 devices, "
        f"{batches_per_request} batches/request; commit-only rate {fmt(committed)}/s",
        extra,
    )


# ------------------------------------------------------------------------------- (c) latency


async def _probe(url: str, token: str, rate: float, seconds: float, warmup_s: float) -> tuple[list[float], int]:
    """Open-loop paced client: one 1-batch request every 1/rate s; latency = ack − scheduled creation
    time (a late send counts against the gateway, no coordinated omission). Returns (ms, errors)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/cbor"}
    boot = secrets.token_hex(8)
    base_t = time.time_ns() - 3_600_000_000_000
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    conn = aiohttp.TCPConnector(limit=64)

    async def one(session: aiohttp.ClientSession, k: int, scheduled: float) -> None:
        nonlocal errors
        batch = {
            "device": PROBE_DEVICE,
            "key": [boot, k],
            "clock": time.time_ns(),
            "readings": [{"metric": "heart_rate", "v": 72, "u": "/min", "t": base_t + k * 1_000_000, "p": 0}],
        }
        try:
            async with session.post(f"{url}/api/v1/ingest", data=cbor2.dumps({"batches": [batch]})) as r:
                body = await r.read()
                ok = r.status == 200 and b"committed" in body
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        done = loop.time()
        if not ok:
            errors += 1
        elif scheduled - t0 >= warmup_s:
            latencies.append((done - scheduled) * 1000)

    async with aiohttp.ClientSession(headers=headers, connector=conn) as session:
        tasks: list[asyncio.Task[None]] = []
        t0 = loop.time() + 0.05
        n = int(rate * (seconds + warmup_s))
        for k in range(n):
            scheduled = t0 + k / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, k, scheduled)))
        await asyncio.gather(*tasks)
    latencies.sort()
    return latencies, errors


def bench_latency(sizes: Sizes, peak: Peak, batches_per_s: float) -> Figure:
    """Background load: flood paced at ``batches_per_s`` − probe rate (20 batches per request);
    probe: 1-batch requests at ``sizes.probe_rate`` from this process."""
    devices = fleet_devices(4)
    devices[PROBE_DEVICE] = "heart_rate"
    probe_rate = min(sizes.probe_rate, batches_per_s / 2)
    bg_rate = max(1.0, batches_per_s - probe_rate)
    warmup = 1.0
    seconds = sizes.latency_seconds
    bg_batches = int(bg_rate * (seconds + warmup + 2))
    with victoria_metrics() as vm, _gateway(vm.url, devices, "c") as gw:
        load = load_text()
        log(f"(c) {batches_per_s:,.0f} batches/s offered ({bg_rate:,.0f} flood + {probe_rate:.0f} probe), {load}")
        started = time.monotonic()
        src = run_flood(
            gw.url,
            gw.token_file,
            batches=bg_batches,
            readings_per_batch=1,
            patients=4,
            concurrency=4,
            batches_per_request=20,
            rate=bg_rate,
        )
        try:
            while gw.counters()["readings_ingested"] == 0:  # the source is up and sending
                if src.poll() is not None:
                    raise RuntimeError("source exited before sending")
                time.sleep(0.01)
            time.sleep(warmup)
            before = parse_histogram(gw.metrics_text(), "ds4h_commit_latency_seconds")
            lat, errors = asyncio.run(_probe(gw.url, gw.token, probe_rate, seconds, 0.0))
            after = parse_histogram(gw.metrics_text(), "ds4h_commit_latency_seconds")
            c = gw.counters()
            res = finish_flood(src, started)
        finally:
            stop_process(src)
        _check_flood(res, "c")
        hist = histogram_delta(after, before)
        h50 = histogram_quantile(0.5, hist)
        h99 = histogram_quantile(0.99, hist)
        p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
        extra = {
            "offered_batches_per_s": round(batches_per_s),
            "probe_requests": len(lat),
            "probe_errors": errors,
            "probe_p50_ms": round(p50, 2),
            "probe_p99_ms": round(p99, 2),
            "probe_max_ms": round(lat[-1], 2) if lat else None,
            "hist_batches": int(hist.get(float("inf"), 0)),
            "hist_p50_ms": None if h50 is None else round(h50 * 1000, 2),
            "hist_p99_ms": None if h99 is None else round(h99 * 1000, 2),
            "source_acked_per_s": res.summary.get("acked_per_s"),
            "committed_batches": c["batches_committed"],
            "rss_mb": round(gw.peak_rss_bytes() / MB, 1),
        }
        peak.update(gw, "c")
    log(f"(c) {extra}")
    _report_profile("c")
    return Figure(
        "c",
        "p99 batch creation → COMMIT ack (probe round trip)",
        p99,
        "ms",
        20,
        False,
        load,
        f"{probe_rate:.0f}/s paced 1-batch probe requests for {seconds:.0f} s under a flood paced at "
        f"{bg_rate:,.0f} batches/s; probe p50 {p50:.2f} ms; gateway histogram (receive → COMMIT, "
        f"bucket deltas, all batches) p50 {extra['hist_p50_ms']} ms, p99 {extra['hist_p99_ms']} ms",
        extra,
    )


# ------------------------------------------------------------------------------- (d) drain


def bench_drain(sizes: Sizes, peak: Peak) -> Figure:
    n = sizes.backlog_readings
    per_batch = sizes.backlog_per_batch
    batches = -(-n // per_batch)
    n = batches * per_batch
    devices = fleet_devices(4)
    port = free_port()
    with victoria_metrics(port=port, start=False) as vm, _gateway(vm.url, devices, "d") as gw:
        log(f"(d) committing a backlog of {n:,} readings ({batches:,} x {per_batch}) with the store down")
        started = time.monotonic()
        src = run_flood(
            gw.url,
            gw.token_file,
            batches=batches,
            readings_per_batch=per_batch,
            patients=4,
            concurrency=4,
            batches_per_request=50,
        )
        try:
            res = finish_flood(src, started)
        finally:
            stop_process(src)
        _check_flood(res, "d")
        fill_s = time.monotonic() - started
        rss_fill = gw.peak_rss_bytes()
        # let the local sink catch up so that only the store's forwarder works during the drain
        deadline = time.monotonic() + 600
        while True:
            c = gw.counters()
            if c["readings_forwarded"].get("local", 0) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert c["readings_forwarded"].get("influx", 0) == 0, "the store was down: nothing may be forwarded yet"
        load = load_text()
        log(f"(d) backlog committed in {fill_s:.1f} s; starting VictoriaMetrics, {load}")
        t_start = time.monotonic()
        cpu0 = cpu_seconds(gw.pid) or 0.0
        vm.start()
        t_ready = time.monotonic()
        prog = watch(gw, n, timeout=900, fast_interval=0.02, interval=0.1)
        gw_cpu = (cpu_seconds(gw.pid) or 0.0) - cpu0
        t_first = prog.first_time("readings_forwarded", "influx")
        t_done = prog.samples[-1][0]
        assert t_first is not None
        # nan when the whole backlog went out between two polls (100 ms)
        rate_first = n / (t_done - t_first) if t_done > t_first else float("nan")
        rate_ready = n / (t_done - t_ready)
        extra = {
            "readings": n,
            "per_batch": per_batch,
            "fill_s": round(fill_s, 1),
            "rss_after_fill_mb": round(rss_fill / MB, 1),
            "vm_start_s": round(t_ready - t_start, 2),
            "first_write_after_ready_s": round(t_first - t_ready, 2),
            "drain_s": round(t_done - t_ready, 2),
            "rate_from_first_write": None if math.isnan(rate_first) else round(rate_first),
            "gateway_cores": round(gw_cpu / (t_done - t_start), 2),
            "visible": _visible(vm, n),
            "rss_mb": round(gw.peak_rss_bytes() / MB, 1),
        }
        peak.update(gw, "d")
    log(f"(d) {extra}")
    _report_profile("d")
    return Figure(
        "d",
        "backlog drain readings/s (store ready → last forwarded)",
        rate_ready,
        "readings/s",
        200_000,
        True,
        load,
        f"{n:,} readings in {batches:,} batches of {per_batch}, committed with the store down, then the "
        f"store started; includes the forwarder's retry wait (≤ 0.5 s); from its first write: "
        f"{fmt(rate_first)}/s",
        extra,
    )


def rss_figure(peak: Peak) -> Figure:
    return Figure(
        "e",
        "peak RSS of the gateway process",
        peak.bytes / MB if peak.bytes else None,
        "MB",
        120,
        False,
        load_text(),
        f"max over scenarios (psutil every 100 ms and /proc VmHWM), highest in ({peak.where})",
    )


# ------------------------------------------------------------------------------- runner

ALL = "abcde"


def run(
    quick: bool,
    only: str = ALL,
    *,
    latency_rate: float | None = None,
    concurrency: int = 4,
    batches_per_request: int = 200,
) -> list[Figure]:
    sizes = Sizes.quick() if quick else Sizes.full()
    peak = Peak()
    figures: list[Figure] = []
    a: Figure | None = None
    if "a" in only:
        a = bench_readings(sizes, peak, concurrency=concurrency, batches_per_request=batches_per_request)
        figures.append(a)
        print_figure(a)
    if "b" in only:
        figures.append(bench_ecg(sizes, peak, concurrency=concurrency))
        print_figure(figures[-1])
    if "c" in only:
        rate = latency_rate
        if rate is None:
            if a is None or a.value is None:
                a = bench_readings(Sizes.quick(), peak)
            rate = a.value / 2 if a.value else 1000.0
        figures.append(bench_latency(sizes, peak, rate))
        print_figure(figures[-1])
    if "d" in only:
        figures.append(bench_drain(sizes, peak))
        print_figure(figures[-1])
    if "e" in only:
        figures.append(rss_figure(peak))
        print_figure(figures[-1])
    return figures


def print_figure(f: Figure) -> None:
    verdict = {True: "meets", False: "MISSES", None: "?"}[f.met]
    print(f"({f.key}) {f.what}: {f.value_text()} {f.unit}  [target {f.target_text()}: {verdict}]  ({f.load})")
    if f.how:
        print(f"    {f.how}")
    sys.stdout.flush()


def print_table(figures: list[Figure]) -> None:
    m = machine()
    print()
    print(f"machine: nproc={m['nproc']} python={m['python']} {m['platform']}; {m['load']} at the end")
    rows = [("", "figure", "measured", "unit", "target (2 cores)", "", "load at start")]
    for f in figures:
        verdict = {True: "ok", False: "MISSED", None: "?"}[f.met]
        rows.append((f.key, f.what, f.value_text(), f.unit, f.target_text(), verdict, f.load))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--only", default=ALL, help=f"scenarios to run, e.g. 'a,c' (default: {ALL})")
    ap.add_argument("--latency-rate", type=float, help="batches/s offered in (c) (default: half of (a))")
    ap.add_argument("--concurrency", type=int, default=4, help="source connections in (a)/(b) (default: 4)")
    ap.add_argument("--py-spy", type=Path, metavar="DIR", help="record each scenario's gateway with py-spy into DIR")
    ap.add_argument("--batches-per-request", type=int, default=200, help="batches per request in (a) (default: 200)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    global PROFILE_DIR
    PROFILE_DIR = args.py_spy
    only = "".join(ch for ch in args.only.lower() if ch in ALL)
    m = machine()
    print(f"bench_pipeline ({'quick' if args.quick else 'full'}): nproc={m['nproc']} python={m['python']}, {m['load']}")
    with contextlib.suppress(KeyboardInterrupt):
        figures = run(
            args.quick,
            only,
            latency_rate=args.latency_rate,
            concurrency=args.concurrency,
            batches_per_request=args.batches_per_request,
        )
        print_table(figures)
        return 0
    print("interrupted; every process this run started was stopped", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
