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
from gateway.logformat import setup_logging

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
    cfg = load_config(args.config)
    _open_state_cipher(cfg)
    return cfg.gateway.state_dir


def _open_state_cipher(cfg: Any) -> None:
    """With ``--config``: the state encryption key from its ``[encryption]`` source (with ``--state-dir``
    the state directory's ``encryption.json`` names the source)."""
    from gateway.state.statekey import open_cipher

    if cfg.gateway.state_dir.is_dir():
        open_cipher(cfg.gateway.state_dir, cfg.crypto)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --- commands ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.pipeline import Gateway

    config = load_config(args.config)
    setup_logging(config.gateway.log_format, logging.DEBUG if args.verbose else config.gateway.log_level)

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
                    if d.revoked:
                        state = "REVOKED"
                    signed = " signed" if d.require_signature else ""
                    print(f"{d.id:24} {d.kind:16} {state:10}{signed} {idents}")
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
                require_signature=args.require_signature,
            )
            print(f"added {d.id} ({d.kind})" + (", signatures required" if d.require_signature else ""))
        elif args.devices_cmd == "disable":
            reg.set_enabled(args.id, False, args.note or "")
            print(f"disabled {args.id}: its data is quarantined from now on")
        elif args.devices_cmd == "enable":
            reg.set_enabled(args.id, True)
            print(f"enabled {args.id}")
    finally:
        reg.close()
    return 0


def _print_outbox_stats(store: Any, state_dir: Path) -> None:
    from gateway.sinks.local import open_history
    from gateway.state.db import used_bytes

    hist = open_history(state_dir)
    try:
        history_bytes = used_bytes(hist)
    finally:
        hist.close()
    sinks = {s: store.sink_summary(s) for s in store.sinks()}
    _print(
        {
            "sinks": sinks,
            "quarantine": store.quarantine_counts(),
            "totals": store.totals(),
            "disk": {"outbox_bytes": used_bytes(store.conn), "history_bytes": history_bytes},
        }
    )


