"""The gateway's signature over a pseudonymised Bundle (docs/consent.md#signature).

Pseudonymisation changes the content, so the devices' and envelopes' signatures cannot cover what is served.
Each Bundle therefore ends with a FHIR ``Provenance`` entry:

- ``target``: every Observation of the Bundle (by ``fullUrl``); ``agent.who.identifier``: the gateway's did:key;
- ``entity`` (role ``source``): one per source envelope, ``what.identifier`` {``urn:ds4h:envelope``, ``<number>``};
- ``signature[0]``: ``sigFormat`` ``application/cose``, ``data`` = base64 of a COSE_Sign1 (Ed25519, kid = the
  did:key) whose payload is the CBOR map ``{"typ": "ds4h-bundle-sig/v1", "sha256": h, "envelopes": [n…],
  "gw": did}``.

``h`` is the SHA-256 of the Bundle's RFC 8785 (JSON Canonicalization Scheme) form, with that
``signature[0].data`` set to ``""``: any JCS library gives the same bytes. A verifier recomputes ``h``, checks
the COSE signature with the key inside the did:key, and that the envelope numbers equal the Provenance entities
(``ds4h-gateway verify --bundle FILE``). Bundles signed before (``typ`` ``ds4h-bundle-sig/v1``) hashed Python's
sorted-key compact JSON instead, which differs from JCS for numbers such as ``72.0``; they still verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
import rfc8785

from gateway.errors import ProvenanceError
from gateway.provenance.cose import ALG_ED25519, ALG_EDDSA, decode_exact, sign1_with, verify1
from gateway.provenance.didkey import key_for_kid

SIG_TYPE = "ds4h-bundle-sig/v2"
"""The signature payload's type: v2 hashes the Bundle's RFC 8785 form."""
SIG_TYPE_V1 = "ds4h-bundle-sig/v1"
"""Earlier signatures: sorted-key compact JSON as Python writes it (verified, no longer written)."""
SIG_TYPES = frozenset({SIG_TYPE, SIG_TYPE_V1})
ENVELOPE_SYSTEM = "urn:ds4h:envelope"
DID_SYSTEM = "urn:ietf:rfc:3986"
SIG_TYPE_CODING = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.14",
    "display": "Source Signature",
}


def canonical(obj: Any) -> bytes:
    """RFC 8785 (JCS): keys sorted by UTF-16 code units, ECMAScript number forms, minimal escaping, UTF-8."""
    try:
        return bytes(rfc8785.dumps(obj))
    except rfc8785.CanonicalizationError as e:
        raise ValueError(f"not canonicalisable JSON: {e}") from None


def json_body(obj: Any) -> bytes:
    """A Bundle as served or exported: compact UTF-8 JSON. The signature covers the RFC 8785 form of whatever
    JSON a consumer parses, so the body need not be canonical (and Python's encoder is several times faster)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def canonical_v1(obj: Any) -> bytes:
    """What ``ds4h-bundle-sig/v1`` hashed (kept to verify Bundles signed before v2)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _digest(bundle: dict[str, Any], prov_index: int, typ: str = SIG_TYPE) -> bytes:
    sig = bundle["entry"][prov_index]["resource"]["signature"][0]
    data = sig["data"]
    sig["data"] = ""  # in place (a deep copy of a big page costs more than the hash), restored below
    try:
        return hashlib.sha256((canonical if typ == SIG_TYPE else canonical_v1)(bundle)).digest()
    finally:
        sig["data"] = data


def sign_bundle(
    bundle: dict[str, Any], envelopes: Sequence[int], did: str, sign: Callable[[bytes], bytes], when: str
) -> dict[str, Any]:
    """Append the signed Provenance entry to ``bundle`` (in place) and return it."""
    targets = [{"reference": e["fullUrl"]} for e in bundle["entry"]]
    who = {"identifier": {"system": DID_SYSTEM, "value": did}}
    numbers = sorted(set(envelopes))
    prov = {
        "resourceType": "Provenance",
        "target": targets or [{"display": "empty page"}],
        "recorded": when,
        "activity": {"text": "pseudonymised research extract of signed envelopes"},
        "agent": [{"who": who}],
        "entity": [
            {"role": "source", "what": {"identifier": {"system": ENVELOPE_SYSTEM, "value": str(n)}}} for n in numbers
        ],
        "signature": [
            {"type": [SIG_TYPE_CODING], "when": when, "who": who, "sigFormat": "application/cose", "data": ""}
        ],
    }
    bundle["entry"].append({"fullUrl": f"urn:uuid:{bundle['id']}-provenance", "resource": prov})
    idx = len(bundle["entry"]) - 1
    payload = cbor2.dumps(
        {"typ": SIG_TYPE, "sha256": _digest(bundle, idx), "envelopes": numbers, "gw": did}, canonical=True
    )
    cose = sign1_with(payload, sign, did.encode(), ALG_EDDSA)
    prov["signature"][0]["data"] = base64.b64encode(cose).decode()  # type: ignore[index]
    return bundle


@dataclass
class BundleReport:
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    did: str | None = None
    observations: int = 0
    envelopes: list[int] = field(default_factory=list)


def sign_csv(body: bytes, envelopes: Sequence[int], did: str, sign: Callable[[bytes], bytes]) -> str:
    """The detached signature of a CSV extract (``X-DS4H-Signature``, or the export's ``.sig``): base64 of a
    COSE_Sign1 over the body's SHA-256 and the source envelope numbers."""
    payload = cbor2.dumps(
        {"typ": SIG_TYPE, "sha256": hashlib.sha256(body).digest(), "envelopes": sorted(set(envelopes)), "gw": did},
        canonical=True,
    )
    return base64.b64encode(sign1_with(payload, sign, did.encode(), ALG_EDDSA)).decode()


def verify_bundle(bundle: Any, expected_did: str | None = None) -> BundleReport:
    """Check a served Bundle's Provenance signature; never raises for bad content."""
    r = BundleReport()
    try:
        _verify(bundle, expected_did, r)
    except (ProvenanceError, AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
        r.problems.append(f"{type(e).__name__}: {e}" if not isinstance(e, ProvenanceError) else str(e))
    r.ok = not r.problems
    return r


def verify_csv(body: bytes, signature: str, expected_did: str | None = None) -> BundleReport:
    """Check a CSV extract against its detached signature (:func:`sign_csv`); never raises for bad content."""
    r = BundleReport()
    try:
        payload, kid = verify1(
            base64.b64decode(signature, validate=True), key_for_kid, allowed_algs=(ALG_EDDSA, ALG_ED25519)
        )
        r.did = kid.decode()
        obj = decode_exact(payload, "CSV signature payload")
        if not isinstance(obj, dict) or obj.get("typ") not in SIG_TYPES or obj.get("gw") != r.did:
            raise ProvenanceError(f"signature payload is not a {SIG_TYPE} map of its kid")
        if expected_did is not None and r.did != expected_did:
            r.problems.append(f"signed by {r.did}, not by --did {expected_did}")
        if obj["sha256"] != hashlib.sha256(body).digest():
            r.problems.append("the CSV does not match its signature (altered after signing)")
        r.envelopes = list(obj["envelopes"])
    except (ProvenanceError, AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
        r.problems.append(f"{type(e).__name__}: {e}" if not isinstance(e, ProvenanceError) else str(e))
    r.ok = not r.problems
    return r


def _verify(bundle: Any, expected_did: str | None, r: BundleReport) -> None:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ProvenanceError("not a FHIR Bundle")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("resource", {}), dict) for e in entries
    ):
        raise ProvenanceError("Bundle.entry is not a list of entries holding resources")
    provs = [i for i, e in enumerate(entries) if e.get("resource", {}).get("resourceType") == "Provenance"]
    if len(provs) != 1:
        raise ProvenanceError(f"the Bundle must carry exactly one Provenance entry (found {len(provs)})")
    idx = provs[0]
    prov = entries[idx]["resource"]
    sig = prov["signature"][0]
    if sig.get("sigFormat") != "application/cose":
        raise ProvenanceError("Provenance.signature[0].sigFormat is not application/cose")
    cose = base64.b64decode(sig["data"], validate=True)
    payload, kid = verify1(cose, key_for_kid, allowed_algs=(ALG_EDDSA, ALG_ED25519))
    did = kid.decode()
    r.did = did
    obj = decode_exact(payload, "bundle signature payload")
    if not isinstance(obj, dict) or obj.get("typ") not in SIG_TYPES:
        raise ProvenanceError(f"signature payload is not a {SIG_TYPE} map")
    if obj.get("gw") != did:
        raise ProvenanceError("signature payload names another gateway than its kid")
    if expected_did is not None and did != expected_did:
        r.problems.append(f"signed by {did}, not by --did {expected_did}")
    if obj["sha256"] != _digest(bundle, idx, obj["typ"]):
        r.problems.append("the Bundle's content does not match its signature (altered after signing)")
    listed = sorted(int(e["what"]["identifier"]["value"]) for e in prov.get("entity", []))
    r.envelopes = list(obj["envelopes"])
    if listed != r.envelopes:
        r.problems.append(f"Provenance entities {listed} differ from the signed envelope numbers {r.envelopes}")
    r.observations = sum(1 for e in entries if e.get("resource", {}).get("resourceType") == "Observation")
    targets = {t.get("reference") for t in prov.get("target", [])}
    obs_urls = {e.get("fullUrl") for e in entries if e.get("resource", {}).get("resourceType") == "Observation"}
    if obs_urls - targets:
        r.problems.append("Provenance.target does not name every Observation")
