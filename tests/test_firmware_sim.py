"""Tests for firmware_sim: physiology, fleet batch maps, the ingest client and the ds4h-sim CLI.

The HTTP tests run against a real aiohttp server written here that answers like docs/ingest.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import sys
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim import cli
from firmware_sim.fleet import DEVICE_ID_RE, Fleet
from firmware_sim.ingest_client import IngestAuthError, IngestClient, encode_body, source_key_text
from firmware_sim.physiology import ECG_FS_HZ, ECG_PERIOD_NS, Ecg, Glucose, HeartRate
from tests.gw import wait_until

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
KEY_PART_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ABSENT = {"nan", "nres", "+inf", "-inf"}
# Metric → units, for the metrics the simulator uses (kept in sync with docs/schema.md by hand).
UNITS = {
    "heart_rate": {"/min"},
    "spo2": {"%"},
    "glucose_isf": {"mg/dL", "mmol/L"},
    "glucose_capillary_whole_blood": {"mg/dL", "mmol/L"},
    "ecg": {"uV"},
}
WAVEFORMS = {"ecg"}


# ---------------------------------------------------------------------------- wire shape


def shape_errors(b: Any) -> list[str]:
    """Everything wrong with a batch map according to docs/ingest.md (empty list: valid)."""
    errs: list[str] = []
    if not isinstance(b, dict):
        return ["batch is not a map"]
    extra = set(b) - {"device", "key", "readings", "waveforms"}
    if extra:
        errs.append(f"unknown keys {extra}")
    if not isinstance(b.get("device"), str) or not DEVICE_ID_RE.fullmatch(b["device"]):
        errs.append("device")
    key = b.get("key")
    if not isinstance(key, list) or not 1 <= len(key) <= 4:
        errs.append("key")
    else:
        for p in key:
            ok = isinstance(p, int | str) and not isinstance(p, bool)
            if not ok or (isinstance(p, str) and not KEY_PART_RE.fullmatch(p)):
                errs.append(f"key part {p!r}")
    if "clock" in b and (isinstance(b["clock"], bool) or not isinstance(b["clock"], int)):
        errs.append("clock")
    for r in b.get("readings", []):
        if set(r) - {"metric", "v", "absent", "u", "t", "p", "seq", "status", "alert"}:
            errs.append(f"reading keys {set(r)}")
        if r.get("metric") not in UNITS or r["metric"] in WAVEFORMS:
            errs.append(f"reading metric {r.get('metric')}")
        elif r.get("u") not in UNITS[r["metric"]]:
            errs.append(f"unit {r.get('u')}")
        has_v = isinstance(r.get("v"), int | float) and not isinstance(r.get("v"), bool)
        if has_v == ("absent" in r) or ("absent" in r and r["absent"] not in ABSENT):
            errs.append("v/absent")
        if "t" in r and (isinstance(r["t"], bool) or not isinstance(r["t"], int)):
            errs.append("t")
        for k in ("p", "seq", "status"):
            if k in r and (isinstance(r[k], bool) or not isinstance(r[k], int)):
                errs.append(k)
        if "alert" in r and not isinstance(r["alert"], bool):
            errs.append("alert")
    for w in b.get("waveforms", []):
        if set(w) != {"metric", "u", "t0", "period", "i32le"}:
            errs.append(f"waveform keys {set(w)}")
            continue
        if w["metric"] not in WAVEFORMS or w["u"] not in UNITS[w["metric"]]:
            errs.append("waveform metric/unit")
        if not isinstance(w["t0"], int) or not isinstance(w["period"], int) or w["period"] <= 0:
            errs.append("t0/period")
        if not isinstance(w["i32le"], bytes) or len(w["i32le"]) % 4:
            errs.append("i32le")
    if not b.get("readings") and not b.get("waveforms"):
        errs.append("empty batch")
    return errs


def run_fleet(fleet: Fleet, seconds: int, step_s: float = 1.0, start: int = T0) -> list[dict[str, Any]]:
    out = fleet.tick(start)
    t = start
    while t < start + seconds * NS:
        t = min(t + int(step_s * NS), start + seconds * NS)
        out += fleet.tick(t)
    return out


def samples(w: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.int32]]:
    return np.frombuffer(w["i32le"], dtype="<i4").astype(np.int32)


def r_peaks(x: np.ndarray[Any, Any], threshold: float = 500.0) -> int:
    """Count R waves: local maxima above ``threshold`` µV."""
    mid = x[1:-1]
    return int(np.sum((mid > threshold) & (mid >= x[:-2]) & (mid > x[2:])))


# ---------------------------------------------------------------------------- physiology


def test_ecg_frames_are_continuous_int32() -> None:
    a = Ecg(np.random.default_rng(1), noise_uv=0.0)
    b = Ecg(np.random.default_rng(1), noise_uv=0.0)
    whole = a.frame(75.0, 4 * ECG_FS_HZ)
    parts = np.concatenate([b.frame(75.0, ECG_FS_HZ) for _ in range(4)])
    assert whole.dtype == np.int32 and parts.dtype == np.int32
    assert np.array_equal(whole, parts)


@settings(max_examples=25, deadline=None)
@given(hr=st.floats(min_value=40.0, max_value=180.0), seed=st.integers(0, 2**32 - 1))
def test_ecg_beat_rate_tracks_heart_rate(hr: float, seed: int) -> None:
    ecg = Ecg(np.random.default_rng(seed), noise_uv=0.0)
    x = np.concatenate([ecg.frame(hr) for _ in range(30)])
    assert x.size == 30 * ECG_FS_HZ
    assert abs(r_peaks(x) - hr / 2.0) <= 1.5  # hr/60 beats per second × 30 s


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), baseline=st.floats(60.0, 90.0))
def test_heart_rate_stays_bounded(seed: int, baseline: float) -> None:
    hr = HeartRate(np.random.default_rng(seed), baseline, step_sd=8.0)
    values = [hr.step() for _ in range(2000)]
    assert min(values) >= 40.0 and max(values) <= 180.0


def test_glucose_is_deterministic_for_a_seed() -> None:
    a = Glucose(np.random.default_rng(5), 90.0)
    b = Glucose(np.random.default_rng(5), 90.0)
    assert [a.cgm(t * 300.0) for t in range(500)] == [b.cgm(t * 300.0) for t in range(500)]


# ---------------------------------------------------------------------------- fleet


def test_device_ids_are_deterministic_and_canonical() -> None:
    a, b = Fleet(12), Fleet(12, seed=99)
    assert a.devices() == b.devices()
    assert len(a.devices()) == 12 * 5
    assert len({d for d, _ in a.devices()}) == 60
    assert all(DEVICE_ID_RE.fullmatch(d) for d, _ in a.devices())
    assert {k for _, k in a.devices()} == {"heart_rate", "cgm", "glucose_meter", "ecg", "pulse_oximeter"}
    assert a.devices()[:4] == [
        ("p01-hr", "heart_rate"),
        ("p01-cgm", "cgm"),
        ("p01-bgm", "glucose_meter"),
        ("p01-ecg", "ecg"),
    ]
    assert Fleet(150).devices()[0][0] == "p001-hr"
    # A new process is a rebooted device: same ids, new boot ids.
    assert a.device("p01-hr").boot_id != b.device("p01-hr").boot_id


def test_batches_have_the_ingest_shape_and_increasing_keys() -> None:
    fleet = Fleet(3, seed=3, speed=60.0)
    batches = run_fleet(fleet, 120, step_s=0.7)
    assert batches
    for b in batches:
        assert shape_errors(b) == [], b
    last: dict[str, int] = {}
    for b in batches:
        boot, seq = b["key"]
        assert boot == fleet.device(b["device"]).boot_id
        assert seq > last.get(b["device"], 0)
        last[b["device"]] = seq
    kinds = dict(fleet.devices())
    per_kind = Counter(kinds[b["device"]] for b in batches)
    # 1 s frames for 120 s per 1 Hz device; CGM every 300 s of sim time = every 5 s at 60x.
    assert per_kind["heart_rate"] == per_kind["ecg"] == per_kind["pulse_oximeter"] == 3 * 120
    assert per_kind["cgm"] == 3 * 24
    # Source keys are unique.
    assert len({source_key_text(b) for b in batches}) == len(batches)


def test_same_seed_same_physiology_whatever_the_tick_pattern() -> None:
    def values(step: float) -> list[Any]:
        bs = run_fleet(Fleet(2, seed=11, speed=120.0), 60, step_s=step)
        out = [(b["device"], r["t"], r["v"]) for b in bs for r in b.get("readings", [])]
        out += [(b["device"], w["t0"], samples(w).tolist()) for b in bs for w in b.get("waveforms", [])]
        return sorted(out)

    assert values(1.0) == values(7.3)


def test_ecg_through_the_fleet_is_continuous_and_tracks_hr() -> None:
    fleet = Fleet(1, seed=4)
    batches = run_fleet(fleet, 60, step_s=2.5)
    ecg = [b for b in batches if b["device"] == "p01-ecg"]
    hr = [r["v"] for b in batches if b["device"] == "p01-hr" for r in b["readings"]]
    assert len(ecg) == 60
    waves = [b["waveforms"][0] for b in ecg]
    for prev, cur in itertools.pairwise(waves):
        assert cur["t0"] == prev["t0"] + ECG_FS_HZ * ECG_PERIOD_NS
    assert all(w["period"] == ECG_PERIOD_NS and len(w["i32le"]) == 4 * ECG_FS_HZ for w in waves)
    x = np.concatenate([samples(w) for w in waves])
    # No jump at frame joins larger than the steepest slope inside frames.
    d = np.abs(np.diff(x))
    joins = np.arange(ECG_FS_HZ - 1, x.size - 1, ECG_FS_HZ)
    assert d[joins].max() <= d.max()
    assert abs(r_peaks(x, 400.0) - sum(hr) / 60.0) <= 2.0


def test_glucose_alert_flag_below_70() -> None:
    fleet = Fleet(6, seed=0, speed=600.0)
    batches = run_fleet(fleet, 600, step_s=5.0)
    glucose = [r for b in batches for r in b.get("readings", []) if r["metric"].startswith("glucose")]
    assert {r["metric"] for r in glucose} == {"glucose_isf", "glucose_capillary_whole_blood"}
    assert all(r["u"] == "mg/dL" for r in glucose)
    low = [r for r in glucose if r["v"] < 70]
    assert low, "expected some hypoglycaemia in 100 h of sim time"
    assert all(r.get("alert") is True for r in low)
    assert not any(r.get("alert") for r in glucose if r["v"] >= 70)


def test_encode_body_matches_cbor2() -> None:
    batches = run_fleet(Fleet(1), 3)
    for n in (0, 1, 23, 24, 300):
        bs = (batches * 200)[:n]
        assert encode_body([cbor2.dumps(b) for b in bs], 123) == cbor2.dumps({"clock": 123, "batches": bs})


# ---------------------------------------------------------------------------- CLI: devices


def test_cli_devices_toml_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devices", "--patients", "3"]) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["devices"] == {d: {"kind": k} for d, k in Fleet(3).devices()}
    assert cli.main(["devices", "--patients", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


@pytest.mark.parametrize("argv", [[], ["devices"], ["http"], ["flood"]])
def test_cli_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: ds4h-sim" in capsys.readouterr().out


# ---------------------------------------------------------------------------- fake gateway

TOKEN = "test-token-0123"


class FakeGateway:
    """Answers like docs/ingest.md; scripted faults: 503 once, an answer lost after commit."""

    def __init__(self, *, busy_first: int = 0, lose_answer_once: bool = False, quarantine: str = "") -> None:
        self.committed: Counter[str] = Counter()
        self.busy_left = busy_first
        self.lose_answer = lose_answer_once
        self.quarantine = quarantine
        self.requests = 0
        self.duplicates = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "bad token"}, status=401)
        if request.content_type != "application/cbor":
            return web.json_response({"error": "content type"}, status=400)
        doc = cbor2.loads(await request.read())
        if not isinstance(doc, dict) or not isinstance(doc.get("batches"), list):
            return web.json_response({"error": "no batches"}, status=400)
        if self.busy_left:
            self.busy_left -= 1
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
        results: list[dict[str, str]] = []
        for b in doc["batches"]:
            errs = shape_errors(b)
            if errs or b["device"] == self.quarantine:
                results.append({"status": "quarantined", "reason": "unknown-device" if not errs else errs[0]})
                continue
            key = source_key_text(b)
            if self.committed[key]:
                self.duplicates += 1
                results.append({"status": "duplicate"})
            else:
                results.append({"status": "committed"})
            self.committed[key] += 1
        if self.lose_answer:  # committed, but the answer never arrives in time
            self.lose_answer = False
            await asyncio.sleep(1.5)
        return web.json_response({"results": results})

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/api/v1/ingest", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Awaitable[FakeGateway]]]:
    started: list[FakeGateway] = []

    async def make(port: int = 0, **kw: Any) -> FakeGateway:
        gw = FakeGateway(**kw)
        await gw.start(port)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ack_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---------------------------------------------------------------------------- ingest client


async def test_client_acks_every_batch_exactly_once(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[FakeGateway]]
) -> None:
    gw = await gateway_factory(busy_first=1, lose_answer_once=True)
    batches = run_fleet(Fleet(3, seed=1, speed=60.0), 30)
    ack = tmp_path / "acks.txt"
    async with IngestClient(
        gw.url, TOKEN, batches_per_request=16, request_timeout_s=0.5, ack_log=ack, backoff_initial_s=0.05
    ) as client:
        await client.submit(batches)
        assert await client.flush(within_s=20)
    keys = [source_key_text(b) for b in batches]
    lines = ack_lines(ack)
    assert sorted(lines) == sorted(keys)  # every batch, once
    assert set(gw.committed) == set(keys)
    s = client.stats
    assert s.submitted == s.acked == len(batches)
    assert s.busy == 1 and s.duplicates >= 1 and s.retries >= 2
    assert s.committed + s.duplicates == s.acked and s.quarantined == 0


async def test_client_survives_connection_refused_then_up(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[FakeGateway]]
) -> None:
    port = free_port()
    batches = run_fleet(Fleet(2), 10)
    ack = tmp_path / "acks.txt"
    async with IngestClient(
        f"http://127.0.0.1:{port}/api/v1/ingest",
        TOKEN,
        batches_per_request=7,
        request_timeout_s=2.0,
        ack_log=ack,
        concurrency=3,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    ) as client:
        await client.submit(batches)
        await asyncio.sleep(0.5)
        assert client.stats.acked == 0 and client.stats.retries >= 1
        gw = await gateway_factory(port)
        assert await client.flush(within_s=20)
    assert sorted(ack_lines(ack)) == sorted(source_key_text(b) for b in batches)
    assert gw.duplicates == 0 and client.stats.acked == len(batches)


async def test_client_drops_quarantined(tmp_path: Path, gateway_factory: Callable[..., Awaitable[FakeGateway]]) -> None:
    gw = await gateway_factory(quarantine="p01-spo2")
    batches = run_fleet(Fleet(1), 5)
    ack = tmp_path / "acks.txt"
    async with IngestClient(gw.url, TOKEN, ack_log=ack) as client:
        await client.submit(batches)
        assert await client.flush(within_s=10)
    spo2 = [b for b in batches if b["device"] == "p01-spo2"]
    assert client.stats.quarantined == len(spo2) == 5
    assert sorted(ack_lines(ack)) == sorted(source_key_text(b) for b in batches if b not in spo2)


async def test_client_bad_token_fails_fast(gateway_factory: Callable[..., Awaitable[FakeGateway]]) -> None:
    gw = await gateway_factory()
    async with IngestClient(gw.url, "wrong") as client:
        await client.submit(run_fleet(Fleet(1), 2))
        assert not await client.flush(within_s=10)
        assert isinstance(client.error, IngestAuthError)
        assert client.stats.acked == 0


# ---------------------------------------------------------------------------- CLI: http, flood


async def run_cli(*args: str, stop_when: Callable[[], bool] | None = None) -> tuple[int, dict[str, Any]]:
    """Run ``python -m firmware_sim ARGS``; with ``stop_when``, send SIGTERM once it holds (within 60 s)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if stop_when is not None:
        try:
            await wait_until(stop_when, timeout=60, what="the condition to stop the simulator")
        finally:
            proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, (out, err)
    return proc.returncode, json.loads(lines[0])


