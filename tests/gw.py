"""Helpers to run a real gateway in tests and talk to it over its real control API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cbor2

from gateway.config import Config, parse_config
from gateway.pipeline import Gateway

DEVICES = {
    "hr-1": {"kind": "heart_rate"},
    "cgm-1": {"kind": "cgm"},
    "ecg-1": {"kind": "ecg"},
}


def make_config(state_dir: Path, **sections: Any) -> Config:
    raw: dict[str, Any] = {
        "gateway": {"state_dir": str(state_dir), "shutdown_flush_s": 5, "clock": "synced"},
        "devices": DEVICES,
        "web": {"port": 0},
        "sinks": {"retry_initial_s": 0.05, "retry_max_s": 0.5},
        # the tests run with encryption at rest on, its key beside the data (the gateway warns at start)
        "encryption": {"insecure_key_on_disk": True},
    }
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v}
    return parse_config(raw, "<test>")


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Gateway]:
    gw = Gateway(config)
    task = asyncio.create_task(gw.run(install_signal_handlers=False))
    try:
        async with asyncio.timeout(20):
            while not gw.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield gw
    finally:
        gw.request_stop()
        async with asyncio.timeout(30):
            await task


def hr_batch(device: str, seq: int, value: float = 72.0, t_ns: int | None = None, **extra: Any) -> dict[str, Any]:
    t = t_ns if t_ns is not None else 1_780_000_000_000_000_000 + seq * 1_000_000_000
    reading = {"metric": "heart_rate", "v": value, "u": "/min", "t": t, "seq": seq, **extra}
    return {"device": device, "key": ["boot1", seq], "readings": [reading]}


async def post(
    gw: Gateway, batches: list[dict[str, Any]], *, token: str | None = None, clock: int | None = None
) -> tuple[int, Any]:
    doc: dict[str, Any] = {"batches": batches} if clock is None else {"clock": clock, "batches": batches}
    headers = {
        "Authorization": f"Bearer {token if token is not None else gw.token}",
        "Content-Type": "application/cbor",
    }
    async with aiohttp.ClientSession() as s:
        async with asyncio.timeout(30):
            async with s.post(f"{gw.url}/api/v1/ingest", data=cbor2.dumps(doc), headers=headers) as r:
                ctype = r.headers.get("Content-Type", "")
                body = await r.json() if "json" in ctype else await r.text()
                return r.status, body


async def get(gw: Gateway, path: str, *, auth: bool = True) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {gw.token}"} if auth else {}
    async with aiohttp.ClientSession() as s:
        async with asyncio.timeout(30):
            async with s.get(f"{gw.url}{path}", headers=headers) as r:
                return r.status, await r.text()


async def wait_until(pred: Any, timeout: float = 20.0, what: str = "condition") -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
