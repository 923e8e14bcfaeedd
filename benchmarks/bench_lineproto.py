"""Line-protocol encoding and InfluxSink end-to-end write rates (prints figures, asserts nothing).

.venv/bin/python benchmarks/bench_lineproto.py                # starts a private VictoriaMetrics
.venv/bin/python benchmarks/bench_lineproto.py --url http://127.0.0.1:8428
.venv/bin/python benchmarks/bench_lineproto.py --no-e2e       # encoding only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.model import Batch, Reading, SourceKey, TimeQuality, Waveform
from gateway.sinks import lineproto
from gateway.sinks.influx import InfluxSink

T0 = 1_700_000_000_000_000_000
ECG_PERIOD_NS = 4_000_000  # 250 Hz


def reading_batches(n_batches: int, per_batch: int, device: str = "bench-hr-01") -> list[Batch]:
    out = []
    t = T0
    for i in range(n_batches):
        readings = []
        for j in range(per_batch):
            readings.append(
                Reading(
                    "heart_rate",
                    60.0 + (i * per_batch + j) % 40 + 0.5,
                    "/min",
                    t,
                    precision=1,
                    seq=i * per_batch + j,
                    time_quality=TimeQuality.DEVICE_UNCORRECTED if j % 7 == 0 else TimeQuality.GOOD,
                )
            )
            t += 1_000_000_000
        out.append(Batch(SourceKey(device, ("boot", i)), received_ns=t, readings=tuple(readings)))
    return out


def ecg_batches(n_batches: int, samples_per_batch: int, device: str = "bench-ecg-01") -> list[Batch]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n_batches):
        samples = rng.integers(-3000, 3000, samples_per_batch).astype(np.int32)
        start = T0 + i * samples_per_batch * ECG_PERIOD_NS
        w = Waveform("ecg", "uV", start, ECG_PERIOD_NS, samples)
        out.append(Batch(SourceKey(device, ("boot", i)), received_ns=start, waveforms=(w,)))
    return out


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_encoding(repeat: int) -> None:
    print(f"line-protocol encoding (one core, best of {repeat}):")
    rb = reading_batches(10_000, 10)
    n = sum(b.n_points for b in rb)
    dt = best_of(lambda: lineproto.encode_batches(rb), repeat)
    print(f"  readings, 10 per batch        {n:>9,} points   {n / dt:>12,.0f} points/s")
    for per_batch, n_batches in ((250, 2_000), (2_500, 200), (15_000, 40), (250 * 3600, 1)):
        eb = ecg_batches(n_batches, per_batch)
        n = sum(b.n_samples for b in eb)
        dt = best_of(lambda eb=eb: lineproto.encode_batches(eb), repeat)  # type: ignore[misc]
        print(f"  ECG 250 Hz, {per_batch:>7,} samples/batch {n:>9,} samples  {n / dt:>12,.0f} samples/s")
    # the two waveform formatters side by side on one 60 s waveform
    w = ecg_batches(1, 15_000)[0].waveforms[0]
    prefix = "ecg,device=bench-ecg-01,unit=uV"
    for name, fn in (
        ("numpy column formatter", lambda: lineproto._waveform_numpy(prefix, "i", w)),
        ("join over tolist()", lambda: lineproto._waveform_join(prefix, "i", w)),
    ):
        dt = best_of(fn, repeat * 3)
        print(f"    {name:<24} 15,000 samples  {15_000 / dt:>12,.0f} samples/s")


async def bench_e2e(url: str, max_body_bytes: int) -> None:
    print(f"end to end into {url} (InfluxSink.write, sequential requests, max body {max_body_bytes:,} B):")
    sink = InfluxSink("bench", url, "ds4h", "ds4h", "bench-token", max_body_bytes=max_body_bytes)
    try:
        assert await sink.ping(), f"no store answers at {url}"
        cases = (
            ("readings, 1,000 batches x 10 per write", reading_batches(20_000, 10, "bench-e2e-hr"), 1_000),
            ("ECG 250 Hz, 1 s batches, 100 per write", ecg_batches(4_000, 250, "bench-e2e-ecg"), 100),
            ("ECG 250 Hz, 60 s batches, 10 per write", ecg_batches(100, 15_000, "bench-e2e-ecg60"), 10),
        )
        for label, batches, per_write in cases:
            n = sum(b.n_points for b in batches)
            t0 = time.perf_counter()
            for i in range(0, len(batches), per_write):
                await sink.write(batches[i : i + per_write])
            dt = time.perf_counter() - t0
            print(f"  {label:<42} {n:>9,} points  {n / dt:>12,.0f} points/s")
    finally:
        await sink.close()


@contextlib.contextmanager
def store(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.services import VictoriaMetrics

    with VictoriaMetrics() as vm:
        yield vm.url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="InfluxDB v2 compatible store (default: start a private VictoriaMetrics)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--no-e2e", action="store_true", help="encoding figures only")
    args = ap.parse_args()
    bench_encoding(args.repeat)
    if not args.no_e2e:
        with store(args.url) as url:
            asyncio.run(bench_e2e(url, args.max_body_bytes))


if __name__ == "__main__":
    main()
