"""``ds4h-gateway demo``: the gateway on embedded defaults, fed by simulated patients, with a live view.

The simulated devices run in their own processes and reach the gateway only over the wire: patients'
devices over the local ingest API (``python -m firmware_sim http``), and a small ward (gateway.demo_ward:
``python -m firmware_sim fleet demo-ward``) — BLE devices on a virtual radio (gateway.ble.demo_radio) and
5G devices over MQTT through a local broker (gateway.mqtt.demo_broker: mosquitto with mutual TLS when
installed, else an embedded broker), with a recurring fault schedule the live view makes visible. State
lives in a temporary directory unless ``--state-dir`` is given; the only sink is the local history.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway import demo_ward
from gateway.ble import demo_radio
from gateway.ble.demo_radio import DemoRadio
from gateway.config import Config, parse_config
from gateway.demo_ward import LinkTracker, Ward
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


def _link(s: dict[str, Any], links: LinkTracker, device_id: str, ward: Ward | None) -> Text:
    ble = s.get("ble", {}).get("devices", {}).get(device_id)
    if ble is not None:
        t = Text("BLE up", "green") if ble["connected"] else Text("BLE down", "bold red")
        if links.reconnects.get(device_id):
            t.append(f" ↻{links.reconnects[device_id]}", "yellow")
        if ble.get("failures"):
            t.append(f" ✗{ble['failures']}", "red")
        return t
    if ward is not None and device_id in ward.g5:
        state = s.get("mqtt", {}).get("device_status", {}).get(device_id, {}).get("state")
        return Text(f"5G {state or 'mqtt'}", "green" if state in (None, "online") else "yellow")
    return Text("http", "dim")


def _view(gw: Gateway, rate: float, sims: str, ward: Ward | None, links: LinkTracker) -> Group:
    s = gw.stats()
    c = s["counters"]
    head = Text.assemble(
        ("ds4h-gateway demo  ", "bold"),
        (f"{gw.identity.did[:32]}…  ", "dim"),
        (f"control API {gw.url}  ", "cyan"),
        (f"status page {gw.url}/status  " if gw.status_page is not None else "", "cyan"),
        (
            "clock synchronised" if s["clock_synchronised"] else "clock NOT synchronised: times flagged",
            "yellow",
        ),
    )
    quarantine: dict[str, int] = s.get("quarantine", {})
    totals = Table(show_header=True, header_style="bold")
    for col in ("committed", "points/s", "duplicates", "lost", "quarantined", "BLE drops", "simulators"):
        totals.add_column(col, justify="right")
    totals.add_row(
        f"{c['readings_committed']:,}",
        f"{rate:,.0f}",
        f"{c['batches_duplicate']:,}" + (f" (5G {s['mqtt']['messages']['duplicate']})" if "mqtt" in s else ""),
        f"{c['readings_lost']}",
        f"{sum(quarantine.values()):,}",
        f"{sum(links.drops.values())}",
        sims,
    )
    parts: list[Any] = [head, totals]
    if quarantine:
        parts.append(Text("quarantine by reason: " + " · ".join(f"{r} {n}" for r, n in quarantine.items()), "yellow"))
    if ward is not None:
        parts.append(Text.assemble((f"ward {ward.scenario}  ", "bold magenta"), (ward.progress or "starting…", "")))
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
    active = ward.active_faults() if ward is not None else {}
    devices = Table(show_header=True, header_style="bold")
    for col in ("device", "patient", "kind", "link", "fault now", "points", "last commit (s ago)", "latest reading"):
        devices.add_column(col, justify="right" if col in ("points", "last commit (s ago)") else "left")
    for d in s["devices"]:
        patient = ward.patient(d["id"]) if ward is not None else None
        devices.add_row(
            d["id"],
            "" if patient is None else str(patient),
            d["kind"] if d["enabled"] else f"{d['kind']} (disabled)",
            _link(s, links, d["id"], ward),
            Text(", ".join(active.get(d["id"], [])), "bold red"),
            f"{d.get('points', 0):,}",
            str(d.get("last_commit_age_s", "—")),
            d.get("latest") or "",
        )
    return Group(*parts, sinks, devices, Text("Ctrl-C stops", style="dim"))


async def _demo(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    devices = await _sim_devices(args.patients)
    await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
    ward: Ward | None = None
    if args.ward != "none":
        if demo_radio.available():
            ward = await demo_ward.list_ward(args.ward)
        else:
            log.warning("the ward is skipped: bumble is not installed (pip install 'ds4h-gateway[sim]')")
    broker: DemoBroker | None = None
    if ward is not None and ward.g5:
        broker = await start_broker(state_dir, ward.g5, prefer_mosquitto=not args.embedded_broker)
    radio: DemoRadio | None = None
    try:
        if ward is not None and ward.ble:
            radio = await demo_radio.start_hub()
            devices.update(ward.ble)
        raw: dict[str, Any] = {
            "gateway": {"name": "ds4h-demo", "state_dir": str(state_dir), "shutdown_flush_s": 10},
            "devices": devices,
            "web": {"port": args.port},
            # the demo keeps its throw-away state encrypted with a key beside it, and says so at start
            "encryption": {"insecure_key_on_disk": True},
            # the research path with its pseudonym key beside the data too (warned about), no research store:
            # the endpoint and `dataspace export` serve the consented patients' pseudonymised data
            "research": {"enabled": True, "insecure_key_on_disk": True},
        }
        if broker is not None:
            raw["mqtt"] = broker.mqtt_section()
        if radio is not None:
            raw["ble"] = radio.ble_section(store_interval_s=5.0)
        config = parse_config(raw, "<demo defaults>")
        return await _run(args, state_dir, config, broker, radio, ward)
    finally:
        if radio is not None:
            await radio.stop()
        if broker is not None:
            await broker.stop()


DEMO_CONSENTED = ("odd demo patients (p01, p03 …) and even ward patients (0, 2 …) have research consent;"
                  " the others have none")  # fmt: skip


def demo_patient(device_id: str, ward: Ward | None) -> tuple[str, bool] | None:
    """The simulated patient wearing ``device_id`` and whether that patient consented to research."""
    if device_id[:1] == "p" and device_id[1:3].isdigit() and device_id[3:4] == "-":
        n = int(device_id[1:3])
        return f"demo-patient-{n:02d}", n % 2 == 1
    w = ward.patient(device_id) if ward is not None else None
    if w is None:
        return None
    return f"ward-patient-{w}", w % 2 == 0


def bind_demo_patients(state_dir: Path, devices: list[str], ward: Ward | None) -> dict[str, list[str]]:
    """Bind the simulated patients to their devices and record research consent for some of them."""
    from gateway.dataspace.patients import ConsentDb, ConsentRecord

    since = time.time_ns() - 365 * 86400 * 10**9
    consented: dict[str, bool] = {}
    with ConsentDb.open(state_dir) as db:
        bound = {b.device for b in db.bindings()}
        for device_id in devices:
            who = demo_patient(device_id, ward)
            if who is None:
                continue
            consented[who[0]] = who[1]
            if device_id not in bound:
                db.bind(device_id, who[0], since)
        db.add_consents(
            ConsentRecord(pid, "permit", since, None, "active", "demo", f"demo:{pid}")
            for pid, ok in consented.items()
            if ok
        )
    return {
        "consented": sorted(p for p, ok in consented.items() if ok),
        "not_consented": sorted(p for p, ok in consented.items() if not ok),
    }


def status_url(gw: Gateway) -> str | None:
    """The status page with its login token (``?token=`` logs in once, then the page drops it from the address):
    the demo's state is throw-away, so it prints it, like a notebook server does. ``run`` never shows the token."""
    if gw.status_page is None or not gw.config.web.status.enabled:
        return None
    return f"{gw.url}/status?token={gw.status_page.token}"


