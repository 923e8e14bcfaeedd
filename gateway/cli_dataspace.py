"""``ds4h-gateway dataspace …``: provision the EDC offer, list what the connector holds, the gateway credential.

Exit status: 0 done; 1 the connector refused a request, or the credential is not usable (``show``);
2 configuration / usage / verification errors; 3 the connector refused the API key; 4 the connector
could not be reached (connection refused, DNS, TLS, timeout). See docs/dataspace.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.cli import _print, _state_args
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.dataspace.client import EdcClient

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4


# --- helpers -------------------------------------------------------------------------------------
def _config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The config (a file, or defaults and ``DS4H_*`` overrides with ``--state-dir``) and the state directory."""
    from gateway.config import load_config

    if args.state_dir is not None:
        if not args.state_dir.is_dir():
            raise GatewayError(f"state directory {args.state_dir} does not exist")
        return load_config(None, require_encryption=False), Path(args.state_dir)
    cfg = load_config(args.config)
    return cfg, cfg.gateway.state_dir


def current_did(state_dir: Path) -> str:
    """The gateway's current did:key (from its key history; no private key needed)."""
    from gateway.provenance.identity import KEY_FILE_NAME, load_key_file
    from gateway.provenance.keyring import read_keys_public

    if (state_dir / "outbox.db").exists():
        history = read_keys_public(state_dir)
        if history.current is not None:
            return history.current.did
    if (state_dir / KEY_FILE_NAME).exists():
        return load_key_file(state_dir / KEY_FILE_NAME).did
    raise GatewayError(f"{state_dir} holds no gateway key yet (it is created on the first run or by keys init)")


def _err(message: str) -> None:
    print(f"ds4h-gateway: {message}", file=sys.stderr)


def _with_connector(config: Config, fn: Callable[[EdcClient], Awaitable[T]]) -> T | int:
    """Run ``fn`` with a client of the configured connector; connector failures become exit codes."""
    from gateway.dataspace import ConnectorAuthError, ConnectorError, ConnectorUnreachableError
    from gateway.dataspace.client import EdcClient
    from gateway.dataspace.settings import api_key, management_url

    edc = config.dataspace.edc
    url, key = management_url(config), api_key(config)

    async def main() -> T:
        async with EdcClient(url, key, timeout_s=edc.timeout_s, verify_tls=edc.verify_tls, ca_file=edc.ca_file) as c:
            return await fn(c)

    try:
        return asyncio.run(main())
    except ConnectorAuthError as e:
        _err(str(e))
        return EXIT_AUTH
    except ConnectorUnreachableError as e:
        _err(str(e))
        return EXIT_UNREACHABLE
    except ConnectorError as e:
        _err(str(e))
        return EXIT_REFUSED