def _watch_backlog(store: Any, interval_s: float, timeout_s: float | None) -> bool:
    """``outbox stats --watch``: follow the sinks' backlog until every sink has every batch (True) or
    ``timeout_s`` passes (False). The bar counts batch deliveries: the backlog at start plus what is
    committed meanwhile, once per sink."""
    import time

    from gateway.progress import progress

    def last_id() -> int:
        return int(store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM batches").fetchone()[0])

    sinks = store.sinks()
    first_id = last_id()
    at_start = sum(store.pending_stats(s)[0] for s in sinks)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with progress("backlog", at_start, unit="batches") as bar:
        while True:
            pending = {s: store.pending_stats(s) for s in sinks}
            total = at_start + (last_id() - first_id) * len(sinks)
            left = sum(depth for depth, _ in pending.values())
            status = ", ".join(f"{s} {depth} pending (oldest {age:.0f} s)" for s, (depth, age) in pending.items())
            bar.update(completed=total - left, total=total, status=status)
            if left == 0:
                bar.update(status="every sink has every batch")
                return True
            if deadline is not None and time.monotonic() >= deadline:
                bar.update(status=f"{status}; gave up after {timeout_s:g} s")
                return False
            time.sleep(interval_s)


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.outbox.store import OutboxStore, open_outbox

    state_dir = _state_dir(args)
    conn = open_outbox(state_dir)
    store = OutboxStore(conn)
    try:
        if args.outbox_cmd == "stats":
            drained = not args.watch or _watch_backlog(store, args.interval, args.timeout)
            _print_outbox_stats(store, state_dir)
            return 0 if drained else 1
        if args.outbox_cmd == "dead-letters":
            _print(store.dead_letters(args.sink))
        elif args.outbox_cmd == "redrive":
            n = store.redrive(args.sink)
            print(f"{n} dead letter(s) released for re-delivery")
    finally:
        conn.close()
    return 0


def _key_args(args: argparse.Namespace, *, create_dir: bool = False) -> tuple[Path, str | None]:
    """State directory and, with ``--config``, the systemd credential the key comes from."""
    from gateway.config import load_config

    cfg = None
    if getattr(args, "config", None) is not None:
        cfg = load_config(args.config)
        _open_state_cipher(cfg)
        state_dir, credential = cfg.gateway.state_dir, cfg.provenance.key_credential
    elif create_dir and args.state_dir is not None:
        state_dir, credential = Path(args.state_dir), None
    else:
        return _state_dir(args), None
    if create_dir:
        from gateway.state.files import ensure_state_dir

        ensure_state_dir(state_dir)
        if cfg is not None:
            _open_state_cipher(cfg)
    elif not state_dir.is_dir():
        raise GatewayError(f"state directory {state_dir} does not exist")
    return state_dir, credential


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now_ns: int) -> int:
    """ns since the epoch of ``now``, a time back from now (``1d`` or ``-1d``, ``6h``, ``30m``, ``90s``, ``2w``) or an
    ISO 8601 time (``2026-12-01``, ``2026-12-01T08:00:00Z``, ``…+01:00``; without an offset: UTC)."""
    import re
    from datetime import UTC, datetime

    t = text.strip()
    if t == "now":
        return now_ns
    m = re.fullmatch(r"-?(\d+(?:\.\d+)?)([smhdw])", t)
    if m:
        return now_ns - int(float(m.group(1)) * _UNITS_S[m.group(2)] * 1_000_000_000)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise GatewayError(
            f"time {text!r}: use ISO 8601 (2026-12-01T08:00Z) or a time back from now like 1d, 6h, 30m"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _key_source(state_dir: Path, credential: str | None) -> dict[str, str]:
    if credential is not None:
        return {"key_credential": credential}
    return {"key_file": str(state_dir / "gateway.key")}


def cmd_keys_init(args: argparse.Namespace) -> int:
    from gateway.provenance.keyring import key_path, load_gateway_keys

    state_dir, credential = _key_args(args, create_dir=True)
    existed = credential is not None or key_path(state_dir, None).exists()
    keys = load_gateway_keys(state_dir, credential, create=True)
    _print(
        {
            "did": keys.identity.did,
            "created": not existed,
            "key_records": len(keys.history.records),
            **_key_source(state_dir, credential),
        }
    )
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from gateway.provenance.didkey import public_from_did_key
    from gateway.provenance.keyring import load_gateway_keys, read_keys_public

    state_dir, credential = _key_args(args)
    has_outbox = (state_dir / "outbox.db").exists()
    history = read_keys_public(state_dir) if has_outbox else None
    if history is None or not history.records:
        if credential is None and not (state_dir / "gateway.key").exists():
            raise GatewayError(f"{state_dir} holds no gateway key yet (it is created on the first run or by keys init)")
        history = load_gateway_keys(state_dir, credential, create=False).history
    current = history.current
    assert current is not None
    out: dict[str, Any] = {
        "did": current.did,
        "public_key_hex": public_from_did_key(current.did).hex(),
        "key_records": len(history.records),
        "signs_from_envelope": current.from_n,
        **_key_source(state_dir, credential),
    }
    if args.all:
        out["history"] = [
            {
                "record": r.k,
                "did": r.did,
                "created": _iso(r.created_ns),
                "retired": _iso(history.retired_ns(r)),
                "from_envelope": r.from_n,
                "until_envelope": history.until_n(r),
                "announced_by": {"record": r.k, "signed_by": r.signer_did, "hash": r.hash.hex()},
            }
            for r in history.records
        ]
    _print(out)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from gateway.provenance.keyring import rotate

    state_dir, credential = _key_args(args)
    r = rotate(state_dir, credential, new_key_out=args.new_key_out)
    print(f"rotated the gateway key: {r.old_did} → {r.new_did}")
    print(f"key record {r.record.k} (signed by the old key) announces it; it signs from envelope {r.record.from_n}")
    if credential is None:
        print(f"new key: {r.new_key_path} (0600); the old private key is deleted, its public key stays in the history")
    else:
        print(
            f"new key written to {r.new_key_path} (0600): provision it as the systemd credential {credential!r}, "
            "delete the file, then start the gateway (docs/provenance.md, key rotation)"
        )
    print(
        "the gateway has a new identity: re-request its dataspace credential for the new did "
        "(`ds4h-gateway dataspace credential request`, the dataspace release) and tell verifiers the new did"
    )
    return 0


def _held_envelopes(state_dir: Path, first: int = 1, last: int | None = None) -> list[bytes]:
    from gateway.outbox.store import OutboxStore, open_outbox

    conn = open_outbox(state_dir, readonly=True)
    try:
        return OutboxStore(conn).envelopes(first, last)
    finally:
        conn.close()


def _verify_report_json(report: Any, source: str, did: str | None) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "source": source,
        "did": did,
        "envelopes": report.envelopes,
        "first": report.first_number,
        "last": report.last_number,
        "keys": report.key_dids,
        "problems": report.problems,
    }


