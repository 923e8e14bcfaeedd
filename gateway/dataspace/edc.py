"""EDC Management API requests of the gateway's dataspace offer: pure data, no I/O.

Three resources make the offer (docs/dataspace.md):

- the **asset**: an ``HttpData`` data address pointing at the gateway's FHIR Observation endpoint
  (``GET <public_url>/dataspace/v1/observations?patient=…&from=…&to=…&kind=…``) with
  ``proxyQueryParams`` on, and the auth header's value taken from the connector's vault by secret
  name; its properties name the gateway's did and credential URL;
- a **policy definition**: permission ``use`` constrained by ``dpv:hasPurpose eq dpv:ScientificResearch``;
- a **contract definition** offering the asset under that policy (access and contract policy).

Each resource is created with ``POST <collection>`` and, when the connector answers 409 (it exists),
updated with ``PUT``: ``PUT <collection>`` for assets and contract definitions, ``PUT <collection>/{id}``
for policy definitions. v3 bodies use an object ``@context`` with ``@vocab`` = the EDC namespace; v4
bodies use the management context v2 (an array of strings) and an explicit ``@type``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

ApiVersion = Literal["v3", "v4"]
Kind = Literal["asset", "policy", "contract"]

EDC_NS = "https://w3id.org/edc/v0.0.1/ns/"
MANAGEMENT_CONTEXT_V2 = "https://w3id.org/edc/connector/management/v2"
ODRL_NS = "http://www.w3.org/ns/odrl/2/"
ODRL_CONTEXT = "http://www.w3.org/ns/odrl.jsonld"
DCT_NS = "http://purl.org/dc/terms/"
DPV_NS = "https://w3id.org/dpv#"
DPV_HAS_PURPOSE = DPV_NS + "hasPurpose"
"""The purpose constraint's left operand (``dpv:hasPurpose``), as the full IRI the connector binds."""
DPV_SCIENTIFIC_RESEARCH = DPV_NS + "ScientificResearch"
DS4H_NS = "https://w3id.org/ds4h/gateway/v1#"
"""The project's own property names on the asset (gateway did, credential URL)."""
FHIR_OBSERVATION_PROFILE = "http://hl7.org/fhir/R4/observation.html"

OBSERVATIONS_PATH = "/dataspace/v1/observations"
CREDENTIAL_PATH = "/dataspace/v1/credential"

COLLECTIONS: dict[Kind, str] = {"asset": "assets", "policy": "policydefinitions", "contract": "contractdefinitions"}
TYPES: dict[Kind, str] = {"asset": "Asset", "policy": "PolicyDefinition", "contract": "ContractDefinition"}
KIND_NAMES: dict[Kind, str] = {"asset": "asset", "policy": "policy definition", "contract": "contract definition"}


def default_ids(gateway_name: str) -> dict[Kind, str]:
    """Asset, policy and contract ids derived from the gateway name (``ward-7`` → ``ward-7-observations`` …)."""
    base = re.sub(r"[^a-z0-9-]+", "-", gateway_name.lower()).strip("-") or "ds4h-gateway"
    return {"asset": f"{base}-observations", "policy": f"{base}-research-purpose", "contract": f"{base}-research"}


@dataclass(frozen=True, slots=True)
class Offer:
    """What the gateway offers in the dataspace: everything the three request bodies are made of."""

    gateway_name: str
    gateway_did: str
    public_url: str
    """Public base URL of the gateway (no trailing slash)."""
    vault_secret: str
    auth_header: str = "Authorization"
    ids: dict[Kind, str] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        return self.public_url + OBSERVATIONS_PATH

    @property
    def credential_url(self) -> str:
        return self.public_url + CREDENTIAL_PATH