# --- provision / status --------------------------------------------------------------------------
def cmd_provision(args: argparse.Namespace) -> int:
    from gateway.dataspace.edc import DPV_HAS_PURPOSE, plan
    from gateway.dataspace.provision import Outcome, PolicyCheck, check_policy, provision
    from gateway.dataspace.settings import PLACEHOLDER_PUBLIC_URL, make_offer
    from gateway.progress import progress as progress_bar

    config, state_dir = _config(args)
    api = args.api or config.dataspace.edc.api_version
    public_url = config.dataspace.public_url
    if public_url is None and args.dry_run:
        public_url = PLACEHOLDER_PUBLIC_URL
        _err(f"note: [dataspace] public_url is not set; the dry run uses {PLACEHOLDER_PUBLIC_URL}")
    offer = make_offer(config, current_did(state_dir), public_url)
    resources = plan(offer, api)
    if args.dry_run:
        doc = {
            "api": api,
            "management_url": config.dataspace.edc.management_url,
            "requests": [r.create.as_dict() for r in resources],
            "on_409": [r.update.as_dict() for r in resources],
        }
        if args.json:
            _print(doc)
        else:
            print(f"dry run: nothing is sent (Management API {api}, X-Api-Key from [dataspace.edc] api_key_file)")
            for r in resources:
                print(f"{r.name}: {r.create.method} {r.create.path}; on 409: {r.update.method} {r.update.path}")
                print(json.dumps(r.create.body, indent=2, sort_keys=True))
        return 0
    out = sys.stderr if args.json else sys.stdout

    def progress(line: str) -> None:
        print(line, file=out, flush=True)

    async def run(client: EdcClient) -> tuple[list[Outcome], PolicyCheck]:
        progress(f"provisioning {len(resources)} resources in {client.url} (Management API {api})")
        # a bar on a terminal; otherwise the lines above and below are the progress
        with progress_bar("provision", len(resources) + 1, unit="steps", stream=out, plain_counts=False) as bar:
            outcomes: list[Outcome] = []
            for res in resources:
                outcomes.extend(await provision(client, [res], bar.log))
                bar.advance()
            bar.update(status="checking the purpose policy")
            check = await check_policy(client, api, offer.ids["policy"])
            bar.advance()
            bar.update(status="done")
        return outcomes, check

    result = _with_connector(config, run)
    if isinstance(result, int):
        return result
    outcomes, check = result
    if not check.valid:
        progress(
            f"WARNING: the connector does not accept the purpose policy as enforceable: {'; '.join(check.errors)}. "
            f"EDC drops a constraint whose left operand ({DPV_HAS_PURPOSE}) no extension binds, so the connector "
            "will NOT restrict the purpose; the gateway's own consent checks still apply. Bind it (deploy/edc/)."
        )
    if args.json:
        _print(
            {
                "api": api,
                "management_url": config.dataspace.edc.management_url,
                "resources": [o.as_dict() for o in outcomes],
                "purpose_policy": check.as_dict(),
            }
        )
    else:
        made = sum(o.action == "created" for o in outcomes)
        print(f"done: {made} created, {len(outcomes) - made} updated; the offer points at {offer.endpoint_url}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.dataspace.provision import connector_status
    from gateway.dataspace.settings import PLACEHOLDER_PUBLIC_URL, make_offer

    config, state_dir = _config(args)
    api = args.api or config.dataspace.edc.api_version
    offer = make_offer(config, current_did(state_dir), config.dataspace.public_url or PLACEHOLDER_PUBLIC_URL)
    result = _with_connector(config, lambda c: connector_status(c, api, offer.ids))
    if isinstance(result, int):
        return result
    if args.json:
        _print({"api": api, "management_url": config.dataspace.edc.management_url, "collections": result})
        return 0
    print(f"connector {config.dataspace.edc.management_url} (Management API {api}):")
    for coll, info in result.items():
        mark = "present" if info["present"] else "MISSING"
        print(f"  {coll}: {info['count']} held; the gateway's {info['what']} {info['gateway_id']}: {mark}")
        for rid in info["ids"]:
            print(f"    {'*' if rid == info['gateway_id'] else '-'} {rid}")
    missing = [i["gateway_id"] for i in result.values() if not i["present"]]
    if missing:
        print(f"not provisioned: {', '.join(missing)} (run `ds4h-gateway dataspace provision`)")
    return 0


# --- credential ----------------------------------------------------------------------------------
def cmd_credential_request(args: argparse.Namespace) -> int:
    from gateway.dataspace.credential import DIR_NAME, REQUEST_FILE, build_request
    from gateway.dataspace.edc import CREDENTIAL_PATH
    from gateway.provenance.keyring import load_gateway_keys

    config, state_dir = _config(args)
    credential = config.provenance.key_credential if args.config is not None else None
    keys = load_gateway_keys(state_dir, credential, create=False)
    site = args.site or config.dataspace.site or config.gateway.name
    url = config.dataspace.public_url + CREDENTIAL_PATH if config.dataspace.public_url else None
    token = build_request(keys.identity, keys.history, site=site, gateway_name=config.gateway.name, credential_url=url)
    out = args.out or state_dir / DIR_NAME / REQUEST_FILE
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.write_text(token + "\n", encoding="utf-8")
    print(f"credential request for {keys.identity.did} (site {site!r}) written to {out}")
    if len(keys.history.records) > 1:
        print(f"it carries the key history ({len(keys.history.records)} keys), linking the earlier dids to this one")
    print(
        "send it to the operator, who issues the credential with "
        "`ds4h-gateway dataspace credential issue --issuer-key KEY --issuer-did did:web:… REQUEST`; "
        "then `ds4h-gateway dataspace credential install FILE`"
    )
    return 0


def cmd_credential_issue(args: argparse.Namespace) -> int:
    from gateway.dataspace.credential import issue_credential, verify_request
    from gateway.provenance.identity import load_key_file

    issuer = load_key_file(args.issuer_key)
    if not args.issuer_did.startswith(("did:web:", "did:key:")):
        raise GatewayError(f"--issuer-did {args.issuer_did!r}: use the operator's did:web (or a did:key)")
    if args.issuer_did.startswith("did:key:") and args.issuer_did != issuer.did:
        raise GatewayError(f"--issuer-did {args.issuer_did} is not the did:key of --issuer-key ({issuer.did})")
    try:
        text = args.request.read_text(encoding="utf-8")
    except OSError as e:
        raise GatewayError(f"{args.request}: cannot read: {e.strerror}") from e
    req = verify_request(text)
    if args.site:
        from dataclasses import replace

        req = replace(req, site=args.site)
    token = issue_credential(req, issuer, args.issuer_did, days=args.days)
    if args.out is None:
        print(token)
    else:
        args.out.write_text(token + "\n", encoding="utf-8")
        print(
            f"credential for {req.did} (site {req.site!r}, {args.days:g} days) written to {args.out}", file=sys.stderr
        )
    if req.previous_dids:
        print(f"the request's key history links it to {', '.join(req.previous_dids)}", file=sys.stderr)
    return 0


def cmd_credential_did_document(args: argparse.Namespace) -> int:
    from gateway.dataspace.did import did_document, did_web_url
    from gateway.provenance.identity import load_key_file

    issuer = load_key_file(args.issuer_key)
    doc = did_document(args.issuer_did, issuer.public_key_bytes)
    text = json.dumps(doc, indent=2) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")
    if args.issuer_did.startswith("did:web:"):
        print(f"publish it at {did_web_url(args.issuer_did)}", file=sys.stderr)
    return 0


def cmd_credential_install(args: argparse.Namespace) -> int:
    from gateway.dataspace.credential import CredentialStore, check_for_install
    from gateway.dataspace.did import fetch_did_document, read_did_document
    from gateway.dataspace.jose import split

    config, state_dir = _config(args)
    try:
        token = args.file.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise GatewayError(f"{args.file}: cannot read: {e.strerror}") from e
    _, claims = split(token, "credential")
    issuer = claims.get("iss") or claims.get("issuer")
    doc: dict[str, Any] | None = None
    if args.issuer_did_document is not None:
        doc = read_did_document(args.issuer_did_document)
    elif isinstance(issuer, str) and issuer.startswith("did:web:"):
        doc = fetch_did_document(issuer)
    expected = args.issuer or config.dataspace.credential_issuer
    did = current_did(state_dir)
    cred = check_for_install(token, doc, did, expected_issuer=expected)
    store = CredentialStore(state_dir, did)
    store.install(cred, doc)
    print(f"installed: credential {cred.claims.get('id')} for {cred.subject}")
    print(f"  issuer {cred.issuer}, valid {cred.summary()['valid_from']} … {cred.summary()['valid_until']}")
    print(f"  stored in {store.credential_path}; served at /dataspace/v1/credential by the running gateway")
    if expected is None:
        print(f"note: [dataspace] credential_issuer is not set: pin {cred.issuer} there to refuse other issuers")
    return 0


def cmd_credential_show(args: argparse.Namespace) -> int:
    from gateway.dataspace.credential import CredentialStore

    _, state_dir = _config(args)
    did = current_did(state_dir)
    status = CredentialStore(state_dir, did).status()
    if args.json:
        doc: dict[str, Any] = {"current_did": did, **status.as_dict()}
        if status.credential is not None:
            doc["header"] = status.credential.header
            doc["claims"] = status.credential.claims
        _print(doc)
    else:
        print(f"gateway did: {did}")
        print(f"credential:  {status.state}: {status.detail}")
        if status.credential is not None:
            c = status.credential
            print(f"names current did: {'yes' if c.subject == did else 'NO: ' + c.subject}")
            print(json.dumps({"header": c.header, "claims": c.claims}, indent=2))
    return 0 if status.state == "valid" else 1


# --- parser --------------------------------------------------------------------------------------
def add_dataspace_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dataspace`` and its subcommands on the top-level subparsers of ``ds4h-gateway``."""
    ds = sub.add_parser(
        "dataspace",
        help="EDC provisioning, the gateway credential, research exports",
        description="The dataspace link (docs/dataspace.md): provision the gateway's offer in an Eclipse Dataspace "
        "Connector, list what it holds, and the gateway's Verifiable Credential.",
    )
    ds_sub = ds.add_subparsers(dest="dataspace_cmd", required=True, metavar="SUBCOMMAND")
    from gateway.dataspace.export import add_export_parser  # the offline FHIR/CSV export (docs/consent.md)

    add_export_parser(ds_sub)
    api_help = "Management API version (default [dataspace.edc] api_version)"

    prov = ds_sub.add_parser(
        "provision",
        help="create or update the asset, policy and contract definition in the connector",
        description="POST each resource; on 409 (it exists) PUT it. Idempotent. --dry-run --json prints the "
        "requests without sending anything.",
    )
    _state_args(prov)
    prov.add_argument("--api", choices=("v3", "v4"), help=api_help)
    prov.add_argument("--dry-run", action="store_true", help="print the requests (method, path, body), send nothing")
    prov.add_argument("--json", action="store_true", help="JSON output (progress lines go to stderr)")
    prov.set_defaults(func=cmd_provision)

    st = ds_sub.add_parser(
        "status",
        help="list the assets, policies and contract definitions the connector holds",
        description="Query the connector (POST …/request) and mark the gateway's own resources.",
    )
    _state_args(st)
    st.add_argument("--api", choices=("v3", "v4"), help=api_help)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    cred = ds_sub.add_parser(
        "credential",
        help="the gateway's Verifiable Credential (request, issue, install, show)",
        description="The operator's credential binding the gateway's did:key to its site.",
    )
    cred_sub = cred.add_subparsers(dest="credential_cmd", required=True, metavar="SUBCOMMAND")
    req = cred_sub.add_parser(
        "request",
        help="write a credential request signed by the gateway key",
        description="Write a JWT signed by the gateway's current key naming its did, site and key history.",
    )
    _state_args(req)
    req.add_argument("--site", help="site name (default [dataspace] site, else gateway.name)")
    req.add_argument("--out", type=Path, help="file to write (default <state_dir>/dataspace/credential-request.jwt)")
    req.set_defaults(func=cmd_credential_request)

    iss = cred_sub.add_parser(
        "issue",
        help="(operator) issue the credential for a request",
        description="The operator's side: verify a credential request and sign the gateway credential "
        "(VC 2.0 as a JWT, EdDSA) with the operator's Ed25519 key.",
    )
    iss.add_argument("request", type=Path, metavar="REQUEST", help="the gateway's credential request file")
    iss.add_argument("--issuer-key", type=Path, required=True, help="the operator's Ed25519 PKCS#8 PEM key (0600)")
    iss.add_argument("--issuer-did", required=True, help="the operator's DID, e.g. did:web:hospital.example")
    iss.add_argument("--days", type=float, default=365.0, help="validity in days (default 365)")
    iss.add_argument("--site", help="override the site name the request gives")
    iss.add_argument("--out", type=Path, help="file to write (default: stdout)")
    iss.set_defaults(func=cmd_credential_issue)

    dd = cred_sub.add_parser(
        "did-document",
        help="(operator) print the DID document to publish for the issuer key",
        description="A DID document with the issuer key as an Ed25519 Multikey assertion method (#key-1).",
    )
    dd.add_argument("--issuer-key", type=Path, required=True, help="the operator's Ed25519 PKCS#8 PEM key (0600)")
    dd.add_argument("--issuer-did", required=True, help="the operator's DID, e.g. did:web:hospital.example")
    dd.add_argument("--out", type=Path, help="file to write (default: stdout)")
    dd.set_defaults(func=cmd_credential_did_document)

    ins = cred_sub.add_parser(
        "install",
        help="verify and store an issued credential",
        description="Verify the signature against the issuer's DID document (a file, or fetched from its did:web), "
        "the validity period and that it names the gateway's current did; then store it.",
    )
    _state_args(ins)
    ins.add_argument("file", type=Path, metavar="FILE", help="the credential (a JWT)")
    ins.add_argument("--issuer-did-document", type=Path, metavar="FILE", help="the issuer's DID document (did.json)")
    ins.add_argument("--issuer", help="accept only this issuer DID (default [dataspace] credential_issuer)")
    ins.set_defaults(func=cmd_credential_install)

    show = cred_sub.add_parser(
        "show",
        help="print the installed credential and whether it is valid for the current did",
        description="Decode and re-verify the installed credential; exit 0 only if it is valid for the current did.",
    )
    _state_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_credential_show)