def cmd_provenance_verify(args: argparse.Namespace) -> int:
    from gateway.provenance.chain import verify_chain
    from gateway.provenance.export import read_export
    from gateway.provenance.verify import is_layout_with_history, verify_export

    if args.file is not None:
        if is_layout_with_history(args.file):
            report = verify_export(args.file, args.did)
            _print(_verify_report_json(report, str(args.file), args.did))
            return 0 if report.ok else 1
        did = args.did
        chain = verify_chain(read_export(args.file), expected_did=did)
        source, keys = str(args.file), [did] if did else []
    else:
        from gateway.provenance.keyring import read_keys_public

        state_dir = _state_dir(args)
        history = read_keys_public(state_dir)
        did = args.did or (history.current.did if history.current else None)
        keys = history.dids
        problems_before: list[str] = []
        if args.did is not None and history.records and args.did not in keys:
            problems_before.append(f"--did {args.did} is not a key of this gateway's key history")
        lookup: Any = history.signer_for if history.records else did
        chain = verify_chain(_held_envelopes(state_dir), expected_did=lookup)
        chain.problems[:0] = problems_before
        chain.ok = not chain.problems
        source = str(state_dir)
    _print(
        {
            "ok": chain.ok,
            "source": source,
            "did": did,
            "envelopes": chain.count,
            "first": chain.first_number,
            "last": chain.last_number,
            "keys": keys,
            "problems": chain.problems,
        }
    )
    return 0 if chain.ok else 1


def _export(
    args: argparse.Namespace, since_ns: int | None, until_ns: int | None, numbers: tuple[int, int | None] | None
) -> int:
    import time

    from gateway.outbox.store import OutboxStore, open_outbox
    from gateway.progress import progress
    from gateway.provenance.export import write_export_file
    from gateway.provenance.keyring import load_gateway_keys

    state_dir, credential = _key_args(args)
    keys = load_gateway_keys(state_dir, credential, create=False)  # the trailer is signed by the current key
    conn = open_outbox(state_dir, readonly=True)
    try:
        store = OutboxStore(conn)
        if numbers is not None:
            window: tuple[int, int] | None = (numbers[0], numbers[1] if numbers[1] is not None else 1 << 62)
        else:
            window = store.envelope_window(since_ns, until_ns)
        total = (
            conn.execute("SELECT COUNT(*) FROM envelopes WHERE n BETWEEN ? AND ?", window).fetchone()[0]
            if window
            else 0
        )
        with progress("export", total, unit="envelopes") as bar:
            envelopes = bar.track(store.iter_envelopes(*window)) if window else iter(())
            t = write_export_file(
                args.out, keys.identity, keys.history, envelopes, since_ns=since_ns, until_ns=until_ns,
                created_ns=time.time_ns(),
            )  # fmt: skip
    finally:
        conn.close()
    span = f" ({t.first}…{t.last})" if t.count else ""
    print(f"exported {t.count} envelope(s){span} with {t.key_records} key record(s) and a signed trailer to {args.out}")
    return 0


def cmd_provenance_export(args: argparse.Namespace) -> int:
    return _export(args, None, None, (args.first, args.last))


