"""``ds4h-sim`` — simulated patients' devices for the gateway's local ingest API.

Commands:

- ``ds4h-sim devices --patients N [--json]`` — the fleet's devices as ``[devices.<id>]`` TOML tables
  (paste them into the gateway config) or JSON;
- ``ds4h-sim http --url URL --token-file FILE ...`` — run the fleet in real time and post its batches
  until ``--duration``, Ctrl-C or SIGTERM; then flush (bounded) and print a JSON summary;
- ``ds4h-sim flood --url URL --token-file FILE --batches N --readings-per-batch K ...`` — send N
  synthetic batches as fast as the gateway takes them and print a JSON summary;
- ``ds4h-sim ble --hub HOST:PORT --heart-rate N --glucose-meters N ...`` — simulated BLE peripherals
  attached to a hub's virtual radio (see ``docs/simulator-ble.md``);
- ``ds4h-sim fleet SCENARIO --hub HOST:PORT --broker HOST:PORT ...`` — run a scenario file's ward (BLE
  and 5G devices, scheduled faults) and report what each device sent (see ``docs/simulator-fleet.md``);
- ``ds4h-sim signal KIND --out FILE.csv [--seconds S --rate HZ --seed N …]`` — write one generated
  signal (ECG, RR intervals, heart rate …) as CSV (see ``docs/physiology.md``).

Exit status: 0 when every batch was acknowledged, 1 when some were left unacknowledged or the client
failed (e.g. 401), 2 on usage errors. The summary (one JSON line) goes to stdout, logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.argtypes import non_negative_int, positive_float, positive_int
from firmware_sim.fleet import (
    DEVICE_ID_RE,
    KIND_ECG,
    KIND_HEART_RATE,
    METRIC_ECG,
    METRIC_HEART_RATE,
    UNIT_PER_MIN,
    UNIT_UV,
    BatchMap,
    Fleet,
    new_boot_id,
    patient_prefix,
)
from firmware_sim.ingest_client import IngestClient
from firmware_sim.physiology import ECG_PERIOD_NS, Ecg

log = logging.getLogger("ds4h-sim")


# ---------------------------------------------------------------------- argument parsing


def _add_client_args(p: argparse.ArgumentParser, *, concurrency: int) -> None:
    p.add_argument(
        "--url",
        required=True,
        help="gateway control URL, e.g. http://127.0.0.1:8080 (/api/v1/ingest is appended if missing)",
    )
    p.add_argument("--token-file", required=True, type=Path, help="file holding the control API bearer token")
    p.add_argument("--ack-log", type=Path, help="append each acknowledged source key (device/boot/seq) here")
    p.add_argument("--batches-per-request", type=positive_int, default=200, help="batches per POST (default: 200)")
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=concurrency,
        help=f"requests in flight at once (default: {concurrency})",
    )
    p.add_argument("--rate", type=positive_float, help="cap on batches sent per second (default: no cap)")
    p.add_argument("--request-timeout", type=positive_float, default=30.0, help="seconds per request (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="physiology seed (default: 0)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-v, -vv)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds4h-sim",
        description="Simulated patients' devices (heart rate, CGM, glucose meter, ECG, pulse oximeter) "
        "posting to the ds4h gateway's local ingest API.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "devices",
        help="print the fleet's device ids and kinds (TOML for the gateway config, or JSON)",
        description="Print the fleet's devices as [devices.<id>] TOML tables with their kind, "
        "or as JSON. Ids depend only on --patients.",
    )
    p.add_argument("--patients", type=positive_int, default=1, help="number of patients (default: 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of TOML")

    p = sub.add_parser(
        "http",
        help="run the fleet in real time and post its batches to the gateway",
        description="Run the fleet (in real time, or with physiology sped up) and post every batch "
        "to POST /api/v1/ingest until --duration, Ctrl-C or SIGTERM; then flush for at most "
        "--flush-timeout seconds and print a one-line JSON summary.",
    )
    p.add_argument("--patients", type=positive_int, default=1, help="number of patients (default: 1)")
    p.add_argument("--duration", type=positive_float, help="seconds to run (default: until Ctrl-C/SIGTERM)")
    p.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        help="physiological time factor: meals, glucose and CGM/spot-check schedules run this much "
        "faster; 1/s signals and ECG stay real time (default: 1)",
    )
    p.add_argument("--cgm-interval", type=positive_float, default=300.0, help="CGM period, sim seconds (default: 300)")
    p.add_argument(
        "--spot-check-interval",
        type=positive_float,
        default=4 * 3600.0,
        help="mean glucose meter spot-check period, sim seconds (default: 14400)",
    )
    p.add_argument("--tick", type=positive_float, default=0.25, help="seconds between fleet ticks (default: 0.25)")
    p.add_argument(
        "--flush-timeout",
        type=float,
        default=10.0,
        help="seconds to keep delivering buffered batches after stopping (default: 10)",
    )
    _add_client_args(p, concurrency=1)

    p = sub.add_parser(
        "flood",
        help="send N synthetic batches as fast as the gateway accepts them",
        description="Send --batches synthetic batches (K heart_rate readings and optionally M ECG "
        "samples each) round-robin over the fleet's devices, as fast as the gateway accepts them. "
        "Batches go to pNN-hr, or to pNN-ecg when --ecg-samples > 0.",
    )
    p.add_argument("--batches", type=positive_int, required=True, help="number of batches to send")
    p.add_argument("--readings-per-batch", type=non_negative_int, required=True, help="heart_rate readings per batch")
    p.add_argument("--ecg-samples", type=non_negative_int, default=0, help="ECG samples per batch (default: 0)")
    p.add_argument(
        "--patients",
        type=positive_int,
        default=1,
        help="spread batches over this many patients (default: 1)",
    )
    p.add_argument("--max-time", type=positive_float, help="give up (exit 1) after this many seconds (default: never)")
    _add_client_args(p, concurrency=4)

    p = sub.add_parser(
        "mqtt",
        help="simulated 5G devices publishing SenML over MQTT (mutual TLS)",
        description="Run N simulated 5G devices that publish SenML frames to the broker with their own "
        "certificates, keep every frame until the gateway's ack watermark covers it, and resend what it "
        "does not cover. Real time by default (cardiac monitors: heart rate, SpO2, ECG; or CGMs); --flood "
        "sends a fixed number of frames as fast as possible. Prints a one-line JSON summary.",
    )
    p.add_argument("--broker", required=True, help="HOST:PORT of the broker")
    p.add_argument(
        "--pki-dir",
        type=Path,
        help="the site's pki directory (ca.crt, devices/<id>.crt|.key); without it, plain TCP (loopback only)",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--device-ids", help="comma-separated device ids")
    g.add_argument("--devices", type=positive_int, help="N devices named <prefix>01 …")
    p.add_argument("--prefix", default="g5-", help="device id prefix with --devices (default: g5-)")
    p.add_argument("--kind", choices=("cardiac", "cgm", "nig"), default="cardiac", help="what the devices measure")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="MQTT version (default: 5)")
    p.add_argument("--format", choices=("cbor", "json"), default="cbor", help="SenML encoding (default: cbor)")
    p.add_argument("--ecg-fs", type=positive_int, default=130, help="ECG sampling rate, Hz (default: 130)")
    p.add_argument("--duration", type=positive_float, help="real-time mode: seconds to run (default: until Ctrl-C)")
    p.add_argument("--flood", type=positive_int, help="send this many frames per device as fast as possible")
    p.add_argument("--flood-ecg-samples", type=non_negative_int, default=0, help="ECG samples per flood frame")
    p.add_argument("--reboot-after", type=non_negative_int, default=0, help="reboot each device every N frames")
    p.add_argument("--resend-after", type=positive_float, default=5.0, help="resend an unacked frame after S s")
    p.add_argument("--settle-timeout", type=float, default=60.0, help="seconds to wait for the last acks")
    p.add_argument("--ack-log", type=Path, help="append each acknowledged source key (device/boot/seq) here")
    p.add_argument("--seed", type=int, default=1, help="physiology seed (default: 1)")
    p.add_argument(
        "--sign",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sign frames (COSE_Sign1) with <pki-dir>/devices/<id>.signing.key; default: when that key exists",
    )

    from firmware_sim.ble.cli import add_parser as add_ble_parser

    add_ble_parser(sub)

    from firmware_sim.fleet_runner import add_parser as add_fleet_parser

    add_fleet_parser(sub)

    from firmware_sim.signal_cli import add_parser as add_signal_parser

    add_signal_parser(sub)
    return parser


# ---------------------------------------------------------------------- commands


def cmd_devices(args: argparse.Namespace) -> int:
    fleet = Fleet(args.patients)
    devices = fleet.devices()
    if args.json:
        print(json.dumps({"devices": {d: {"kind": k} for d, k in devices}}, indent=2))
        return 0
    lines = [f"# ds4h-sim fleet: {args.patients} patient(s), {len(devices)} devices", ""]
    for device_id, kind in devices:
        lines += [f"[devices.{device_id}]", f'kind = "{kind}"', ""]
    sys.stdout.write("\n".join(lines))
    return 0


def _read_token(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise SystemExit(f"ds4h-sim: token file {path} is empty")
    return token


def _client(args: argparse.Namespace, token: str) -> IngestClient:
    return IngestClient(
        args.url,
        token,
        batches_per_request=args.batches_per_request,
        request_timeout_s=args.request_timeout,
        ack_log=args.ack_log,
        rate=args.rate,
        concurrency=args.concurrency,
        max_pending=max(50_000, 4 * args.batches_per_request * args.concurrency),
    )


def _summary(mode: str, client: IngestClient, started: float, **extra: Any) -> dict[str, Any]:
    elapsed = time.monotonic() - started
    return {
        "mode": mode,
        **client.stats.as_dict(),
        "pending": client.pending,
        "elapsed_s": round(elapsed, 3),
        "acked_per_s": round(client.stats.acked / elapsed, 1) if elapsed > 0 else None,
        "error": None if client.error is None else str(client.error),
        **extra,
    }


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for s in sigs:
        loop.add_signal_handler(s, stop.set)
    try:
        yield
    finally:
        for s in sigs:
            loop.remove_signal_handler(s)


async def run_http(args: argparse.Namespace) -> int:
    token = _read_token(args.token_file)
    fleet = Fleet(
        args.patients,
        seed=args.seed,
        speed=args.speed,
        cgm_interval_s=args.cgm_interval,
        spot_check_interval_s=args.spot_check_interval,
    )
    stop = asyncio.Event()
    started = time.monotonic()
    deadline = None if args.duration is None else started + args.duration
    client = _client(args, token)
    flushed = False
    with _stop_on_signals(stop):
        async with client:
            fleet.tick(time.time_ns())
            while not stop.is_set() and client.error is None:
                wait = args.tick
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                batches = fleet.tick(time.time_ns())
                if batches:
                    submit = asyncio.ensure_future(client.submit(batches))
                    stopped = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({submit, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    stopped.cancel()
                    if not submit.done():  # buffer full and asked to stop: stop producing
                        submit.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await submit
            log.info("stopping; flushing %d pending batches", client.pending)
            flushed = await client.flush(max(args.flush_timeout, 0.0))
            summary = _summary("http", client, started, patients=args.patients, devices=len(fleet.devices()))
    print(json.dumps(summary), flush=True)
    return 0 if flushed else 1


def flood_batches(
    *,
    batches: int,
    readings_per_batch: int,
    ecg_samples: int,
    patients: int,
    seed: int,
    start_ns: int,
) -> Iterator[BatchMap]:
    """Synthetic batches, round-robin over patients; per device, stamps are strictly increasing,
    end before ``start_ns`` and never repeat (1 ms apart for readings, 250 Hz for ECG)."""
    kind = KIND_ECG if ecg_samples else KIND_HEART_RATE
    suffix = "ecg" if ecg_samples else "hr"
    ids = [f"{patient_prefix(i, patients)}-{suffix}" for i in range(patients)]
    boots = [new_boot_id() for _ in ids]
    per_device = -(-batches // patients)
    reading_step = 1_000_000
    r_base = start_ns - per_device * readings_per_batch * reading_step - 1_000_000_000
    e_base = start_ns - per_device * ecg_samples * ECG_PERIOD_NS - 1_000_000_000
    rng = np.random.default_rng(seed)
    ecgs = [Ecg(rng.spawn(1)[0]) for _ in ids]
    log.debug("flood: %d batches of %s over %s", batches, kind, ids)
    for n in range(batches):
        d, j = n % patients, n // patients
        b: BatchMap = {"device": ids[d], "key": [boots[d], j + 1]}
        if readings_per_batch:
            t0 = r_base + j * readings_per_batch * reading_step
            values = rng.integers(55, 110, size=readings_per_batch).tolist()
            b["readings"] = [
                {"metric": METRIC_HEART_RATE, "v": v, "u": UNIT_PER_MIN, "t": t0 + i * reading_step, "p": 0}
                for i, v in enumerate(values)
            ]
        if ecg_samples:
            b["waveforms"] = [
                {
                    "metric": METRIC_ECG,
                    "u": UNIT_UV,
                    "t0": e_base + j * ecg_samples * ECG_PERIOD_NS,
                    "period": ECG_PERIOD_NS,
                    "i32le": ecgs[d].frame(72.0, ecg_samples).astype("<i4").tobytes(),
                }
            ]
        yield b


async def run_flood(args: argparse.Namespace) -> int:
    token = _read_token(args.token_file)
    stop = asyncio.Event()
    started = time.monotonic()
    client = _client(args, token)
    gen = flood_batches(
        batches=args.batches,
        readings_per_batch=args.readings_per_batch,
        ecg_samples=args.ecg_samples,
        patients=args.patients,
        seed=args.seed,
        start_ns=time.time_ns(),
    )

    async def produce() -> bool:
        chunk: list[BatchMap] = []
        for b in gen:
            chunk.append(b)
            if len(chunk) >= 1000:
                await client.submit(chunk)
                chunk = []
        await client.submit(chunk)
        return await client.flush()

    ok = False
    with _stop_on_signals(stop):
        async with client:
            work = asyncio.ensure_future(produce())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({work, stopped}, timeout=args.max_time, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if work.done():
                ok = work.result() if work.exception() is None else False
            else:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            summary = _summary(
                "flood",
                client,
                started,
                batches=args.batches,
                readings_per_batch=args.readings_per_batch,
                ecg_samples=args.ecg_samples,
                readings_acked=client.stats.acked * args.readings_per_batch,
                samples_acked=client.stats.acked * args.ecg_samples,
            )
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1


def run_mqtt(args: argparse.Namespace) -> int:
    import threading

    from paho.mqtt.enums import MQTTProtocolVersion

    from firmware_sim.mqtt_fleet import FleetOptions, MqttFleet
    from firmware_sim.senml import CBOR, JSON

    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"ds4h-sim: --broker must be HOST:PORT, not {args.broker!r}")
    if args.device_ids:
        ids = [d.strip() for d in args.device_ids.split(",") if d.strip()]
    else:
        ids = [f"{args.prefix}{i + 1:02d}" for i in range(args.devices)]
    for d in ids:
        if not DEVICE_ID_RE.fullmatch(d):
            raise SystemExit(f"ds4h-sim: {d!r} is not a canonical device id")
    opts = FleetOptions(
        host=host,
        port=int(port),
        pki_dir=args.pki_dir,
        device_ids=ids,
        kind=args.kind,
        protocol=MQTTProtocolVersion.MQTTv5 if args.protocol == "5" else MQTTProtocolVersion.MQTTv311,
        content_type=CBOR if args.format == "cbor" else JSON,
        ack_log=args.ack_log,
        ecg_fs=args.ecg_fs,
        seed=args.seed,
        resend_after_s=args.resend_after,
        reboot_after=args.reboot_after,
        sign=args.sign,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    fleet = MqttFleet(opts)
    try:
        fleet.start()
        if args.flood:
            fleet.run_flood(args.flood, args.flood_ecg_samples, stop)
        else:
            fleet.run_realtime(args.duration, stop)
        settled = fleet.settle(max(0.0, args.settle_timeout))
        print(json.dumps({**fleet.summary(), "settled": settled}), flush=True)
    finally:
        fleet.close()
    return 0 if settled else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(getattr(args, "verbose", 0), 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "devices":
            return cmd_devices(args)
        if args.command == "http":
            return asyncio.run(run_http(args))
        if args.command == "flood":
            return asyncio.run(run_flood(args))
        if args.command == "mqtt":
            return run_mqtt(args)
        if args.command == "ble":
            from firmware_sim.ble.cli import run as run_ble

            return asyncio.run(run_ble(args))
        if args.command == "fleet":
            from firmware_sim.fleet_runner import run as run_fleet

            return asyncio.run(run_fleet(args))
        if args.command == "signal":
            from firmware_sim.signal_cli import run as run_signal

            return run_signal(args)
    except BrokenPipeError:  # stdout closed early (e.g. piped into `head`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    raise AssertionError(args.command)
