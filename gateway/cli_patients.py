"""``ds4h-gateway patients bind|unbind|list`` and ``ds4h-gateway consent import|list|revoke`` (docs/consent.md).

They edit ``<state_dir>/consent.db`` directly (also while the gateway runs: the research sink and the endpoint
read it afresh for every batch and request, so a revocation takes effect at once).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gateway.cli import _iso, _print, _state_args, _state_dir, parse_time
from gateway.errors import GatewayError


def _db(args: argparse.Namespace, *, readonly: bool = False) -> Any:
    from gateway.dataspace.patients import ConsentDb

    return ConsentDb.open(_state_dir(args), readonly=readonly)


def _until(ns: int | None) -> str | None:
    return None if ns is None else _iso(ns)


def _from(ns: int) -> str | None:
    return None if ns <= -(1 << 62) else _iso(ns)


def _reforward(args: argparse.Namespace, db: Any, patient_ids: list[str], *, asked: bool = False) -> None:
    """Queue earlier batches the change made eligible for the research sink again (gateway/dataspace/reforward.py)."""
    from gateway.dataspace.reforward import describe, requeue_for_research

    done = requeue_for_research(_state_dir(args), db, patient_ids)
    line = describe(done)
    if line:
        print(line)
    elif asked:
        print(
            "research: the research sink has not run on this state directory"
            if done is None
            else "research: no earlier batch to forward again"
        )


def cmd_patients(args: argparse.Namespace) -> int:
    now = time.time_ns()
    if args.patients_cmd == "bind":
        since = parse_time(args.since, now) if args.since else now
        until = parse_time(args.until, now) if args.until else None
        with _db(args) as db:
            b = db.bind(args.device, args.patient, since, until)
            print(
                f"bound device {b.device} to the patient from {_iso(b.from_ns)}"
                + (f" until {_iso(until)}" if until else "")
            )
            if since < now:  # a binding that reaches back may cover readings the research sink judged unbound
                _reforward(args, db, [args.patient])
        return 0
    if args.patients_cmd == "unbind":
        at = parse_time(args.at, now) if args.at else now
        with _db(args) as db:
            n = db.unbind(args.device, at)
        if n == 0:
            raise GatewayError(f"device {args.device} has no open binding")
        print(f"device {args.device} unbound at {_iso(at)}")
        return 0
    with _db(args, readonly=True) as db:
        rows = [
            {
                "binding": b.id,
                "device": b.device,
                "patient": b.patient_id,
                "from": _iso(b.from_ns),
                "until": _until(b.until_ns),
            }
            for b in db.bindings()
        ]
    if args.json:
        _print(rows)
    else:
        for r in rows:
            print(f"{r['binding']:>5}  {r['device']:<24} {r['patient']:<24} {r['from']} … {r['until'] or 'open'}")
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    from gateway.dataspace.consent import load_fhir, load_opt_out

    if args.consent_cmd == "import":
        result = load_opt_out(args.file) if args.opt_out else load_fhir(args.file)
        with _db(args) as db:
            added, replaced = db.add_consents(result.records)
            print(f"{args.file}: {added} consent record(s) added, {replaced} replaced, {len(result.skipped)} skipped")
            for s in result.skipped:
                print(f"  skipped {s}")
            _reforward(args, db, [r.patient_id for r in result.records if r.decision == "permit"])
        return 0
    if args.consent_cmd == "reforward":
        with _db(args) as db:
            pids = [args.patient] if args.patient is not None else db.patient_ids()
            _reforward(args, db, pids, asked=True)
        return 0
    if args.consent_cmd == "audit":
        with _db(args, readonly=True) as db:
            rows = [
                {
                    "batch": b,
                    "envelope": n,
                    "device": d,
                    "first": _iso(f),
                    "last": _iso(la),
                    "decision": dec,
                    "reason": why,
                    "points_in": pin,
                    "points_out": pout,
                }
                for b, n, d, f, la, dec, why, pin, pout in db.decisions(args.device)
            ]
        if args.json:
            _print(rows)
        else:
            for r in rows:
                print(
                    f"{r['batch']:>8} env {r['envelope']:>7}  {r['device']:<20} {r['decision']:<13} {r['reason']:<22}"
                    f" {r['points_out']}/{r['points_in']}  {r['first']}"
                )
        return 0
    if args.consent_cmd == "revoke":
        if not args.id and args.patient is None:
            raise GatewayError("name consent record ids or --patient")
        with _db(args) as db:
            n = db.revoke(args.id, args.patient)
        if n == 0:
            raise GatewayError("no such consent record in force")
        print(f"{n} consent record(s) revoked: no export of research data they allowed from now on")
        return 0
    with _db(args, readonly=True) as db:
        rows = [
            {
                "id": c.id,
                "patient": c.patient_id,
                "purpose": c.purpose,
                "decision": c.decision,
                "from": _from(c.from_ns),
                "until": _until(c.until_ns),
                "status": c.status,
                "source": c.source,
                "ref": c.ref,
                "revoked": _until(c.revoked_ns),
                "counts": c.counts,
            }
            for c in db.consents(args.patient)
        ]
    if args.json:
        _print(rows)
    else:
        for r in rows:
            state = "revoked" if r["revoked"] else r["status"]
            print(
                f"{r['id']:>5}  {r['patient']:<24} {r['decision']:<6} {r['from'] or '−∞'} … {r['until'] or 'open'}"
                f"  {state:<16} {r['source']} {r['ref']}"
            )
    return 0


def add_patients_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pat = sub.add_parser(
        "patients",
        help="device ↔ patient bindings",
        description="Who wore which device when (docs/consent.md); stored encrypted in consent.db.",
    )
    pat_sub = pat.add_subparsers(dest="patients_cmd", required=True, metavar="SUBCOMMAND")
    bind = pat_sub.add_parser("bind", help="bind a device to a patient", description="Bind a device to a patient.")
    _state_args(bind)
    bind.add_argument("patient", help="the patient identifier (as in FHIR Consent.patient)")
    bind.add_argument("device", help="canonical device id")
    bind.add_argument("--from", dest="since", help="ISO 8601 or back from now (default: now)")
    bind.add_argument("--until", help="end of the binding (default: open)")
    unbind = pat_sub.add_parser("unbind", help="end a device's binding", description="End a device's open binding.")
    _state_args(unbind)
    unbind.add_argument("device")
    unbind.add_argument("--at", help="when it ended (default: now)")
    ls = pat_sub.add_parser("list", help="list bindings", description="List device bindings.")
    _state_args(ls)
    ls.add_argument("--json", action="store_true")
    pat.set_defaults(func=cmd_patients)

    con = sub.add_parser(
        "consent",
        help="research consent records",
        description="Consent per patient and purpose (docs/consent.md): FHIR R4 Consent import, opt-out lists.",
    )
    con_sub = con.add_subparsers(dest="consent_cmd", required=True, metavar="SUBCOMMAND")
    imp = con_sub.add_parser(
        "import",
        help="import FHIR Consent resources or an opt-out list",
        description="Import FHIR R4 Consent resources (a Consent, a Bundle, a JSON array or NDJSON), or with "
        "--opt-out a list of patient ids (one per line) that refused research.",
    )
    _state_args(imp)
    imp.add_argument("file", type=Path)
    imp.add_argument("--opt-out", action="store_true", help="FILE is an opt-out list")
    cls = con_sub.add_parser("list", help="list consent records", description="List consent records.")
    _state_args(cls)
    cls.add_argument("--patient")
    cls.add_argument("--json", action="store_true")
    aud = con_sub.add_parser(
        "audit",
        help="the research sink's decision per batch",
        description="The research sink's recorded decision per outbox batch: eligible, partial or not_eligible, "
        "the reason, points forwarded of points in, the batch's envelope number.",
    )
    _state_args(aud)
    aud.add_argument("--device")
    aud.add_argument("--json", action="store_true")
    ref = con_sub.add_parser(
        "reforward",
        help="queue earlier batches that consent now covers for the research sink again",
        description="Look for batches the research sink judged not (or not wholly) eligible that the current "
        "bindings and consents make eligible, and queue them for the research sink again. `consent import` and "
        "`patients bind --from <past>` do this by themselves.",
    )
    _state_args(ref)
    ref.add_argument("--patient", help="only this patient (default: every patient)")
    rev = con_sub.add_parser(
        "revoke",
        help="revoke consent records",
        description="Revoke consent records by id, or every permit of --patient: later exports no longer include "
        "what they allowed.",
    )
    _state_args(rev)
    rev.add_argument("id", nargs="*", type=int)
    rev.add_argument("--patient")
    con.set_defaults(func=cmd_consent)