async def test_cli_http_runs_for_duration(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[FakeGateway]]
) -> None:
    gw = await gateway_factory(busy_first=1)
    token = tmp_path / "control.token"
    token.write_text(TOKEN + "\n")
    ack = tmp_path / "acks.txt"
    rc, summary = await run_cli(
        "http", "--url", gw.url, "--token-file", str(token), "--patients", "2",
        "--duration", "3", "--speed", "300", "--ack-log", str(ack),
    )  # fmt: skip
    assert rc == 0, summary
    assert summary["mode"] == "http" and summary["pending"] == 0 and summary["error"] is None
    assert summary["acked"] == summary["submitted"] >= 2 * 3 * 2  # ≥ 2 s of 1 Hz frames for 3 devices
    lines = ack_lines(ack)
    assert len(lines) == len(set(lines)) == summary["acked"]
    assert set(lines) == set(gw.committed)
    assert {line.split("/")[0] for line in lines} >= {"p01-hr", "p01-ecg", "p02-spo2", "p01-cgm"}


async def test_cli_http_stops_on_sigterm(
    tmp_path: Path, gateway_factory: Callable[..., Awaitable[FakeGateway]]
) -> None:
    gw = await gateway_factory()
    token = tmp_path / "control.token"
    token.write_text(TOKEN)
    # SIGTERM once three frames are in: the first request implies the signal handler is installed
    rc, summary = await run_cli(
        "http", "--url", gw.url, "--token-file", str(token), stop_when=lambda: len(gw.committed) >= 3
    )
    assert rc == 0 and summary["pending"] == 0 and summary["acked"] >= 3


