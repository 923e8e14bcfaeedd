"""Research endpoint latency and throughput (docs/consent.md#endpoint).

A gateway (in this process, research path on, no research store) gets one consented patient wearing a
heart-rate strap and an ECG patch: ``--readings`` heart-rate readings (batches of 100) and ``--waveforms`` ECG
waveforms of 250 samples. Then ``GET /dataspace/v1/observations`` is timed for pages of 200 and 2000
Observations (first and last page) and as CSV; each figure is the median and max of ``--repeat`` requests.

    .venv/bin/python benchmarks/bench_research.py [--readings 20000] [--waveforms 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.dataspace.patients import ConsentDb, ConsentRecord
from gateway.dataspace.pseudonym import open_pseudonymiser
from tests.gw import make_config, post, running, wait_until

PATIENT = "bench-patient-1"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ds4h-bench-research-") as tmp:
        state = Path(tmp)
        cfg = make_config(state, research={"enabled": True, "insecure_key_on_disk": True})
        async with running(cfg) as gw:
            since = time.time_ns() - 7 * 86400 * 10**9
            with ConsentDb.open(state) as db:
                db.bind("hr-1", PATIENT, since)
                db.bind("ecg-1", PATIENT, since)
                db.add_consents([ConsentRecord(PATIENT, "permit", since, None, "active", "bench", "bench:1")])
            t0 = time.time_ns() - 86400 * 10**9
            ecg = np.arange(250, dtype=np.int32).astype("<i4").tobytes()
            batches: list[dict[str, Any]] = []
            for b in range(args.readings // 100):
                batches.append({"device": "hr-1", "key": ["bench", b], "readings": [
                    {"metric": "heart_rate", "v": 60.0 + (i % 40), "u": "/min", "t": t0 + (b * 100 + i) * 10**9}
                    for i in range(100)]})  # fmt: skip
            for w in range(args.waveforms):
                wave = {"metric": "ecg", "u": "uV", "t0": t0 + w * 10**9, "period": 4_000_000, "i32le": ecg}
                batches.append({"device": "ecg-1", "key": ["bench", w], "waveforms": [wave]})
            for i in range(0, len(batches), 50):
                status, body = await post(gw, batches[i : i + 50])
                assert status == 200, body
            n = len(batches)
            assert gw.research is not None
            await wait_until(lambda: sum(gw.research.sink.decided.values()) >= n, timeout=300, what="research sink")  # type: ignore[union-attr]
            psn = open_pseudonymiser(state).patient(PATIENT)
            token = (state / "research.token").read_text().strip()
            total = args.readings + args.waveforms
            base = f"{gw.url}/dataspace/v1/observations?patient={psn}"
            cases = [
                ("FHIR page 200, first", f"{base}&_count=200", "application/fhir+json"),
                ("FHIR page 200, last", f"{base}&_count=200&_offset={total - 200}", "application/fhir+json"),
                ("FHIR page 2000, first", f"{base}&_count=2000", "application/fhir+json"),
                ("CSV page 2000, first", f"{base}&_count=2000", "text/csv"),
            ]
            if args.profile:
                import cProfile
                import pstats

                from gateway.dataspace.endpoint import Signer, make_page
                from gateway.dataspace.observations import Query

                signer = Signer(gw.identity.did, gw.identity.sign)
                cProfile.runctx(
                    "make_page(state, open_pseudonymiser(state), signer, Query(psn), offset=0, count=200,"
                    " fmt='fhir', base_url='http://x')",
                    globals(),
                    {"make_page": make_page, "state": state, "signer": signer, "Query": Query, "psn": psn},
                    str(state / "prof"),
                )
                pstats.Stats(str(state / "prof")).sort_stats("cumulative").print_stats(20)
            print(f"history: {args.readings} readings + {args.waveforms} ECG waveforms of one patient ({total} obs.)")
            async with aiohttp.ClientSession() as s:
                for name, url, accept in cases:
                    times = []
                    size = 0
                    for _ in range(args.repeat):
                        start = time.perf_counter()
                        async with s.get(url, headers={"Authorization": f"Bearer {token}", "Accept": accept}) as r:
                            body = await r.read()
                            assert r.status == 200, body[:200]
                        times.append(time.perf_counter() - start)
                        size = len(body)
                    if accept != "text/csv":
                        count = sum(1 for e in json.loads(body)["entry"]) - 1
                    else:
                        count = body.count(b"\n") - 1
                    med = statistics.median(times)
                    print(f"{name:<24} {count:>5} obs  {size / 1e6:6.2f} MB  median {med * 1000:7.1f} ms"
                          f"  max {max(times) * 1000:7.1f} ms  {count / med:8.0f} obs/s")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=20_000)
    p.add_argument("--waveforms", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="print a cProfile of one page of 200")
    asyncio.run(main(p.parse_args()))
