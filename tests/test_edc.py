"""EDC provisioning: request bodies against the vendored v3/v4 specs, idempotence against a test double
of the connector, errors (wrong API key, connection refused, timeout), the CLI and its dry run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.dataspace import ConnectorAuthError, ConnectorError, ConnectorUnreachableError
from gateway.dataspace.client import EdcClient
from gateway.dataspace.edc import (
    DPV_HAS_PURPOSE,
    DPV_SCIENTIFIC_RESEARCH,
    EDC_NS,
    MANAGEMENT_CONTEXT_V2,
    Offer,
    default_ids,
    plan,
    query_request,
)
from gateway.dataspace.provision import check_policy, connector_status, provision
from gateway.dataspace.settings import api_key, make_offer
from gateway.errors import ConfigError
from gateway.provenance import GatewayIdentity
from tests.edc_double import EdcDouble
from tests.edc_specs import request_errors
from tests.services import free_port

DID = GatewayIdentity.generate().did
API_KEY = "s3cr3t-management-key"


def offer(name: str = "ward-7") -> Offer:
    return Offer(
        gateway_name=name,
        gateway_did=DID,
        public_url="https://gw-ward7.hospital.example",
        vault_secret="ward-7-endpoint-token",
        ids=default_ids(name),
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


def init_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    r = cli("keys", "init", "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    return state


def write_config(tmp_path: Path, state: Path, url: str, key: str = API_KEY, api: str = "v4", **edc: Any) -> Path:
    key_file = tmp_path / "edc.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in edc.items())
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nname = "ward-7"\nstate_dir = "{state}"\n[encryption]\ninsecure_key_on_disk = true\n'
        f'[dataspace]\npublic_url = "https://gw-ward7.hospital.example"\n'
        f'[dataspace.edc]\nmanagement_url = "{url}"\napi_key_file = "{key_file}"\napi_version = "{api}"\n{extra}'
    )
    return path


# --- bodies against the specs --------------------------------------------------------------------
@pytest.mark.parametrize("api", ["v3", "v4"])
def test_every_request_conforms_to_the_vendored_spec(api: str) -> None:
    resources = plan(offer(), api)  # type: ignore[arg-type]
    assert [r.kind for r in resources] == ["asset", "policy", "contract"]
    requests = [req for r in resources for req in (r.create, r.update)]
    requests += [query_request(api, k) for k in ("asset", "policy", "contract")]  # type: ignore[arg-type]
    for req in requests:
        assert request_errors(api, req.method, req.path, req.body) == [], req.as_dict()


@pytest.mark.parametrize("api", ["v3", "v4"])
def test_a_broken_body_is_caught_by_the_spec_check(api: str) -> None:
    asset = plan(offer(), api)[0].create  # type: ignore[arg-type]
    body = dict(asset.body or {})
    body.pop("properties")
    assert request_errors(api, "POST", asset.path, body)
    if api == "v4":  # v4 needs the management context and an explicit @type
        assert request_errors(api, "POST", asset.path, {**(asset.body or {}), "@context": {"@vocab": EDC_NS}})
        assert request_errors(api, "POST", asset.path, {**(asset.body or {}), "@type": "Dataset"})


@pytest.mark.parametrize("api", ["v3", "v4"])
def test_the_offer_bodies(api: str) -> None:
    o = offer()
    asset, policy, contract = plan(o, api)  # type: ignore[arg-type]
    assert (asset.create.path, asset.update.path) == (f"/{api}/assets", f"/{api}/assets")
    assert policy.update.path == f"/{api}/policydefinitions/ward-7-research-purpose"  # by id, unlike the others
    assert contract.update.path == f"/{api}/contractdefinitions"
    a = asset.create.body or {}
    assert a["@id"] == "ward-7-observations"
    addr = a["dataAddress"]
    assert addr["type"] == "HttpData" and addr["proxyQueryParams"] == "true"
    assert addr["baseUrl"] == "https://gw-ward7.hospital.example/dataspace/v1/observations"
    assert addr["authKey"] == "Authorization" and addr["secretName"] == "ward-7-endpoint-token"
    assert "authCode" not in addr  # the token itself never leaves the connector's vault
    props = a["properties"]
    assert DID in props.values()
    assert "https://gw-ward7.hospital.example/dataspace/v1/credential" in props.values()
    constraint = (policy.create.body or {})["policy"]["permission"][0]["constraint"][0]
    assert constraint == {"leftOperand": DPV_HAS_PURPOSE, "operator": "eq", "rightOperand": DPV_SCIENTIFIC_RESEARCH}
    c = contract.create.body or {}
    assert c["accessPolicyId"] == c["contractPolicyId"] == "ward-7-research-purpose"
    assert c["assetsSelector"][0]["operandRight"] == "ward-7-observations"
    if api == "v4":
        assert all((r.create.body or {})["@context"] == [MANAGEMENT_CONTEXT_V2] for r in (asset, policy, contract))
    else:
        assert all((r.create.body or {})["@context"]["@vocab"] == EDC_NS for r in (asset, policy, contract))


def test_default_ids_come_from_the_gateway_name() -> None:
    assert default_ids("Ward 7 / ICU") == {
        "asset": "ward-7-icu-observations",
        "policy": "ward-7-icu-research-purpose",
        "contract": "ward-7-icu-research",
    }
    cfg = parse_config(
        {
            "gateway": {"name": "gw-a"},
            "dataspace": {"public_url": "https://a.example/", "edc": {"asset_id": "x"}},
            "encryption": {"enabled": False},
        }
    )
    o = make_offer(cfg, DID)
    assert o.ids == {"asset": "x", "policy": "gw-a-research-purpose", "contract": "gw-a-research"}
    assert o.public_url == "https://a.example"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataspace\.edc\.api_key: unknown key"):
        parse_config({"dataspace": {"edc": {"api_key": "inline secrets are not accepted"}}}, "t.toml")
    with pytest.raises(ConfigError, match=r"dataspace\.public_url: must start with http"):
        parse_config({"dataspace": {"public_url": "gw.example"}}, "t.toml")
    key = tmp_path / "k"
    key.write_text("k")
    key.chmod(0o644)
    cfg = parse_config({"dataspace": {"edc": {"api_key_file": str(key)}}, "encryption": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"dataspace\.edc\.api_key_file: .*too open"):
        api_key(cfg)
    key.chmod(0o600)
    assert api_key(cfg) == "k"


# --- against the test double ---------------------------------------------------------------------
@pytest.mark.parametrize("api", ["v3", "v4"])
async def test_provisioning_twice_is_idempotent(api: str) -> None:
    double = EdcDouble(api, API_KEY)
    url = await double.start()
    lines: list[str] = []
    try:
        async with EdcClient(url, API_KEY, timeout_s=5) as client:
            first = await provision(client, plan(offer(), api), lines.append)  # type: ignore[arg-type]
            after_first = double.snapshot()
            second = await provision(client, plan(offer(), api), lines.append)  # type: ignore[arg-type]
            status = await connector_status(client, api, default_ids("ward-7"))  # type: ignore[arg-type]
            unbound = await check_policy(client, api, "ward-7-research-purpose")  # type: ignore[arg-type]
            double.bound_left_operands.add(DPV_HAS_PURPOSE)
            bound = await check_policy(client, api, "ward-7-research-purpose")  # type: ignore[arg-type]
    finally:
        await double.stop()
    assert double.violations == []
    assert [o.action for o in first] == ["created"] * 3 and [o.statuses for o in first] == [(200,)] * 3
    assert [o.action for o in second] == ["updated"] * 3 and [o.statuses for o in second] == [(409, 204)] * 3
    assert double.snapshot() == after_first
    assert {c: set(v) for c, v in after_first.items()} == {
        "assets": {"ward-7-observations"},
        "policydefinitions": {"ward-7-research-purpose"},
        "contractdefinitions": {"ward-7-research"},
    }
    methods = [(s.method, s.path) for s in double.seen if not s.path.endswith(("/request", "/validate"))]
    assert methods[3:] == [
        ("POST", f"/{api}/assets"), ("PUT", f"/{api}/assets"),
        ("POST", f"/{api}/policydefinitions"), ("PUT", f"/{api}/policydefinitions/ward-7-research-purpose"),
        ("POST", f"/{api}/contractdefinitions"), ("PUT", f"/{api}/contractdefinitions"),
    ]  # fmt: skip
    assert all(info["present"] and info["count"] == 1 for info in status.values())
    assert any("409 exists" in line for line in lines)
    assert not unbound.valid and DPV_HAS_PURPOSE in unbound.errors[0]  # what a stock EDC says (docs/dataspace.md)
    assert bound.valid


async def test_an_update_replaces_what_the_connector_holds() -> None:
    double = EdcDouble("v4", API_KEY)
    url = await double.start()
    try:
        async with EdcClient(url, API_KEY, timeout_s=5) as client:
            await provision(client, plan(offer(), "v4"), lambda _: None)
            moved = Offer(
                "ward-7", DID, "https://new.hospital.example", "ward-7-endpoint-token", ids=default_ids("ward-7")
            )
            await provision(client, plan(moved, "v4"), lambda _: None)
    finally:
        await double.stop()
    assert double.violations == []
    addr = double.snapshot()["assets"]["ward-7-observations"]["dataAddress"]
    assert addr["baseUrl"] == "https://new.hospital.example/dataspace/v1/observations"


async def test_a_resource_deleted_between_post_and_put_is_created_again() -> None:
    double = EdcDouble("v4", API_KEY)
    url = await double.start()
    res = plan(offer(), "v4")[0]
    try:
        async with EdcClient(url, API_KEY, timeout_s=5) as client:
            await provision(client, [res], lambda _: None)
            original = double._apply

            def vanish_after_conflict(method: str, path: str, body: Any) -> tuple[int, Any]:
                answer = original(method, path, body)
                if answer[0] == 409:
                    double.store["assets"].clear()
                return answer

            double._apply = vanish_after_conflict  # type: ignore[method-assign]
            (outcome,) = await provision(client, [res], lambda _: None)
    finally:
        await double.stop()
    assert outcome.action == "created" and outcome.statuses == (409, 404, 200)


async def test_a_wrong_api_key_is_a_clear_error() -> None:
    double = EdcDouble("v4", API_KEY)
    url = await double.start()
    try:
        async with EdcClient(url, "not-the-key", timeout_s=5) as client:
            with pytest.raises(
                ConnectorAuthError, match=rf"connector at {url} refused the Management API key \(HTTP 401"
            ):
                await provision(client, plan(offer(), "v4"), lambda _: None)
    finally:
        await double.stop()
    assert double.snapshot()["assets"] == {}


async def test_connection_refused_and_timeout_are_clear_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}/management"
    async with EdcClient(url, API_KEY, timeout_s=5) as client:
        with pytest.raises(ConnectorUnreachableError, match="cannot connect to the connector"):
            await provision(client, plan(offer(), "v4"), lambda _: None)
    double = EdcDouble("v4", API_KEY)
    double.delay_s = 2.0
    url = await double.start()
    try:
        async with EdcClient(url, API_KEY, timeout_s=0.3) as client:
            with pytest.raises(ConnectorUnreachableError, match=r"did not answer within 0\.3 s"):
                await provision(client, plan(offer(), "v4"), lambda _: None)
    finally:
        await double.stop()


async def test_a_connector_refusing_a_body_stops_provisioning() -> None:
    double = EdcDouble("v3", API_KEY)
    url = await double.start()
    asset, policy, _ = plan(offer(), "v3")
    body = {k: v for k, v in (asset.create.body or {}).items() if k != "dataAddress"}
    broken = replace(asset, create=replace(asset.create, body=body))
    try:
        async with EdcClient(url, API_KEY, timeout_s=5) as client:
            with pytest.raises(ConnectorError, match=r"asset ward-7-observations: POST .*/v3/assets: HTTP 400"):
                await provision(client, [broken, policy], lambda _: None)
    finally:
        await double.stop()
    assert any("dataAddress" in v for v in double.violations)  # the double checks every body
    assert double.snapshot()["policydefinitions"] == {}  # nothing after the refused resource


# --- the CLI -------------------------------------------------------------------------------------
def test_cli_provision_twice_status_and_errors(tmp_path: Path) -> None:
    state = init_state(tmp_path)
    double = EdcDouble("v3", API_KEY)
    with double.run_in_thread() as url:
        config = write_config(tmp_path, state, url, api="v4")
        r = cli("dataspace", "provision", "--config", str(config), "--api", "v3")
        assert r.returncode == 0, r.stderr
        assert "asset ward-7-observations: POST /v3/assets → 200 created" in r.stdout
        warning = "WARNING: the connector does not accept the purpose policy as enforceable: leftOperand"
        assert f"{warning} '{DPV_HAS_PURPOSE}' is not bound" in r.stdout
        double.bound_left_operands.add(DPV_HAS_PURPOSE)  # a connector with the purpose extension (deploy/edc/)
        r = cli("dataspace", "provision", "--config", str(config), "--api", "v3", "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert [x["statuses"] for x in doc["resources"]] == [[409, 204]] * 3
        assert doc["purpose_policy"] == {"valid": True, "errors": []} and "WARNING" not in r.stderr
        assert "PUT /v3/policydefinitions/ward-7-research-purpose → 204 updated" in r.stderr
        r = cli("dataspace", "status", "--config", str(config), "--api", "v3", "--json")
        assert r.returncode == 0, r.stderr
        assert all(c["present"] for c in json.loads(r.stdout)["collections"].values())
        r = cli("dataspace", "status", "--config", str(config), "--api", "v3")
        assert "* ward-7-observations" in r.stdout

        bad = write_config(tmp_path, state, url, key="wrong", api="v3")
        r = cli("dataspace", "provision", "--config", str(bad))
        assert r.returncode == 3
        assert f"the connector at {url} refused the Management API key" in r.stderr
        assert "wrong" not in r.stderr and API_KEY not in r.stdout + r.stderr  # keys never shown
    assert double.violations == []
    refused = write_config(tmp_path, state, f"http://127.0.0.1:{free_port()}/management", api="v3", timeout_s=2.0)
    r = cli("dataspace", "provision", "--config", str(refused))
    assert r.returncode == 4 and "cannot connect to the connector" in r.stderr


def test_cli_dry_run_sends_nothing_and_prints_the_three_requests(tmp_path: Path) -> None:
    state = init_state(tmp_path)
    r = cli("dataspace", "provision", "--state-dir", str(state), "--api", "v4", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(q["method"], q["path"]) for q in doc["requests"]] == [
        ("POST", "/v4/assets"), ("POST", "/v4/policydefinitions"), ("POST", "/v4/contractdefinitions"),
    ]  # fmt: skip
    assert [q["method"] for q in doc["on_409"]] == ["PUT"] * 3
    for q in doc["requests"] + doc["on_409"]:
        assert request_errors("v4", q["method"], q["path"], q["body"]) == []
    did = json.loads(cli("keys", "show", "--state-dir", str(state)).stdout)["did"]
    assert did in json.dumps(doc["requests"][0]["body"])
    assert "public_url is not set" in r.stderr
    r = cli("dataspace", "provision", "--state-dir", str(state), "--api", "v3", "--dry-run")
    assert r.returncode == 0 and "PUT /v3/assets" in r.stdout
    r = cli("dataspace", "provision", "--state-dir", str(state))  # a real run needs the config
    assert r.returncode == 2 and "public_url is not set" in r.stderr


def test_cli_dry_run_on_a_demo_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--duration", "2", "--json", "--state-dir", str(state),
         "--ward", "none", "--patients", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    did = json.loads(r.stdout.strip().splitlines()[-1])["did"]
    r = cli("dataspace", "provision", "--state-dir", str(state), "--api", "v4", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["requests"]) == 3 and did in json.dumps(doc["requests"][0]["body"])


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edc.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "edc.crt", tmp_path / "edc.key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    double = EdcDouble("v4", API_KEY)
    url = await double.start(server_ctx)
    try:
        async with EdcClient(url, API_KEY, timeout_s=5) as client:
            with pytest.raises(ConnectorUnreachableError, match="TLS certificate does not verify"):
                await provision(client, plan(offer(), "v4"), lambda _: None)
        async with EdcClient(url, API_KEY, timeout_s=5, ca_file=cert) as client:
            outcomes = await provision(client, plan(offer(), "v4"), lambda _: None)
    finally:
        await double.stop()
    assert [o.action for o in outcomes] == ["created"] * 3 and double.violations == []
