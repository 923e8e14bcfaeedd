"""``ds4h-gateway dataspace export``: the endpoint's answer, offline, for every consented patient (docs/consent.md).

Same selection (research-path data, consent re-checked now), same Observations and the same signed Provenance
as ``GET /dataspace/v1/observations``, in one Bundle (``--format fhir``) or as CSV (``--format csv``; its
signature goes to ``--out FILE`` + ``.sig``, or standard error, as base64 COSE_Sign1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.errors import GatewayError


def add_export_parser(dataspace_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``export`` under the ``dataspace`` command group."""
    from gateway.cli import _state_args

    ex = dataspace_sub.add_parser(
        "export",
        help="export consented, pseudonymised observations (FHIR Bundle or CSV), signed",
        description="Write the research observations of [--from, --to] — eligible now, pseudonymised — as one "
        "signed FHIR R4 Bundle (or CSV), like the endpoint GET /dataspace/v1/observations (docs/consent.md).",
    )
    _state_args(ex)
    ex.add_argument("--from", dest="since", help="FHIR dateTime / ISO 8601, or back from now: 1d, 6h (default: all)")
    ex.add_argument("--to", dest="until", help="same forms (default: no end)")
    ex.add_argument(
        "--kind",
        action="append",
        default=[],
        help="a kind (repeatable; default every kind but the research sensor's, which are asked for by name)",
    )
    ex.add_argument("--patient", help="one pseudonym only (default: every bound patient)")
    ex.add_argument("--format", choices=("fhir", "csv"), default="fhir")
    ex.add_argument("--out", type=Path, help="file to write (mode 0600; default standard output)")
    ex.set_defaults(func=run_export)
    return ex


def run_export(args: argparse.Namespace) -> int:
    from gateway.cli import _state_dir, parse_time
    from gateway.dataspace.bundlesig import json_body, sign_bundle, sign_csv
    from gateway.dataspace.fhir import bundle, iso, to_csv
    from gateway.dataspace.observations import Query, all_pseudonyms, select
    from gateway.dataspace.patients import FOREVER, ConsentDb
    from gateway.dataspace.pseudonym import open_pseudonymiser
    from gateway.provenance.keyring import load_gateway_keys
    from gateway.state.files import write_secret

    state_dir = _state_dir(args)
    now = time.time_ns()
    since = parse_time(args.since, now) if args.since else 0
    until = parse_time(args.until, now) if args.until else FOREVER
    if until < since:
        raise GatewayError("--to is before --from")
    research = None
    credential = None
    if getattr(args, "config", None) is not None:
        from gateway.config import load_config

        cfg = load_config(args.config)
        research, credential = cfg.research, cfg.provenance.key_credential
    pseudo = open_pseudonymiser(state_dir, research) if research is not None and research.enabled else None
    if pseudo is None:
        pseudo = open_pseudonymiser(state_dir)
    keys = load_gateway_keys(state_dir, credential, create=False)
    identity = keys.identity
    items = []
    Query("", kinds=tuple(args.kind)).check_format(args.format)
    with ConsentDb.open(state_dir, readonly=True) as db:
        names = [args.patient] if args.patient else list(all_pseudonyms(db, pseudo))
        for p in names:
            items += select(state_dir, db, pseudo, Query(p, since, min(until, FOREVER), tuple(args.kind)))[0]
    items.sort(key=lambda i: (i.t_ns, i.pseudonym, i.metric))
    sig_text = ""
    if args.format == "csv":
        body = to_csv(items).encode()
        sig_text = sign_csv(body, [i.envelope_n for i in items], identity.did, identity.sign)
    else:
        b = bundle(
            items, total=len(items), self_url=f"urn:ds4h:export:{since}-{until}", next_url=None, timestamp_ns=now
        )
        sign_bundle(b, [i.envelope_n for i in items], identity.did, identity.sign, iso(now))
        body = json_body(b)
    if args.out is None:
        sys.stdout.buffer.write(body + (b"\n" if args.format == "fhir" else b""))
        sys.stdout.flush()
        if sig_text:
            print(f"signature (COSE_Sign1, base64): {sig_text}", file=sys.stderr)
    else:
        write_secret(args.out, body)
        if sig_text:
            write_secret(args.out.with_name(args.out.name + ".sig"), sig_text.encode() + b"\n")
        print(f"wrote {len(items)} observation(s) of {len(names)} patient(s) to {args.out}", file=sys.stderr)
    return 0
