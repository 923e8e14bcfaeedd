"""The Bundle signature hashes the RFC 8785 (JCS) form (gateway/dataspace/bundlesig.py, docs/consent.md#signature).

Any JCS implementation must reach the same hash, so a consumer can check a served Bundle with its own tools and
after any re-serialisation (pretty-printing, `72.0` written as `72`, keys reordered). Bundles signed with the
earlier scheme (v1: Python's sorted-key JSON) still verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataspace.bundlesig import SIG_TYPE, SIG_TYPE_V1, canonical, canonical_v1, sign_bundle, verify_bundle
from gateway.provenance import GatewayIdentity
from gateway.provenance.cose import ALG_EDDSA, sign1_with

# the JCS sample of the specification's authors (cyberphone/json-canonicalization), and RFC 8785 number forms
JCS_INPUT = (
    '{"numbers": [1E30, 4.50, 6, 2e-3, 0.000000000000000000000000001],'
    ' "escaping": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "other": [null, true, false]}'
)
JCS_OUTPUT = (
    '{"escaping":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/","numbers":[1e+30,4.5,6,0.002,1e-27],"other":[null,true,false]}'
)
NUMBERS = [
    (0.0, "0"),
    (-0.0, "0"),
    (72.0, "72"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (9007199254740992.0, "9007199254740992"),
    (295147905179352825856.0, "295147905179352830000"),
    (1e21, "1e+21"),
    (1e23, "1e+23"),
    (9.999999999999997e-7, "9.999999999999997e-7"),
    (0.000001, "0.000001"),
    (333333333.3333333, "333333333.3333333"),
    (-0.0000033333333333333333, "-0.0000033333333333333333"),
]


def test_canonical_is_rfc_8785() -> None:
    assert canonical(json.loads(JCS_INPUT)) == JCS_OUTPUT.encode()
    for value, text in NUMBERS:
        assert canonical([value]) == f"[{text}]".encode(), value
    assert canonical({"b": 1, "a": {"é": 1, "e": 2}}) == '{"a":{"e":2,"é":1},"b":1}'.encode()


def _bundle(values: list[float]) -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"urn:uuid:{i}",
            "resource": {"resourceType": "Observation", "id": str(i), "valueQuantity": {"value": v, "code": "/min"}},
        }
        for i, v in enumerate(values)
    ]
    return {"resourceType": "Bundle", "id": "b1", "type": "searchset", "total": len(values), "entry": entries}


def test_a_signed_bundle_survives_any_re_serialisation() -> None:
    gw = GatewayIdentity.generate()
    b = sign_bundle(_bundle([72.0, 98.5, 1e-5]), [3, 4], gw.did, gw.sign, "2026-12-01T08:00:00Z")
    text = json.dumps(b)
    assert '"value": 72.0' in text
    for form in (text, json.dumps(json.loads(text), indent=2, sort_keys=True), text.replace("72.0", "72")):
        r = verify_bundle(json.loads(form), gw.did)
        assert r.ok, r.problems
        assert r.envelopes == [3, 4] and r.observations == 3
    altered = json.loads(text.replace("98.5", "98.6"))
    assert not verify_bundle(altered).ok
    # the hash a JCS library computes independently
    cose = base64.b64decode(b["entry"][-1]["resource"]["signature"][0]["data"])
    payload = cbor2.loads(cbor2.loads(cose[1:])[2])
    assert payload["typ"] == SIG_TYPE
    blank = json.loads(text)
    blank["entry"][-1]["resource"]["signature"][0]["data"] = ""
    assert payload["sha256"] == hashlib.sha256(canonical(blank)).digest()


def test_a_bundle_signed_with_the_first_scheme_still_verifies() -> None:
    gw = GatewayIdentity.generate()
    b = sign_bundle(_bundle([72.0]), [7], gw.did, gw.sign, "2026-12-01T08:00:00Z")
    sig = b["entry"][-1]["resource"]["signature"][0]
    sig["data"] = ""
    digest = hashlib.sha256(canonical_v1(b)).digest()
    payload = cbor2.dumps({"typ": SIG_TYPE_V1, "sha256": digest, "envelopes": [7], "gw": gw.did}, canonical=True)
    sig["data"] = base64.b64encode(sign1_with(payload, gw.sign, gw.did.encode(), ALG_EDDSA)).decode()
    assert verify_bundle(json.loads(json.dumps(b)), gw.did).ok
    b["entry"][0]["resource"]["valueQuantity"]["value"] = 73.0
    assert not verify_bundle(b).ok


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=8))
def test_any_finite_values_sign_and_verify_after_a_round_trip(values: list[float]) -> None:
    gw = GatewayIdentity.generate()
    b = sign_bundle(_bundle(values), [1], gw.did, gw.sign, "2026-12-01T08:00:00Z")
    assert verify_bundle(json.loads(json.dumps(b)), gw.did).ok