def _patient_of(ward: Ward | None) -> Callable[[str], str | None]:
    """The demo's patient wearing a device, as bound for the dataspace (:func:`demo_patient`)."""

    def patient(device_id: str) -> str | None:
        who = demo_patient(device_id, ward)
        return None if who is None else who[0]

    return patient


def _announce(gw: Gateway, state_dir: Path, config: Config, broker: DemoBroker | None, ward: Ward | None) -> None:
    print(f"control API: {gw.url}  (metrics: {gw.url}/metrics, token: {state_dir / 'control.token'})")
    url = status_url(gw)
    if url is not None:
        print(f"status page: {url}")
    if ward is None:
        return
    print(f"ward: {ward.scenario} — {len(ward.ble)} BLE + {len(ward.g5)} 5G devices (ds4h-sim fleet {ward.scenario})")
    if gw.ble is not None:
        print(f"BLE: {len(ward.ble)} devices on a virtual radio ({config.ble.bumble_transport})")
    if broker is not None:
        tls = "mutual TLS, MQTT v5" if broker.tls else "plain MQTT 3.1.1 on loopback"
        print(f"MQTT broker: {broker.kind} on 127.0.0.1:{broker.port} ({tls}), devices {', '.join(ward.g5)}")
    plan = ward.fault_plan()
    if plan:
        print("faults to watch for (link / fault now / quarantine / duplicates in the live view):")
        for line in plan:
            print(f"  {line}")


