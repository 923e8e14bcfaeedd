"""``ds4h-sim ble``: run simulated BLE peripherals attached to a hub's virtual radio.

Each device opens its own HCI transport ``tcp-client:HOST:PORT`` to the hub (which owns the bumble
``LocalLink`` and gives every connection its own controller). At start the devices are printed as
JSON lines (address, name, serial, profile …) so a gateway config can register them; then they
run until ``--duration``, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from firmware_sim.argtypes import non_negative_int, positive_float
from firmware_sim.ble.faults import FaultSpec
from firmware_sim.ble.identity import Profile

_COUNTS = (
    ("heart_rate", "--heart-rate", Profile.HEART_RATE),
    ("glucose_meters", "--glucose-meters", Profile.GLUCOSE_METER),
    ("cgm", "--cgm", Profile.CGM),
    ("bp", "--bp", Profile.BLOOD_PRESSURE),
    ("oximeters", "--oximeters", Profile.PULSE_OXIMETER),
    ("ecg", "--ecg", Profile.ECG),
)


def _fault(text: str) -> FaultSpec:
    try:
        return FaultSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ble",
        help="simulated BLE medical devices on a hub's virtual radio (bumble)",
        description="Run simulated BLE peripherals (heart-rate straps, glucose meters, CGMs, "
        "blood-pressure cuffs, pulse oximeters, ECG straps) attached to a hub over bumble's HCI "
        "TCP transport. Prints one JSON line per device, then runs until --duration, Ctrl-C or SIGTERM.",
    )
    p.add_argument("--hub", required=True, help="HOST:PORT of the hub's HCI TCP server")
    for dest, flag, profile in _COUNTS:
        p.add_argument(flag, dest=dest, type=non_negative_int, default=0, help=f"number of {profile.value} devices")
    p.add_argument("--seed", type=int, default=0, help="identity and physiology seed (default: 0)")
    p.add_argument(
        "--patients",
        type=non_negative_int,
        metavar="N",
        help="simulated patients behind the devices (device k of each profile observes patient k mod N, "
        "so a patient's strap, ECG, CGM … agree); default: every device its own patient",
    )
    p.add_argument("--records", type=non_negative_int, default=10, help="stored records per glucose meter / CGM")
    p.add_argument(
        "--hr-interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between heart-rate notifications of each strap (default: 1.0; each one still "
        "carries one second of physiology)",
    )
    p.add_argument("--no-cgm-crc", action="store_true", help="CGMs without E2E-CRC")
    p.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="KIND[=N][@TARGET]",
        help="arm a fault at start: disconnect-mid-racp=K, garbage=N, bad-crc=N, sequence-reset=N, "
        "hang, control-solution=N; TARGET = profile, name, serial or address (repeatable)",
    )
    p.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C/SIGTERM)")


async def run(args: argparse.Namespace) -> int:
    host, _, port = args.hub.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"ds4h-sim: --hub must be HOST:PORT, not {args.hub!r}")
    from firmware_sim.ble.fleet import FleetOptions, arm_faults, build_fleet
    from firmware_sim.ble.runner import BleSimulation

    counts = {profile: getattr(args, dest) for dest, _, profile in _COUNTS}
    peripherals = build_fleet(
        counts,
        FleetOptions(
            seed=args.seed,
            records=args.records,
            cgm_e2e_crc=not args.no_cgm_crc,
            hr_interval_s=args.hr_interval,
            patients=args.patients or None,
        ),
    )
    if not peripherals:
        raise SystemExit("ds4h-sim: no devices requested")
    arm_faults(peripherals, args.fault)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, stop.set)
    try:
        async with BleSimulation(peripherals, transport=f"tcp-client:{host}:{port}"):
            for p in peripherals:
                print(json.dumps(p.identity.as_dict()), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
    print(json.dumps({"stopped": True, "devices": len(peripherals)}), file=sys.stderr, flush=True)
    return 0
