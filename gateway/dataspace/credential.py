"""The gateway credential: a W3C Verifiable Credential (VC Data Model 2.0) secured as a JWT with EdDSA,
issued by the operator (a did:web) to the gateway's did:key for one site (docs/dataspace.md).

Flow: the gateway writes a **credential request** (a JWT signed by its current key: proof of possession of
the did:key; it carries the key history, which links old and new dids after a rotation); the operator
checks it and **issues** the credential with its own key; the gateway **installs** it after checking the
signature against the operator's DID document, the validity period and that the subject is its current
did; it serves it at ``/dataspace/v1/credential``. After ``keys rotate`` the installed credential names
a retired did: ``show`` and ``/healthz`` say it must be re-requested.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway.dataspace import CredentialError
from gateway.dataspace.did import assertion_key
from gateway.dataspace.jose import b64url, b64url_decode, sign_compact, split, verify_compact
from gateway.errors import ProvenanceError
from gateway.provenance.didkey import public_from_did_key
from gateway.provenance.identity import GatewayIdentity
from gateway.provenance.keyhistory import KeyHistory

VC_CONTEXT_V2 = "https://www.w3.org/ns/credentials/v2"
CREDENTIAL_TYPE = "DataspaceGatewayCredential"
CREDENTIAL_TYP = "vc+jwt"
REQUEST_TYP = "ds4h-credential-request+jwt"
REQUEST_VALID_S = 7 * 86400
LEEWAY_S = 60
"""Clock tolerance for validity periods (the gateway's and the operator's clocks differ a little)."""

DIR_NAME = "dataspace"
CREDENTIAL_FILE = "credential.jwt"
ISSUER_DOCUMENT_FILE = "credential-issuer.did.json"
REQUEST_FILE = "credential-request.jwt"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: object, what: str) -> float:
    if not isinstance(text, str):
        raise CredentialError(f"{what} is not a date-time string")
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise CredentialError(f"{what} {text!r} is not an ISO 8601 date-time") from e
    if dt.tzinfo is None:
        raise CredentialError(f"{what} {text!r} has no time zone")
    return dt.timestamp()


def _did_key_kid(did: str) -> str:
    return f"{did}#{did[len('did:key:') :]}"


# --- request (gateway) ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """A verified credential request: the gateway's current did, its site and its key history."""

    did: str
    site: str
    gateway_name: str
    dids: tuple[str, ...]
    """Every did of the gateway's key history, oldest first (the last is ``did``)."""
    credential_url: str | None
    claims: dict[str, Any]

    @property
    def previous_dids(self) -> tuple[str, ...]:
        return self.dids[:-1]


def build_request(
    identity: GatewayIdentity,
    history: KeyHistory,
    *,
    site: str,
    gateway_name: str,
    credential_url: str | None = None,
    now: float | None = None,
) -> str:
    """The credential request JWT, signed by the gateway's current key (proof of possession of its did:key)."""
    current = history.current
    if current is None or current.did != identity.did:
        raise CredentialError("the key history's current key is not the gateway key: cannot request a credential")
    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": identity.did,
        "sub": identity.did,
        "iat": t,
        "exp": t + REQUEST_VALID_S,
        "jti": f"urn:uuid:{uuid.uuid4()}",
        "site": site,
        "gateway_name": gateway_name,
        "key_history": {"dids": history.dids, "records": [b64url(r.cose) for r in history.records]},
    }
    if credential_url:
        claims["credential_url"] = credential_url
    header = {"alg": "EdDSA", "typ": REQUEST_TYP, "kid": _did_key_kid(identity.did)}
    return sign_compact(header, claims, identity.sign)


def verify_request(token: str, *, now: float | None = None) -> CredentialRequest:
    """Check a credential request: signed by its ``iss`` did:key, unexpired, key history chained to that did."""
    t = time.time() if now is None else now
    header, claims = split(token, "credential request")
    if header.get("typ") != REQUEST_TYP:
        raise CredentialError(f"credential request: typ {header.get('typ')!r} is not {REQUEST_TYP!r}")
    did = claims.get("iss")
    if not isinstance(did, str) or claims.get("sub") != did:
        raise CredentialError("credential request: iss and sub must both be the gateway's did:key")
    try:
        public = public_from_did_key(did)
    except ProvenanceError as e:
        raise CredentialError(f"credential request: {e}") from e
    verify_compact(token, public, "credential request")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise CredentialError("credential request: iat and exp must be integers")
    if exp + LEEWAY_S < t:
        raise CredentialError(f"credential request: expired at {iso(exp)}; make a new one")
    if iat - LEEWAY_S > t:
        raise CredentialError(f"credential request: made in the future ({iso(iat)})")
    site, name = claims.get("site"), claims.get("gateway_name")
    if not isinstance(site, str) or not site or not isinstance(name, str):
        raise CredentialError("credential request: site and gateway_name must be non-empty strings")
    kh = claims.get("key_history")
    if not isinstance(kh, dict) or not isinstance(kh.get("records"), list) or not kh["records"]:
        raise CredentialError("credential request: key_history.records is missing")
    history = KeyHistory()
    try:
        for i, rec in enumerate(kh["records"], 1):
            if not isinstance(rec, str):
                raise CredentialError(f"credential request: key record {i} is not base64url text")
            history.add(b64url_decode(rec))
    except ProvenanceError as e:
        raise CredentialError(f"credential request: the key history does not verify: {e}") from e
    if history.current is None or history.current.did != did:
        raise CredentialError("credential request: the key history's current key is not the requesting did")
    if kh.get("dids") != history.dids:
        raise CredentialError("credential request: key_history.dids differs from its records")
    url = claims.get("credential_url")
    return CredentialRequest(did, site, name, tuple(history.dids), url if isinstance(url, str) else None, claims)