def cmd_outbox_export(args: argparse.Namespace) -> int:
    import time

    now = time.time_ns()
    since = parse_time(args.since, now)
    until = parse_time(args.until, now) if args.until is not None else None
    if until is not None and until < since:
        raise GatewayError(f"--until {args.until} is before --since {args.since}")
    return _export(args, since, until, None)


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    from gateway.provenance.verify import verify_bundle_file

    report = verify_bundle_file(args.file, args.did)
    if args.json:
        _print({"ok": report.ok, "file": str(args.file), "problems": report.problems, "did": report.did,
                "observations": report.observations, "envelopes": report.envelopes})  # fmt: skip
        return 0 if report.ok else 1
    print(f"{'OK' if report.ok else 'FAILED'}: {args.file} (FHIR Bundle signed by {report.did})")
    for p in report.problems:
        print(f"  {p}")
    print(f"observations: {report.observations}, source envelopes: {len(report.envelopes)}")
    if not args.did:
        print("identity: NOT checked (pass --did with the gateway's did:key)")
    return 0 if report.ok else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.provenance.verify import verify_export

    if args.bundle:
        return cmd_verify_bundle(args)

    report = verify_export(args.file, args.did)
    if args.json:
        _print(
            {
                **_verify_report_json(report, str(args.file), args.did),
                "first_problem": report.first_problem,
                "batches": report.batches,
                "readings": report.readings,
                "waveform_samples": report.waveform_samples,
                "spectra": report.spectra,
                "devices": sorted(report.devices),
                "first_reading": _iso(report.first_reading_ns),
                "last_reading": _iso(report.last_reading_ns),
                "signers": {
                    d: {"first": s.first, "last": s.last, "envelopes": s.count} for d, s in report.signers.items()
                },
                "device_signed_batches": report.device_signed,
                "device_keys": {d: sorted(k) for d, k in sorted(report.device_keys.items())},
                "batches_by_device": {
                    d: {"device_signed": c[0], "unsigned": c[1]} for d, c in sorted(report.batches_by_device.items())
                },
            }
        )
        return 0 if report.ok else 1
    verdict = "OK" if report.ok else "FAILED"
    print(f"{verdict}: {args.file}")
    if not report.ok:
        print(f"first bad: {report.first_problem}")
    span = f" ({report.first_number}…{report.last_number})" if report.envelopes else ""
    print(f"envelopes: {report.envelopes}{span}, batches: {report.batches}")
    print(
        f"readings: {report.readings}, waveform samples: {report.waveform_samples}, spectra: {report.spectra}, "
        f"devices: {len(report.devices)} ({', '.join(sorted(report.devices))})"
    )
    print(f"first reading: {_iso(report.first_reading_ns)}, last reading: {_iso(report.last_reading_ns)}")
    print(f"key history: {len(report.key_dids)} key(s)")
    for did, s in report.signers.items():
        print(f"  signer {did}: envelopes {s.first}…{s.last} ({s.count})")
    if report.device_signed or report.device_keys:
        print(f"device signatures: {report.device_signed} batch(es) match what their device signed")
        for device, keys in sorted(report.device_keys.items()):
            signed, unsigned = report.batches_by_device.get(device, [0, 0])
            mixed = f", {unsigned} without a device signature" if unsigned else ""
            many = " (more than one key: compare with the provisioning records)" if len(keys) > 1 else ""
            print(f"  device {device}: {signed} signed{mixed}; key(s) {', '.join(sorted(keys))}{many}")
    if args.did:
        print(f"identity: checked against --did {args.did}")
    else:
        print("identity: NOT checked (pass --did with the gateway's did:key): the file is only self-consistent")
    if len(report.problems) > 1:
        print(f"all problems ({len(report.problems)}):")
        for p in report.problems[:50]:
            print(f"  {p}")
    return 0 if report.ok else 1


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
    add.add_argument(
        "--require-signature",
        action="store_true",
        help="refuse this device's unsigned MQTT frames (needs --public-key; docs/mqtt.md)",
    )
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
    st.add_argument(
        "--watch",
        action="store_true",
        help="first follow the backlog (a progress bar on a terminal, lines otherwise) until every sink has "
        "every batch; exit 1 if --timeout passes first",
    )
    st.add_argument("--interval", type=float, default=1.0, help="--watch: seconds between looks (default 1)")
    st.add_argument("--timeout", type=float, help="--watch: give up after this many seconds (default: never)")
    dl = ob_sub.add_parser("dead-letters", help="list dead letters", description="List dead letters.")
    _state_args(dl)
    dl.add_argument("--sink")
    rd = ob_sub.add_parser("redrive", help="release dead letters for another try", description="Re-drive dead letters.")
    _state_args(rd)
    rd.add_argument("--sink")
    ob.set_defaults(func=cmd_outbox)
    ex = ob_sub.add_parser(
        "export",
        help="export signed envelopes of a time window for third-party verification",
        description="Write the held envelopes (outbox and provenance archive) committed in [--since, --until] as a "
        "CBOR sequence: the key history, the envelopes, a trailer signed by the current key. Check it with "
        "`ds4h-gateway verify FILE --did DID` (docs/provenance.md).",
    )
    _state_args(ex)
    ex.add_argument(
        "--since",
        required=True,
        help="ISO 8601 time (e.g. 2026-12-01T08:00Z; no offset = UTC) or back from now: 1d, 6h, 30m (or --since=-1d)",
    )
    ex.add_argument("--until", help="same forms (default: now, everything held)")
    ex.add_argument("--out", type=Path, required=True, help="file to write (application/cbor-seq, mode 0600)")
    ex.set_defaults(func=cmd_outbox_export)

    keys = sub.add_parser("keys", help="the gateway identity", description="The gateway's signing identity.")
    keys_sub = keys.add_subparsers(dest="keys_cmd", required=True, metavar="SUBCOMMAND")
    init = keys_sub.add_parser(
        "init",
        help="create the gateway key and start its key history",
        description="Create the gateway key (0600) if there is none, and its key history. Idempotent.",
    )
    _state_args(init)
    init.set_defaults(func=cmd_keys_init)
    show = keys_sub.add_parser("show", help="show the gateway's did:key", description="Show the did:key.")
    _state_args(show)
    show.add_argument("--all", action="store_true", help="list the whole key history")
    show.set_defaults(func=cmd_keys_show)
    rot = keys_sub.add_parser(
        "rotate",
        help="replace the gateway key (the gateway must be stopped)",
        description="Make a new key; a key record signed by the old key announces it and the old private key is "
        "deleted. Older envelopes stay verifiable through the key history.",
    )
    _state_args(rot)
    rot.add_argument(
        "--new-key-out", type=Path, help="with a systemd-credential key: write the new key to this new file (0600)"
    )
    rot.set_defaults(func=cmd_keys_rotate)

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
        description="Write held envelopes by number (outbox and archive) with the key history and a signed "
        "trailer, like `outbox export`; verifiable with `ds4h-gateway verify` or `provenance verify --file`.",
    )
    _state_args(exp)
    exp.add_argument("--out", type=Path, required=True, help="file to write (application/cbor-seq)")
    exp.add_argument("--first", type=int, default=1, help="first envelope number")
    exp.add_argument("--last", type=int, help="last envelope number")
    exp.set_defaults(func=cmd_provenance_export)

    vf = sub.add_parser(
        "verify",
        help="verify an export file (signatures, key history, hash chain, trailer)",
        description="Verify an `outbox export` file with nothing but the gateway's did:key; exit 0 only if "
        "everything verifies. Prints a summary, or the first bad item.",
    )
    vf.add_argument("file", type=Path, help="the export file (or, with --bundle, a served/exported FHIR Bundle)")
    vf.add_argument(
        "--bundle", action="store_true", help="FILE is a FHIR Bundle of the research endpoint or `dataspace export`"
    )
    vf.add_argument("--did", help="the gateway's did:key you trust (any key of its history)")
    vf.add_argument("--json", action="store_true", help="print the report as JSON")
    vf.set_defaults(func=cmd_verify)

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
    from gateway.cli_encryption import add_encryption_commands

    add_encryption_commands(sub)
    from gateway.cli_dataspace import add_dataspace_commands

    add_dataspace_commands(sub)
    from gateway.cli_patients import add_patients_commands

    add_patients_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # one-shot tools and the demo log readable lines; `run` switches to [gateway] log_format once it has its config
    setup_logging("console", logging.DEBUG if args.verbose else logging.INFO)
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