@dataclass(frozen=True, slots=True)
class EdcRequest:
    """One Management API request: method, path below the management URL, JSON body."""

    method: str
    path: str
    body: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "body": self.body}


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource of the offer and the two requests that create or update it."""

    kind: Kind
    id: str
    create: EdcRequest
    update: EdcRequest

    @property
    def name(self) -> str:
        return f"{KIND_NAMES[self.kind]} {self.id}"


def _context(api: ApiVersion) -> Any:
    return {"@vocab": EDC_NS} if api == "v3" else [MANAGEMENT_CONTEXT_V2]


def asset_body(offer: Offer, api: ApiVersion) -> dict[str, Any]:
    properties = {
        "name": f"{offer.gateway_name}: research observations",
        "description": "Consented, pseudonymised device readings as FHIR R4 Observations (a Bundle); query "
        "parameters patient (pseudonym), from, to (ISO 8601) and kind are passed through to the gateway.",
        "contenttype": "application/fhir+json",
        DCT_NS + "conformsTo": FHIR_OBSERVATION_PROFILE,
        DS4H_NS + "gatewayDid": offer.gateway_did,
        DS4H_NS + "gatewayCredential": offer.credential_url,
    }
    data_address = {
        "@type": "DataAddress",
        "type": "HttpData",
        "baseUrl": offer.endpoint_url,
        "proxyQueryParams": "true",
        "proxyPath": "false",
        "proxyMethod": "false",
        "proxyBody": "false",
        "authKey": offer.auth_header,
        "secretName": offer.vault_secret,
    }
    return {
        "@context": _context(api),
        "@type": "Asset",
        "@id": offer.ids["asset"],
        "properties": properties,
        "dataAddress": data_address,
    }


def purpose_constraint() -> dict[str, Any]:
    return {"leftOperand": DPV_HAS_PURPOSE, "operator": "eq", "rightOperand": DPV_SCIENTIFIC_RESEARCH}


def policy_body(offer: Offer, api: ApiVersion) -> dict[str, Any]:
    permission = {"action": "use", "constraint": [purpose_constraint()]}
    policy: dict[str, Any] = {"@type": "Set", "permission": [permission]}
    context: Any = _context(api)
    if api == "v3":
        context = {**context, "odrl": ODRL_NS}
        policy = {"@context": ODRL_CONTEXT, **policy}
    return {"@context": context, "@type": "PolicyDefinition", "@id": offer.ids["policy"], "policy": policy}


def contract_body(offer: Offer, api: ApiVersion) -> dict[str, Any]:
    return {
        "@context": _context(api),
        "@type": "ContractDefinition",
        "@id": offer.ids["contract"],
        "accessPolicyId": offer.ids["policy"],
        "contractPolicyId": offer.ids["policy"],
        "assetsSelector": [
            {"@type": "Criterion", "operandLeft": EDC_NS + "id", "operator": "=", "operandRight": offer.ids["asset"]}
        ],
    }


_BODIES = {"asset": asset_body, "policy": policy_body, "contract": contract_body}


def collection_path(api: ApiVersion, kind: Kind) -> str:
    return f"/{api}/{COLLECTIONS[kind]}"


def update_path(api: ApiVersion, kind: Kind, resource_id: str) -> str:
    """Where an existing resource is replaced: by id for policy definitions, the collection for the others."""
    base = collection_path(api, kind)
    return f"{base}/{resource_id}" if kind == "policy" else base


def plan(offer: Offer, api: ApiVersion) -> list[Resource]:
    """The offer's resources in the order they are provisioned: asset, policy definition, contract definition."""
    out = []
    for kind in ("asset", "policy", "contract"):
        body = _BODIES[kind](offer, api)
        rid = offer.ids[kind]
        out.append(
            Resource(
                kind,
                rid,
                EdcRequest("POST", collection_path(api, kind), body),
                EdcRequest("PUT", update_path(api, kind, rid), body),
            )
        )
    return out


def query_request(api: ApiVersion, kind: Kind, offset: int = 0, limit: int = 50) -> EdcRequest:
    """``POST <collection>/request``: one page of what the connector holds."""
    body = {"@context": _context(api), "@type": "QuerySpec", "offset": offset, "limit": limit}
    return EdcRequest("POST", collection_path(api, kind) + "/request", body)


def validate_policy_request(api: ApiVersion, policy_id: str) -> EdcRequest:
    """``POST <policydefinitions>/{id}/validate``: does the connector bind every left operand of the policy?"""
    return EdcRequest("POST", f"{collection_path(api, 'policy')}/{policy_id}/validate", None)