async def _run(
    args: argparse.Namespace,
    state_dir: Path,
    config: Config,
    broker: DemoBroker | None,
    radio: DemoRadio | None,
    ward: Ward | None,
) -> dict[str, Any]:
    gw = Gateway(config)
    patients = bind_demo_patients(state_dir, [d.id for d in gw.registry.all()], ward)

    gw.live.patient_of = _patient_of(ward)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim: asyncio.subprocess.Process | None = None
    ble_state: dict[str, Any] = {}
    links = LinkTracker()
    quarantine: dict[str, int] = {}
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
            if ward is not None:
                await demo_ward.start(
                    ward,
                    demo_ward.fleet_cmd(
                        ward,
                        hub_port=radio.port if radio is not None else None,
                        broker_port=broker.port if broker is not None else None,
                        protocol=broker.protocol if broker is not None else "5",
                        pki_dir=state_dir / "pki" if broker is not None and broker.tls else None,
                    ),
                )
            if not args.json:
                _announce(gw, state_dir, config, broker, ward)
                print(
                    f"research: {DEMO_CONSENTED}; after the demo: ds4h-gateway dataspace export --state-dir {state_dir}"
                )
            deadline = None if args.duration is None else loop.time() + args.duration
            await _watch(gw, sim, ward, links, stop, deadline, live=not args.json)
            if gw.ble is not None:
                ble_state = gw.ble.stats()["devices"]
            if sim.returncode is None:
                sim.send_signal(signal.SIGTERM)
            if ward is not None:
                await demo_ward.stop(ward)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await sim.wait()
            quarantine = gw.stats().get("quarantine", {})
            gw.request_stop()
            await gw_task
    finally:
        if sim is not None and sim.returncode is None:
            sim.kill()
            await sim.wait()
        if ward is not None and ward.running():
            await demo_ward.stop(ward, timeout_s=0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    summary = _summary(gw, state_dir, sim, broker, ward, ble_state, links, quarantine)
    summary["research"] = {**patients, "batches": dict(gw.research.sink.decided) if gw.research else {}}
    return summary


def _summary(
    gw: Gateway,
    state_dir: Path,
    sim: asyncio.subprocess.Process | None,
    broker: DemoBroker | None,
    ward: Ward | None,
    ble_state: dict[str, Any],
    links: LinkTracker,
    quarantine: dict[str, int],
) -> dict[str, Any]:
    c = gw.counters()
    activity = gw.committer.activity.snapshot()
    mqtt = gw.mqtt_stats() if gw.mqtt is not None else None
    return {
        "did": gw.identity.did,
        "state_dir": str(state_dir),
        "readings_committed": c["readings_committed"],
        "readings_forwarded": min(c["readings_forwarded"].values()),  # to every sink
        "readings_forwarded_by_sink": c["readings_forwarded"],
        "readings_lost": c["readings_lost"],
        "batches_committed": c["batches_committed"],
        "batches_duplicate": c["batches_duplicate"],
        "simulator_exit": sim.returncode if sim else None,
        "mqtt": None
        if broker is None or mqtt is None or ward is None
        else {
            "broker": broker.kind,
            "port": broker.port,
            "devices": sorted(ward.g5),
            "messages_committed": mqtt["messages"]["committed"],
            "messages_duplicate": mqtt["messages"]["duplicate"],
            "points_committed": sum(int(activity.get(i, {}).get("points", 0)) for i in ward.g5),
            "simulator_exit": ward.exit_code,
        },
        "ble": None
        if gw.ble is None
        else {
            "devices": sorted(ble_state),
            "connected_at_end": sum(1 for d in ble_state.values() if d["connected"]),
            "points_committed": sum(int(activity.get(i, {}).get("points", 0)) for i in ble_state),
            "drops": dict(sorted(links.drops.items())),
            "reconnects": dict(sorted(links.reconnects.items())),
        },
        "ward": None
        if ward is None
        else {
            "scenario": ward.scenario,
            "devices": [d["id"] for d in ward.devices],
            "faults_fired": None if ward.summary is None else ward.summary.get("faults_fired"),
            "settled": None if ward.summary is None else ward.summary.get("settled"),
            "quarantine": quarantine,
            "simulator_exit": ward.exit_code,
            **({"simulator_errors": ward.errors} if ward.exit_code else {}),
        },
    }


def _sims(sim: asyncio.subprocess.Process, ward: Ward | None) -> str:
    out = "http " + ("running" if sim.returncode is None else "stopped")
    if ward is not None:
        out += ", ward " + ("running" if ward.running() else f"stopped ({ward.exit_code})")
    return out


async def _watch(
    gw: Gateway,
    sim: asyncio.subprocess.Process,
    ward: Ward | None,
    links: LinkTracker,
    stop: asyncio.Event,
    deadline: float | None,
    live: bool,
) -> None:
    loop = asyncio.get_running_loop()
    last_n, last_t = 0, time.monotonic()
    rate = 0.0
    ctx: contextlib.AbstractContextManager[Any] = (
        Live(_view(gw, 0, _sims(sim, ward), ward, links), refresh_per_second=4, transient=False)
        if live
        else contextlib.nullcontext()
    )
    with ctx as view:
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            if gw.ble is not None:
                links.update(gw.ble.stats()["devices"])
            now = time.monotonic()
            n = gw.counters()["readings_committed"]
            rate = (n - last_n) / max(1e-6, now - last_t)
            last_n, last_t = n, now
            if view is not None:
                view.update(_view(gw, rate, _sims(sim, ward), ward, links))


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