# --- issue (operator) ----------------------------------------------------------------------------
def issue_credential(
    request: CredentialRequest,
    issuer: GatewayIdentity,
    issuer_did: str,
    *,
    days: float = 365.0,
    kid_fragment: str = "key-1",
    now: float | None = None,
    valid_from: float | None = None,
) -> str:
    """The gateway credential JWT (``typ`` ``vc+jwt``), signed with the operator's Ed25519 key."""
    t = int(time.time() if now is None else now)
    start = int(t if valid_from is None else valid_from)
    until = int(start + days * 86400)
    cid = f"urn:uuid:{uuid.uuid4()}"
    subject: dict[str, Any] = {
        "id": request.did,
        "type": "EdgeGateway",
        "site": request.site,
        "gatewayName": request.gateway_name,
    }
    if request.previous_dids:
        subject["previousKeys"] = list(request.previous_dids)
    if request.credential_url:
        subject["credentialUrl"] = request.credential_url
    claims = {
        "@context": [VC_CONTEXT_V2],
        "id": cid,
        "type": ["VerifiableCredential", CREDENTIAL_TYPE],
        "issuer": issuer_did,
        "validFrom": iso(start),
        "validUntil": iso(until),
        "credentialSubject": subject,
        "iss": issuer_did,
        "sub": request.did,
        "jti": cid,
        "iat": t,
        "nbf": start,
        "exp": until,
    }
    kid = issuer.did if issuer_did.startswith("did:key:") else f"{issuer_did}#{kid_fragment}"
    header = {"alg": "EdDSA", "typ": CREDENTIAL_TYP, "cty": "vc", "kid": kid}
    return sign_compact(header, claims, issuer.sign)


# --- verify and keep (gateway) -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Credential:
    """A credential whose signature verified (validity period and subject are checked separately)."""

    token: str
    header: dict[str, Any]
    claims: dict[str, Any]
    issuer: str
    subject: str
    valid_from: float
    valid_until: float

    def problem(self, current_did: str, now: float | None = None) -> tuple[str, str] | None:
        """``(state, detail)`` when the credential cannot be used now for ``current_did``, else ``None``."""
        t = time.time() if now is None else now
        if t + LEEWAY_S < self.valid_from:
            return "not_yet_valid", f"the credential is valid only from {iso(self.valid_from)}"
        if t - LEEWAY_S > self.valid_until:
            return "expired", (
                f"the credential expired at {iso(self.valid_until)}: re-request it "
                "(`ds4h-gateway dataspace credential request`)"
            )
        if self.subject != current_did:
            return "stale", (
                f"the credential names {self.subject}, not the gateway's current did {current_did} (its key was "
                "rotated): re-request it (`ds4h-gateway dataspace credential request`)"
            )
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.claims.get("id"),
            "issuer": self.issuer,
            "subject": self.subject,
            "site": self.claims.get("credentialSubject", {}).get("site"),
            "valid_from": iso(self.valid_from),
            "valid_until": iso(self.valid_until),
            "kid": self.header.get("kid"),
        }


def _issuer_of(claims: dict[str, Any]) -> str:
    issuer = claims.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    if not isinstance(issuer, str) or not issuer.startswith("did:"):
        raise CredentialError("credential: issuer is not a DID")
    if "iss" in claims and claims["iss"] != issuer:
        raise CredentialError(f"credential: iss {claims['iss']!r} differs from issuer {issuer!r}")
    return issuer