async def test_cli_flood(tmp_path: Path, gateway_factory: Callable[..., Awaitable[FakeGateway]]) -> None:
    gw = await gateway_factory()
    token = tmp_path / "control.token"
    token.write_text(TOKEN)
    ack = tmp_path / "acks.txt"
    rc, summary = await run_cli(
        "flood", "--url", gw.url, "--token-file", str(token), "--batches", "500",
        "--readings-per-batch", "5", "--ecg-samples", "50", "--patients", "3",
        "--batches-per-request", "64", "--ack-log", str(ack),
    )  # fmt: skip
    assert rc == 0, summary
    assert summary["acked"] == summary["committed"] == 500
    assert summary["readings_acked"] == 2500 and summary["samples_acked"] == 25000
    lines = ack_lines(ack)
    assert len(set(lines)) == len(lines) == 500
    assert {line.split("/")[0] for line in lines} == {"p01-ecg", "p02-ecg", "p03-ecg"}


def test_flood_batches_shape_and_monotonic_stamps() -> None:
    bs = list(cli.flood_batches(batches=40, readings_per_batch=3, ecg_samples=10, patients=2, seed=0, start_ns=T0))
    assert len(bs) == 40 and all(shape_errors(b) == [] for b in bs)
    for dev in ("p01-ecg", "p02-ecg"):
        mine = [b for b in bs if b["device"] == dev]
        t = [r["t"] for b in mine for r in b["readings"]]
        t0 = [b["waveforms"][0]["t0"] for b in mine]
        assert t == sorted(set(t)) and t[-1] < T0
        assert all(b - a == 10 * ECG_PERIOD_NS for a, b in itertools.pairwise(t0))
        assert [b["key"][1] for b in mine] == list(range(1, 21))
