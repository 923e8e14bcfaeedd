"""``ds4h-gateway demo``: the gateway on embedded defaults, fed by simulated patients, with a live view.

The simulated devices run in their own processes and reach the gateway only over the wire: patients'
devices over the local ingest API (``python -m firmware_sim http``), 5G cardiac monitors over MQTT
(``python -m firmware_sim mqtt``) through a local broker (gateway.mqtt.demo_broker: mosquitto with mutual
TLS when installed, else an embedded broker). State lives in a temporary directory unless ``--state-dir``
is given; the only sink is the local history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.ble import demo_radio
from gateway.ble.demo_radio import DemoRadio
from gateway.config import Config, parse_config
from gateway.errors import GatewayError
from gateway.mqtt.demo_broker import DemoBroker
from gateway.mqtt.demo_broker import start as start_broker
from gateway.pipeline import Gateway

log = logging.getLogger(__name__)


async def _sim_devices(patients: int) -> dict[str, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim",
        "devices",
        "--patients",
        str(patients),
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise GatewayError("the device simulator could not list its devices")
    listed: dict[str, dict[str, str]] = json.loads(out)["devices"]
    return {device_id: {"kind": d["kind"]} for device_id, d in listed.items()}


def _view(gw: Gateway, rate: float, sim_running: bool) -> Group:
    s = gw.stats()
    c = s["counters"]
    head = Text.assemble(
        ("ds4h-gateway demo  ", "bold"),
        (f"{gw.identity.did[:32]}…  ", "dim"),
        (f"control API {gw.url}  ", "cyan"),
        (
            "clock synchronised" if s["clock_synchronised"] else "clock NOT synchronised: times flagged",
            "yellow",
        ),
    )
    totals = Table(show_header=True, header_style="bold")
    for col in ("committed", "points/s", "duplicates", "lost", "quarantined", "simulator"):
        totals.add_column(col, justify="right")
    totals.add_row(
        f"{c['readings_committed']:,}",
        f"{rate:,.0f}",
        f"{c['batches_duplicate']:,}",
        f"{c['readings_lost']}",
        f"{sum(s.get('quarantine', {}).values()):,}",
        "running" if sim_running else "stopped",
    )
    sinks = Table(show_header=True, header_style="bold")
    for col in ("sink", "forwarded", "pending batches", "oldest (s)", "dead letters"):
        sinks.add_column(col, justify="right")
    for name, fwd in c["readings_forwarded"].items():
        o = s.get("outbox", {}).get(name, {})
        sinks.add_row(
            name,
            f"{fwd:,}",
            str(o.get("pending_batches", "…")),
            str(o.get("oldest_age_s", "…")),
            str(o.get("dead_letters", "…")),
        )
    devices = Table(show_header=True, header_style="bold")
    for col in ("device", "kind", "state", "points", "last commit (s ago)", "latest reading"):
        devices.add_column(col, justify="right" if col in ("points", "last commit (s ago)") else "left")
    for d in s["devices"]:
        devices.add_row(
            d["id"],
            d["kind"],
            "enabled" if d["enabled"] else "disabled",
            f"{d.get('points', 0):,}",
            str(d.get("last_commit_age_s", "—")),
            d.get("latest") or "",
        )
    return Group(head, totals, sinks, devices, Text("Ctrl-C stops", style="dim"))


def _mqtt_sim(broker: DemoBroker, state_dir: Path, device_ids: list[str]) -> list[str]:
    cmd = [
        sys.executable, "-m", "firmware_sim", "mqtt", "--broker", f"127.0.0.1:{broker.port}",
        "--device-ids", ",".join(device_ids), "--protocol", broker.protocol, "--ecg-fs", "130",
        "--settle-timeout", "10",
    ]  # fmt: skip
    if broker.tls:
        cmd += ["--pki-dir", str(state_dir / "pki")]
    return cmd


async def _demo(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    devices = await _sim_devices(args.patients)
    await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
    mqtt_ids = [f"g5-{i + 1:02d}" for i in range(max(0, args.mqtt_devices))]
    broker: DemoBroker | None = None
    if mqtt_ids:
        broker = await start_broker(
            state_dir, dict.fromkeys(mqtt_ids, "cardiac_monitor"), prefer_mosquitto=not args.embedded_broker
        )
    radio: DemoRadio | None = None
    try:
        if args.ble_devices > 0:
            if demo_radio.available():
                radio = await demo_radio.start(args.ble_devices)
                devices.update(radio.devices)
            else:
                log.warning("BLE devices skipped: bumble is not installed (pip install 'ds4h-gateway[sim]')")
        raw: dict[str, Any] = {
            "gateway": {"name": "ds4h-demo", "state_dir": str(state_dir), "shutdown_flush_s": 10},
            "devices": devices,
            "web": {"port": args.port},
        }
        if broker is not None:
            raw["mqtt"] = broker.mqtt_section()
        if radio is not None:
            raw["ble"] = radio.ble_section()
        config = parse_config(raw, "<demo defaults>")
        return await _run(args, state_dir, config, broker, mqtt_ids)
    finally:
        if radio is not None:
            await radio.stop()
        if broker is not None:
            await broker.stop()


async def _run(
    args: argparse.Namespace, state_dir: Path, config: Config, broker: DemoBroker | None, mqtt_ids: list[str]
) -> dict[str, Any]:
    gw = Gateway(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim: asyncio.subprocess.Process | None = None
    ble_state: dict[str, Any] = {}
    msim: asyncio.subprocess.Process | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            gw_task = tg.create_task(gw.run(install_signal_handlers=False))
            async with asyncio.timeout(30):
                await gw.ready.wait()
            cmd = [
                sys.executable, "-m", "firmware_sim", "http", "--url", gw.url,
                "--token-file", str(state_dir / "control.token"), "--patients", str(args.patients),
                "--speed", str(args.speed),
            ]  # fmt: skip
            sim = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
            if broker is not None:
                msim = await asyncio.create_subprocess_exec(
                    *_mqtt_sim(broker, state_dir, mqtt_ids),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            if not args.json:
                print(f"control API: {gw.url}  (metrics: {gw.url}/metrics, token: {state_dir / 'control.token'})")
                if gw.ble is not None:
                    print(
                        f"BLE: {len(gw.ble.slots)} simulated devices on a virtual radio ({config.ble.bumble_transport})"
                    )
                if broker is not None:
                    tls = "mutual TLS, MQTT v5" if broker.tls else "plain MQTT 3.1.1 on loopback"
                    print(
                        f"MQTT broker: {broker.kind} on 127.0.0.1:{broker.port} ({tls}), devices {', '.join(mqtt_ids)}"
                    )
            deadline = None if args.duration is None else loop.time() + args.duration
            await _watch(gw, sim, stop, deadline, live=not args.json)
            if gw.ble is not None:
                ble_state = gw.ble.stats()["devices"]
            for p in (sim, msim):
                if p is not None and p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            for p in (sim, msim):
                if p is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(15):
                            await p.wait()
            gw.request_stop()
            await gw_task
    finally:
        for p in (sim, msim):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    c = gw.counters()
    activity = gw.committer.activity.snapshot()
    return {
        "did": gw.identity.did,
        "state_dir": str(state_dir),
        "readings_committed": c["readings_committed"],
        "readings_forwarded": sum(c["readings_forwarded"].values()),
        "readings_forwarded_by_sink": c["readings_forwarded"],
        "readings_lost": c["readings_lost"],
        "batches_committed": c["batches_committed"],
        "batches_duplicate": c["batches_duplicate"],
        "simulator_exit": sim.returncode if sim else None,
        "mqtt": None
        if broker is None or gw.mqtt is None
        else {
            "broker": broker.kind,
            "port": broker.port,
            "devices": mqtt_ids,
            "messages_committed": gw.mqtt_stats()["messages"]["committed"],
            "simulator_exit": msim.returncode if msim else None,
        },
        "ble": None
        if gw.ble is None
        else {
            "devices": sorted(ble_state),
            "connected_at_end": sum(1 for d in ble_state.values() if d["connected"]),
            "points_committed": sum(int(activity.get(i, {}).get("points", 0)) for i in ble_state),
        },
    }


async def _watch(
    gw: Gateway, sim: asyncio.subprocess.Process, stop: asyncio.Event, deadline: float | None, live: bool
) -> None:
    loop = asyncio.get_running_loop()
    last_n, last_t = 0, time.monotonic()
    rate = 0.0
    ctx: contextlib.AbstractContextManager[Any] = (
        Live(_view(gw, 0, True), refresh_per_second=4, transient=False) if live else contextlib.nullcontext()
    )
    with ctx as view:
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            now = time.monotonic()
            n = gw.counters()["readings_committed"]
            rate = (n - last_n) / max(1e-6, now - last_t)
            last_n, last_t = n, now
            if view is not None:
                view.update(_view(gw, rate, sim.returncode is None))


def run_demo(args: argparse.Namespace) -> int:
    if args.state_dir is not None:
        summary = asyncio.run(_demo(args, args.state_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="ds4h-demo-") as tmp:
            summary = asyncio.run(_demo(args, Path(tmp)))
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"committed {summary['readings_committed']:,} points, forwarded {summary['readings_forwarded']:,}, "
            f"lost {summary['readings_lost']}"
        )
    return 0 if summary["readings_lost"] == 0 else 1
