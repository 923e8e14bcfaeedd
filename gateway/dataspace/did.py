"""The operator's DID: did:web URLs and documents, and the Ed25519 key a verification method names.

Accepted verification methods: ``Multikey`` / ``Ed25519VerificationKey2020`` with ``publicKeyMultibase``
(``z6Mk…``), and ``JsonWebKey`` / ``JsonWebKey2020`` with an ``OKP``/``Ed25519`` ``publicKeyJwk``. The
method must be listed in the document's ``assertionMethod`` (the relationship for issuing credentials).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.dataspace import CredentialError
from gateway.dataspace.jose import b64url_decode
from gateway.errors import ProvenanceError
from gateway.provenance.didkey import DID_KEY_PREFIX, did_key_from_public, public_from_did_key

DID_CONTEXT = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
FETCH_TIMEOUT_S = 10.0
MAX_DOCUMENT_BYTES = 1024 * 1024


def did_web_url(did: str) -> str:
    """``did:web:example.org`` → ``https://example.org/.well-known/did.json``;
    ``did:web:example.org:ops:ds4h`` → ``https://example.org/ops/ds4h/did.json`` (``%3A`` in the host is a port)."""
    if not did.startswith("did:web:") or len(did) == len("did:web:"):
        raise CredentialError(f"{did!r} is not a did:web")
    host, *path = did[len("did:web:") :].split(":")
    host = urllib.parse.unquote(host)
    if not host or "/" in host:
        raise CredentialError(f"{did!r}: bad did:web host")
    if not path:
        return f"https://{host}/.well-known/did.json"
    return f"https://{host}/{'/'.join(urllib.parse.unquote(p) for p in path)}/did.json"


def fetch_did_document(did: str, timeout_s: float = FETCH_TIMEOUT_S) -> dict[str, Any]:
    """Resolve a did:web over HTTPS (certificate verified, ``timeout_s`` bound)."""
    url = did_web_url(did)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            raw = resp.read(MAX_DOCUMENT_BYTES + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise CredentialError(
            f"cannot fetch the DID document of {did} from {url}: {e}; pass it as a file instead"
        ) from e
    return parse_did_document(raw, url)


def read_did_document(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CredentialError(f"{path}: cannot read the DID document: {e.strerror}") from e
    return parse_did_document(raw, str(path))


def parse_did_document(raw: bytes, origin: str) -> dict[str, Any]:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CredentialError(f"{origin}: DID document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise CredentialError(f"{origin}: the DID document is not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise CredentialError(f"{origin}: a DID document is a JSON object with an id")
    return doc


def did_document(did: str, public_key: bytes, fragment: str = "key-1") -> dict[str, Any]:
    """A minimal DID document for ``did`` with one Ed25519 Multikey for assertions (what the operator publishes)."""
    vm = f"{did}#{fragment}"
    return {
        "@context": [DID_CONTEXT, MULTIKEY_CONTEXT],
        "id": did,
        "verificationMethod": [
            {
                "id": vm,
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": did_key_from_public(public_key)[len("did:key:") :],
            }
        ],
        "assertionMethod": [vm],
    }


def _absolute(ref: str, did: str) -> str:
    return did + ref if ref.startswith("#") else ref


def _raw_key(vm: dict[str, Any], where: str) -> bytes:
    multibase = vm.get("publicKeyMultibase")
    jwk = vm.get("publicKeyJwk")
    try:
        if isinstance(multibase, str):
            return public_from_did_key("did:key:" + multibase)
        if isinstance(jwk, dict) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            raw = b64url_decode(str(jwk.get("x", "")))
            if len(raw) == 32:
                return raw
    except ProvenanceError as e:
        raise CredentialError(f"{where}: not an Ed25519 key: {e}") from e
    raise CredentialError(f"{where}: no Ed25519 publicKeyMultibase or OKP/Ed25519 publicKeyJwk")


def assertion_key(doc: dict[str, Any] | None, issuer: str, kid: str | None) -> bytes:
    """The raw Ed25519 key that verification method ``kid`` of ``issuer`` uses to issue credentials."""
    if issuer.startswith(DID_KEY_PREFIX):  # self-describing: the key is the did
        try:
            return public_from_did_key(issuer.split("#", 1)[0])
        except ProvenanceError as e:
            raise CredentialError(f"issuer {issuer}: {e}") from e
    if doc is None:
        raise CredentialError(f"no DID document for the issuer {issuer}")
    if doc.get("id") != issuer:
        raise CredentialError(f"the DID document is that of {doc.get('id')!r}, not of the issuer {issuer}")
    if not kid:
        raise CredentialError("the credential names no verification method (kid)")
    kid = _absolute(kid, issuer)
    if not kid.startswith(issuer + "#"):
        raise CredentialError(f"kid {kid!r} is not a verification method of {issuer}")
    methods = {}
    for vm in [*doc.get("verificationMethod", []), *doc.get("assertionMethod", [])]:
        if isinstance(vm, dict) and isinstance(vm.get("id"), str):
            methods[_absolute(vm["id"], issuer)] = vm
    assertion = set()
    for a in doc.get("assertionMethod", []):
        ref = a if isinstance(a, str) else a.get("id") if isinstance(a, dict) else None
        if isinstance(ref, str):
            assertion.add(_absolute(ref, issuer))
    if kid not in assertion:
        raise CredentialError(f"{kid} is not an assertionMethod of {issuer}'s DID document")
    if kid not in methods:
        raise CredentialError(f"{issuer}'s DID document does not describe {kid}")
    return _raw_key(methods[kid], kid)
