"""``ds4h-gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger("gateway")


def _state_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", type=Path, help="gateway config file (its gateway.state_dir is used)")
    g.add_argument("--state-dir", type=Path, help="a gateway's state directory (a demo's works too)")


def _state_dir(args: argparse.Namespace) -> Path:
    from gateway.config import load_config

    if args.state_dir is not None:
        if not args.state_dir.is_dir():
            raise GatewayError(f"state directory {args.state_dir} does not exist")
        return Path(args.state_dir)
    return load_config(args.config).gateway.state_dir


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --- commands ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.pipeline import Gateway

    config = load_config(args.config)
    if not args.verbose:
        logging.getLogger().setLevel(config.gateway.log_level)

    async def main() -> None:
        gw = Gateway(config)
        await gw.run()

    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def cmd_config_check(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    cfg = load_config(args.file)
    print(
        f"{args.file}: ok — state_dir={cfg.gateway.state_dir}, {len(cfg.devices)} device(s), "
        f"sinks: local{', influx' if cfg.sinks.influx else ''}"
    )
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from gateway.devices import DeviceRegistry, describe

    reg = DeviceRegistry.open(_state_dir(args))
    try:
        if args.devices_cmd == "list":
            devices = reg.all()
            if args.json:
                _print(describe(devices))
            else:
                for d in devices:
                    idents = " ".join(f"{k}={v}" for k, v in sorted(d.identities.items()))
                    state = "enabled" if d.enabled else f"DISABLED {d.note}".rstrip()
                    print(f"{d.id:24} {d.kind:16} {state:10} {idents}")
        elif args.devices_cmd == "add":
            d = reg.add(
                args.id,
                args.kind,
                identities={
                    "mqtt_cn": args.mqtt_cn,
                    "mqtt_username": args.mqtt_username,
                    "ble_address": args.ble_address,
                    "serial": args.serial,
                },
                public_key=args.public_key,
            )
            print(f"added {d.id} ({d.kind})")
        elif args.devices_cmd == "disable":
            reg.set_enabled(args.id, False, args.note or "")
            print(f"disabled {args.id}: its data is quarantined from now on")
        elif args.devices_cmd == "enable":
            reg.set_enabled(args.id, True)
            print(f"enabled {args.id}")
    finally:
        reg.close()
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.outbox.store import OutboxStore, open_outbox
    from gateway.sinks.local import open_history
    from gateway.state.db import used_bytes

    state_dir = _state_dir(args)
    conn = open_outbox(state_dir)
    store = OutboxStore(conn)
    try:
        if args.outbox_cmd == "stats":
            hist = open_history(state_dir)
            try:
                history_bytes = used_bytes(hist)
            finally:
                hist.close()
            sinks = {}
            for s in store.sinks():
                depth, age = store.pending_stats(s)
                sinks[s] = {
                    "pending_batches": depth,
                    "oldest_age_s": round(age, 3),
                    "dead_letters": len(store.dead_letters(s)),
                }
            _print(
                {
                    "sinks": sinks,
                    "quarantine": store.quarantine_counts(),
                    "totals": store.totals(),
                    "disk": {"outbox_bytes": used_bytes(conn), "history_bytes": history_bytes},
                }
            )
        elif args.outbox_cmd == "dead-letters":
            _print(store.dead_letters(args.sink))
        elif args.outbox_cmd == "redrive":
            n = store.redrive(args.sink)
            print(f"{n} dead letter(s) released for re-delivery")
    finally:
        conn.close()
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from gateway.provenance.identity import load_or_create

    state_dir = _state_dir(args)
    if not (state_dir / "gateway.key").exists():
        raise GatewayError(f"{state_dir} holds no gateway key yet (it is created on the first run)")
    ident = load_or_create(state_dir)
    _print(
        {
            "did": ident.did,
            "public_key_hex": ident.public_key_bytes.hex(),
            "key_file": str(state_dir / "gateway.key"),
        }
    )
    return 0


def _held_envelopes(state_dir: Path, first: int = 1, last: int | None = None) -> list[bytes]:
    from gateway.outbox.store import OutboxStore, open_outbox

    conn = open_outbox(state_dir, readonly=True)
    try:
        return OutboxStore(conn).envelopes(first, last)
    finally:
        conn.close()


def cmd_provenance_verify(args: argparse.Namespace) -> int:
    from gateway.provenance.chain import verify_chain
    from gateway.provenance.export import read_export

    if args.file is not None:
        did = args.did
        envelopes: Any = read_export(args.file)
        source = str(args.file)
    else:
        from gateway.provenance.identity import load_or_create

        state_dir = _state_dir(args)
        did = args.did or load_or_create(state_dir).did
        envelopes = _held_envelopes(state_dir)
        source = str(state_dir)
    report = verify_chain(envelopes, expected_did=did)
    _print(
        {
            "ok": report.ok,
            "source": source,
            "did": did,
            "envelopes": report.count,
            "first": report.first_number,
            "last": report.last_number,
            "problems": report.problems,
        }
    )
    return 0 if report.ok else 1


def cmd_provenance_export(args: argparse.Namespace) -> int:
    from gateway.provenance.export import write_export

    n = write_export(args.out, _held_envelopes(_state_dir(args), args.first, args.last))
    print(f"exported {n} envelope(s) to {args.out}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from drivers.catalog import CLOCK_NOTE, decode, parse_hex

    entries = decode(args.char, parse_hex(args.hex))
    _print(entries)
    if any(e.get("time") for e in entries):
        print(f"note: {CLOCK_NOTE}", file=sys.stderr)
    return 0


def cmd_ble(args: argparse.Namespace) -> int:
    from gateway.control_client import control_call

    answer = control_call(_state_dir(args), "POST", "/api/v1/ble/pair", {"window_s": args.window})
    print(f"BLE pairing window open for {answer['pairing_window_s']:g} s (LE Secure Connections only)")
    return 0


# --- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ds4h-gateway",
        description="Edge gateway for medical devices: lossless, signed, standards-coded ingest.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway", description="Run the gateway until SIGINT/SIGTERM.")
    run.add_argument("--config", type=Path, required=True, help="gateway config file (TOML)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo",
        help="run the gateway with simulated devices (no external services)",
        description="Run the gateway on embedded defaults (local sink) fed by simulated patients.",
    )
    demo.add_argument("--state-dir", type=Path, help="keep state here (default: a temporary directory)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--json", action="store_true", help="no live view; print one JSON summary at the end")
    demo.add_argument("--patients", type=int, default=3, help="simulated patients (default 3)")
    demo.add_argument("--speed", type=float, default=60.0, help="simulated-time speed-up for slow signals")
    demo.add_argument("--port", type=int, default=0, help="control API port (default: a free one)")
    demo.add_argument(
        "--ward",
        default="demo-ward",
        metavar="SCENARIO",
        help="a ds4h-sim fleet scenario run alongside (default demo-ward: 3 patients, BLE devices on a virtual "
        "radio, 5G devices over MQTT, recurring faults; 'none': no ward). 5G devices use a local mosquitto "
        "with mutual TLS when installed, else an embedded MQTT 3.1.1 broker on loopback",
    )
    demo.add_argument(
        "--embedded-broker", action="store_true", help="use the embedded broker even when mosquitto is installed"
    )
    demo.set_defaults(func=cmd_demo)

    cfg = sub.add_parser("config", help="configuration tools", description="Configuration tools.")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", required=True, metavar="SUBCOMMAND")
    chk = cfg_sub.add_parser("check", help="validate a config file", description="Validate a config file.")
    chk.add_argument("file", type=Path)
    chk.set_defaults(func=cmd_config_check)

    dev = sub.add_parser("devices", help="the device registry", description="List and edit the device registry.")
    dev_sub = dev.add_subparsers(dest="devices_cmd", required=True, metavar="SUBCOMMAND")
    ls = dev_sub.add_parser("list", help="list devices", description="List registered devices.")
    _state_args(ls)
    ls.add_argument("--json", action="store_true")
    add = dev_sub.add_parser("add", help="register a device", description="Register a device.")
    _state_args(add)
    add.add_argument("id", help="canonical device id: lowercase [a-z0-9][a-z0-9-]{0,63}")
    add.add_argument("--kind", required=True, help="device kind/profile, e.g. heart_rate, cgm, ecg")
    add.add_argument("--mqtt-cn", help="MQTT client certificate common name")
    add.add_argument("--mqtt-username", help="MQTT username")
    add.add_argument("--ble-address", help="Bluetooth address")
    add.add_argument("--serial", help="serial number")
    add.add_argument("--public-key", help="device signing key as did:key")
    for name, verb in (("disable", "disable"), ("enable", "enable")):
        sp = dev_sub.add_parser(name, help=f"{verb} a device", description=f"{verb.capitalize()} a device.")
        _state_args(sp)
        sp.add_argument("id")
        if name == "disable":
            sp.add_argument("--note", help="why (shown in `devices list`)")
    dev.set_defaults(func=cmd_devices)

    ble = sub.add_parser("ble", help="Bluetooth LE devices", description="Bluetooth LE tools (docs/ble.md).")
    ble_sub = ble.add_subparsers(dest="ble_cmd", required=True, metavar="SUBCOMMAND")
    pair = ble_sub.add_parser(
        "pair",
        help="open the pairing window on the running gateway",
        description="Let devices pair (LE Secure Connections only) for --window seconds.",
    )
    _state_args(pair)
    pair.add_argument("--window", type=float, default=120.0, help="seconds (default 120, at most 3600)")
    ble.set_defaults(func=cmd_ble)

    ob = sub.add_parser("outbox", help="inspect the outbox", description="Inspect the outbox.")
    ob_sub = ob.add_subparsers(dest="outbox_cmd", required=True, metavar="SUBCOMMAND")
    st = ob_sub.add_parser(
        "stats", help="pending per sink, dead letters, quarantine, disk", description="Outbox statistics."
    )
    _state_args(st)
    dl = ob_sub.add_parser("dead-letters", help="list dead letters", description="List dead letters.")
    _state_args(dl)
    dl.add_argument("--sink")
    rd = ob_sub.add_parser("redrive", help="release dead letters for another try", description="Re-drive dead letters.")
    _state_args(rd)
    rd.add_argument("--sink")
    ob.set_defaults(func=cmd_outbox)

    keys = sub.add_parser("keys", help="the gateway identity", description="The gateway's signing identity.")
    keys_sub = keys.add_subparsers(dest="keys_cmd", required=True, metavar="SUBCOMMAND")
    show = keys_sub.add_parser("show", help="show the gateway's did:key", description="Show the did:key.")
    _state_args(show)
    show.set_defaults(func=cmd_keys_show)

    prov = sub.add_parser("provenance", help="signed envelopes", description="Provenance archive tools.")
    prov_sub = prov.add_subparsers(dest="prov_cmd", required=True, metavar="SUBCOMMAND")
    ver = prov_sub.add_parser(
        "verify",
        help="verify the signatures and hash chain of the held envelopes",
        description="Verify every envelope in the outbox and archive against the gateway identity.",
    )
    _state_args(ver)
    ver.add_argument("--file", type=Path, help="verify an export file instead of a state directory")
    ver.add_argument("--did", help="the gateway's did:key to verify against (default: the state's own)")
    ver.set_defaults(func=cmd_provenance_verify)
    exp = prov_sub.add_parser(
        "export",
        help="export held envelopes as a CBOR sequence",
        description="Write the held envelopes (outbox and archive) to a file, verifiable with `verify --file`.",
    )
    _state_args(exp)
    exp.add_argument("--out", type=Path, required=True, help="file to write (application/cbor-seq)")
    exp.add_argument("--first", type=int, default=1, help="first envelope number")
    exp.add_argument("--last", type=int, help="last envelope number")
    exp.set_defaults(func=cmd_provenance_export)

    dec = sub.add_parser(
        "decode",
        help="decode one BLE notification to readings (JSON)",
        description="Decode one notification/indication/read value of a BLE characteristic with the gateway's "
        "own codecs and print its readings as JSON. Device time stamps are shown as sent (no clock correction, "
        "UTC offset 0).",
    )
    dec.add_argument("char", help="characteristic UUID: 16-bit like 2a37 or 0x2A37, or a full 128-bit UUID")
    dec.add_argument("hex", nargs="+", help="the value in hex; may be split over several arguments")
    dec.set_defaults(func=cmd_decode)

    from gateway.cli_pki import add_pki_commands  # here, not at the top: gateway.cli_pki imports this module

    add_pki_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except GatewayError as e:
        print(f"ds4h-gateway: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