def verify_credential(token: str, issuer_document: dict[str, Any] | None) -> Credential:
    """Verify the format and signature of a gateway credential against its issuer's DID document."""
    header, claims = split(token, "credential")
    if header.get("typ") != CREDENTIAL_TYP:
        raise CredentialError(f"credential: typ {header.get('typ')!r} is not {CREDENTIAL_TYP!r}")
    issuer = _issuer_of(claims)
    kid = header.get("kid")
    key = assertion_key(issuer_document, issuer, kid if isinstance(kid, str) else None)
    verify_compact(token, key, "credential")
    ctx = claims.get("@context")
    if not isinstance(ctx, list) or not ctx or ctx[0] != VC_CONTEXT_V2:
        raise CredentialError(f"credential: @context must start with {VC_CONTEXT_V2}")
    types = claims.get("type")
    if not isinstance(types, list) or "VerifiableCredential" not in types:
        raise CredentialError("credential: type must include VerifiableCredential")
    subj = claims.get("credentialSubject")
    if not isinstance(subj, dict) or not isinstance(subj.get("id"), str):
        raise CredentialError("credential: credentialSubject.id is missing")
    if "sub" in claims and claims["sub"] != subj["id"]:
        raise CredentialError("credential: sub differs from credentialSubject.id")
    start = parse_iso(claims.get("validFrom"), "credential: validFrom")
    until = parse_iso(claims.get("validUntil"), "credential: validUntil")
    if until <= start:
        raise CredentialError("credential: validUntil is not after validFrom")
    for name, value in (("nbf", start), ("exp", until)):
        if name in claims and claims[name] != int(value):
            raise CredentialError(f"credential: {name} differs from the validity period")
    return Credential(token.strip(), header, claims, issuer, subj["id"], start, until)


def check_for_install(
    token: str,
    issuer_document: dict[str, Any] | None,
    current_did: str,
    *,
    expected_issuer: str | None = None,
    now: float | None = None,
) -> Credential:
    """Everything ``install`` requires: signature, expected issuer, validity period now, subject = ``current_did``."""
    cred = verify_credential(token, issuer_document)
    if expected_issuer is not None and cred.issuer != expected_issuer:
        raise CredentialError(
            f"credential: issued by {cred.issuer}, but [dataspace] credential_issuer is {expected_issuer}"
        )
    problem = cred.problem(current_did, now)
    if problem is not None:
        state, detail = problem
        if state == "stale":
            detail = f"the credential is for {cred.subject}, not for this gateway's current did {current_did}"
        raise CredentialError(f"credential not installed: {detail}")
    return cred


CredentialState = Literal["none", "valid", "not_yet_valid", "expired", "stale", "invalid"]


@dataclass(frozen=True, slots=True)
class CredentialStatus:
    state: CredentialState
    detail: str
    credential: Credential | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "detail": self.detail}
        if self.credential is not None:
            out.update(self.credential.summary())
        return out


class CredentialStore:
    """The installed credential and its issuer's DID document in ``<state_dir>/dataspace/``."""

    def __init__(self, state_dir: Path, current_did: str | Callable[[], str]) -> None:
        self.dir = Path(state_dir) / DIR_NAME
        self._current = current_did

    @property
    def current_did(self) -> str:
        return self._current() if callable(self._current) else self._current

    @property
    def credential_path(self) -> Path:
        return self.dir / CREDENTIAL_FILE

    @property
    def issuer_path(self) -> Path:
        return self.dir / ISSUER_DOCUMENT_FILE

    def install(self, cred: Credential, issuer_document: dict[str, Any] | None) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if issuer_document is not None:
            _write_atomic(self.issuer_path, json.dumps(issuer_document, indent=2).encode() + b"\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                self.issuer_path.unlink()
        _write_atomic(self.credential_path, cred.token.encode() + b"\n")

    def load(self) -> tuple[str, dict[str, Any] | None] | None:
        try:
            token = self.credential_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CredentialError(f"{self.credential_path}: cannot read: {e.strerror}") from e
        try:
            doc = json.loads(self.issuer_path.read_bytes())
        except FileNotFoundError:
            doc = None
        except (OSError, ValueError) as e:
            raise CredentialError(f"{self.issuer_path}: cannot read the issuer's DID document: {e}") from e
        return token, doc

    def status(self, now: float | None = None) -> CredentialStatus:
        """Re-verify the installed credential (offline, against the stored DID document)."""
        try:
            loaded = self.load()
            if loaded is None:
                return CredentialStatus(
                    "none", "no gateway credential installed (`ds4h-gateway dataspace credential request`)"
                )
            cred = verify_credential(*loaded)
        except CredentialError as e:
            return CredentialStatus("invalid", f"the installed credential does not verify: {e}")
        problem = cred.problem(self.current_did, now)
        if problem is None:
            return CredentialStatus("valid", f"issued by {cred.issuer} until {iso(cred.valid_until)}", cred)
        return CredentialStatus(problem[0], problem[1], cred)  # type: ignore[arg-type]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CredentialError(f"{path}: cannot write: {e.strerror}") from e
