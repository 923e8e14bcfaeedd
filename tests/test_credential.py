"""The gateway credential: request → issue → install → show → served by a running gateway; what is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.dataspace import CredentialError
from gateway.dataspace.credential import (
    CredentialStore,
    build_request,
    check_for_install,
    issue_credential,
    verify_credential,
    verify_request,
)
from gateway.dataspace.did import assertion_key, did_document, did_web_url
from gateway.dataspace.jose import b64url, b64url_decode, sign_compact, split
from gateway.provenance import GatewayIdentity
from gateway.provenance.envelope import GENESIS_PREV
from gateway.provenance.identity import write_key_file
from gateway.provenance.keyhistory import KeyHistory, build_key_record
from tests.gw import get, make_config, running

ISSUER_DID = "did:web:hospital.example:ds4h"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ),
    )  # fmt: skip


def gateway_keys() -> tuple[GatewayIdentity, KeyHistory]:
    gw = GatewayIdentity.generate()
    return gw, KeyHistory([build_key_record(gw, gw, 1, GENESIS_PREV, 1, time.time_ns())])


def operator(tmp_path: Path) -> tuple[GatewayIdentity, Path, dict[str, object]]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / f"operator-{uuid.uuid4().hex[:8]}.key"
    assert write_key_file(path, key)
    ident = GatewayIdentity(key)
    return ident, path, did_document(ISSUER_DID, ident.public_key_bytes)


def issued(tmp_path: Path, **kw: float) -> tuple[str, dict[str, object], GatewayIdentity]:
    gw, history = gateway_keys()
    req = verify_request(build_request(gw, history, site="Ward 7", gateway_name="ward-7"))
    op, _, doc = operator(tmp_path)
    return issue_credential(req, op, ISSUER_DID, **kw), doc, gw


# --- the round trip through the CLI and a running gateway --------------------------------------
async def test_round_trip_request_issue_install_show_serve(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert cli("keys", "init", "--state-dir", str(state)).returncode == 0
    did = json.loads(cli("keys", "show", "--state-dir", str(state)).stdout)["did"]
    r = cli("dataspace", "credential", "show", "--state-dir", str(state))
    assert r.returncode == 1 and "no gateway credential installed" in r.stdout

    r = cli("dataspace", "credential", "request", "--state-dir", str(state), "--site", "Ward 7")
    assert r.returncode == 0, r.stderr
    request = state / "dataspace" / "credential-request.jwt"
    header, claims = split(request.read_text())
    assert header["alg"] == "EdDSA" and claims["iss"] == claims["sub"] == did and claims["site"] == "Ward 7"

    _, key, _ = operator(tmp_path)
    doc_file, cred_file = tmp_path / "did.json", tmp_path / "gateway.vc.jwt"
    r = cli("dataspace", "credential", "did-document", "--issuer-key", str(key), "--issuer-did", ISSUER_DID,
            "--out", str(doc_file))  # fmt: skip
    assert r.returncode == 0 and "https://hospital.example/ds4h/did.json" in r.stderr
    r = cli("dataspace", "credential", "issue", "--issuer-key", str(key), "--issuer-did", ISSUER_DID,
            "--days", "30", "--out", str(cred_file), str(request))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("dataspace", "credential", "install", "--state-dir", str(state), "--issuer-did-document", str(doc_file),
            "--issuer", ISSUER_DID, str(cred_file))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("dataspace", "credential", "show", "--state-dir", str(state), "--json")
    assert r.returncode == 0, r.stdout
    shown = json.loads(r.stdout)
    assert shown["state"] == "valid" and shown["subject"] == did and shown["issuer"] == ISSUER_DID
    assert shown["claims"]["credentialSubject"]["site"] == "Ward 7"
    assert shown["header"]["typ"] == "vc+jwt" and shown["claims"]["type"][0] == "VerifiableCredential"

    token = cred_file.read_text().strip()
    async with running(make_config(state)) as gw:
        status, served = await get(gw, "/dataspace/v1/credential", auth=False)
        assert status == 200 and served == token
        status, health = await get(gw, "/healthz", auth=False)
        h = json.loads(health)
        assert status == 200 and h["dataspace_credential"]["state"] == "valid"
    # the consumer's chain: operator did:web (its DID document) → gateway did:key → the gateway's signed data
    cred = verify_credential(served, json.loads(doc_file.read_text()))
    assert cred.issuer == ISSUER_DID and cred.subject == h["did"] == did


async def test_after_a_key_rotation_the_credential_must_be_re_requested(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert cli("keys", "init", "--state-dir", str(state)).returncode == 0
    _, key, doc = operator(tmp_path)
    (tmp_path / "did.json").write_text(json.dumps(doc))

    def request_issue_install() -> subprocess.CompletedProcess[str]:
        assert cli("dataspace", "credential", "request", "--state-dir", str(state)).returncode == 0
        cli("dataspace", "credential", "issue", "--issuer-key", str(key), "--issuer-did", ISSUER_DID,
            "--out", str(tmp_path / "vc.jwt"), str(state / "dataspace" / "credential-request.jwt"))  # fmt: skip
        return cli("dataspace", "credential", "install", "--state-dir", str(state), "--issuer-did-document",
                   str(tmp_path / "did.json"), str(tmp_path / "vc.jwt"))  # fmt: skip

    assert request_issue_install().returncode == 0
    old = json.loads(cli("keys", "show", "--state-dir", str(state)).stdout)["did"]
    r = cli("keys", "rotate", "--state-dir", str(state))
    assert r.returncode == 0 and "dataspace credential request" in r.stdout
    new = json.loads(cli("keys", "show", "--state-dir", str(state)).stdout)["did"]

    r = cli("dataspace", "credential", "show", "--state-dir", str(state))
    assert r.returncode == 1
    assert "stale" in r.stdout and "re-request" in r.stdout and f"NO: {old}" in r.stdout
    async with running(make_config(state)) as gw:
        status, health = await get(gw, "/healthz", auth=False)
        cred = json.loads(health)["dataspace_credential"]
        assert status == 200 and cred["state"] == "stale" and "re-request" in cred["detail"]
        status, body = await get(gw, "/dataspace/v1/credential", auth=False)
        assert status == 409 and "re-request" in json.loads(body)["error"]

    assert request_issue_install().returncode == 0  # the new request carries the key history
    _, claims = split((state / "dataspace" / "credential-request.jwt").read_text())
    assert claims["key_history"]["dids"] == [old, new]
    shown = json.loads(cli("dataspace", "credential", "show", "--state-dir", str(state), "--json").stdout)
    assert shown["state"] == "valid" and shown["subject"] == new
    assert shown["claims"]["credentialSubject"]["previousKeys"] == [old]


# --- what install refuses ------------------------------------------------------------------------
def test_a_tampered_credential_is_rejected(tmp_path: Path) -> None:
    token, doc, gw = issued(tmp_path)
    assert check_for_install(token, doc, gw.did).subject == gw.did
    h, c, s = token.split(".")
    claims = json.loads(b64url_decode(c))
    claims["credentialSubject"]["site"] = "Somewhere else"
    forged = f"{h}.{b64url(json.dumps(claims).encode())}.{s}"
    with pytest.raises(CredentialError, match="signature does not verify"):
        check_for_install(forged, doc, gw.did)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    with pytest.raises(CredentialError, match="signature does not verify"):
        check_for_install(flipped, doc, gw.did)
    unsigned = f"{b64url(json.dumps({'alg': 'none', 'typ': 'vc+jwt'}).encode())}.{c}.x"
    with pytest.raises(CredentialError, match="alg 'none' is not accepted"):
        check_for_install(unsigned, doc, gw.did)


def test_a_credential_signed_by_another_key_is_rejected(tmp_path: Path) -> None:
    token, _, gw = issued(tmp_path)
    _, _, other_doc = operator(tmp_path)
    with pytest.raises(CredentialError, match="signature does not verify"):
        check_for_install(token, other_doc, gw.did)
    with pytest.raises(CredentialError, match="not an assertionMethod"):
        check_for_install(token, {**other_doc, "assertionMethod": []}, gw.did)
    with pytest.raises(CredentialError, match="DID document is that of"):
        check_for_install(token, {**other_doc, "id": "did:web:evil.example"}, gw.did)


def test_expired_and_not_yet_valid_credentials_are_rejected(tmp_path: Path) -> None:
    now = time.time()
    expired, doc, gw = issued(tmp_path, days=1, now=now - 3 * 86400)
    with pytest.raises(CredentialError, match="expired at"):
        check_for_install(expired, doc, gw.did)
    future, doc, gw = issued(tmp_path, valid_from=now + 86400)
    with pytest.raises(CredentialError, match="valid only from"):
        check_for_install(future, doc, gw.did)
    assert verify_credential(future, doc).subject == gw.did  # the signature itself is fine
    assert check_for_install(future, doc, gw.did, now=now + 2 * 86400).subject == gw.did


def test_a_credential_for_another_did_or_issuer_is_rejected(tmp_path: Path) -> None:
    token, doc, gw = issued(tmp_path)
    other = GatewayIdentity.generate().did
    with pytest.raises(CredentialError, match=f"is for {gw.did}, not for this gateway's current did"):
        check_for_install(token, doc, other)
    with pytest.raises(CredentialError, match=r"credential_issuer is did:web:other\.example"):
        check_for_install(token, doc, gw.did, expected_issuer="did:web:other.example")


def test_the_store_reports_each_state(tmp_path: Path) -> None:
    token, doc, gw = issued(tmp_path, days=10)
    store = CredentialStore(tmp_path / "state", gw.did)
    assert store.status().state == "none"
    store.install(check_for_install(token, doc, gw.did), doc)
    assert store.status().state == "valid"
    assert store.status(now=time.time() + 11 * 86400).state == "expired"
    assert CredentialStore(tmp_path / "state", GatewayIdentity.generate().did).status().state == "stale"
    store.issuer_path.write_text(json.dumps(did_document(ISSUER_DID, GatewayIdentity.generate().public_key_bytes)))
    assert store.status().state == "invalid"


# --- the request ---------------------------------------------------------------------------------
def test_the_operator_refuses_a_bad_request(tmp_path: Path) -> None:
    gw, history = gateway_keys()
    token = build_request(gw, history, site="Ward 7", gateway_name="ward-7")
    req = verify_request(token)
    assert req.did == gw.did and req.dids == (gw.did,)
    h, c, s = token.split(".")
    claims = json.loads(b64url_decode(c))
    with pytest.raises(CredentialError, match="signature does not verify"):
        verify_request(f"{h}.{b64url(json.dumps({**claims, 'site': 'X'}).encode())}.{s}")
    with pytest.raises(CredentialError, match="expired"):
        verify_request(token, now=time.time() + 8 * 86400)
    other = GatewayIdentity.generate()  # signed by a key that is not the history's current one
    header = json.loads(b64url_decode(h))
    forged = sign_compact(header, {**claims, "iss": other.did, "sub": other.did}, other.sign)
    with pytest.raises(CredentialError, match="current key is not the requesting did"):
        verify_request(forged)


def test_did_web_urls_and_keys() -> None:
    assert did_web_url("did:web:hospital.example") == "https://hospital.example/.well-known/did.json"
    assert did_web_url("did:web:hospital.example:ds4h") == "https://hospital.example/ds4h/did.json"
    assert did_web_url("did:web:localhost%3A8443") == "https://localhost:8443/.well-known/did.json"
    ident = GatewayIdentity.generate()
    doc = did_document(ISSUER_DID, ident.public_key_bytes)
    assert assertion_key(doc, ISSUER_DID, "#key-1") == ident.public_key_bytes
    jwk_doc = {
        "id": ISSUER_DID,
        "verificationMethod": [
            {
                "id": "#k",
                "type": "JsonWebKey",
                "publicKeyJwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(ident.public_key_bytes)},
            }
        ],
        "assertionMethod": ["#k"],
    }
    assert assertion_key(jwk_doc, ISSUER_DID, f"{ISSUER_DID}#k") == ident.public_key_bytes
