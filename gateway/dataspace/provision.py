"""Provision the gateway's offer in a connector (idempotent) and list what the connector holds.

For each resource: ``POST`` → 200 created; 409 (it exists) → ``PUT`` → 204 updated. A ``PUT`` answered
404 means the resource was deleted between the two requests: it is created again (once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.dataspace import ConnectorError
from gateway.dataspace.client import EdcClient
from gateway.dataspace.edc import (
    COLLECTIONS,
    KIND_NAMES,
    ApiVersion,
    Kind,
    Resource,
    query_request,
    validate_policy_request,
)

Progress = Callable[[str], None]
PAGE = 50
MAX_PAGES = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    id: str
    action: Literal["created", "updated"]
    statuses: tuple[int, ...]
    """The HTTP statuses of the requests made, in order (e.g. ``(409, 204)``)."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "action": self.action, "statuses": list(self.statuses)}


async def provision_one(client: EdcClient, res: Resource, progress: Progress) -> Outcome:
    statuses: list[int] = []
    for _attempt in range(2):
        answer = await client.send(res.create)
        statuses.append(answer.status)
        if answer.status == 200:
            progress(f"{res.name}: {res.create.method} {res.create.path} → 200 created")
            return Outcome(res.kind, res.id, "created", tuple(statuses))
        if answer.status != 409:
            raise ConnectorError(
                f"{res.name}: {res.create.method} {client.url}{res.create.path}: HTTP {answer.status}: "
                f"{answer.excerpt()}",
                answer.status,
            )
        progress(
            f"{res.name}: {res.create.method} {res.create.path} → 409 exists; {res.update.method} {res.update.path}"
        )
        answer = await client.send(res.update)
        statuses.append(answer.status)
        if answer.status in (200, 204):
            progress(f"{res.name}: {res.update.method} {res.update.path} → {answer.status} updated")
            return Outcome(res.kind, res.id, "updated", tuple(statuses))
        if answer.status != 404:
            raise ConnectorError(
                f"{res.name}: {res.update.method} {client.url}{res.update.path}: HTTP {answer.status}: "
                f"{answer.excerpt()}",
                answer.status,
            )
        progress(f"{res.name}: deleted meanwhile (404 on update); creating it again")
    raise ConnectorError(f"{res.name}: the connector keeps answering 409 to POST and 404 to PUT", 404)


async def provision(client: EdcClient, resources: Iterable[Resource], progress: Progress) -> list[Outcome]:
    """Create or update every resource, in order; stops at the first error (what was done stays done)."""
    return [await provision_one(client, res, progress) for res in resources]


async def list_kind(client: EdcClient, api: ApiVersion, kind: Kind) -> list[dict[str, Any]]:
    """Everything of one kind the connector holds (paged ``POST <collection>/request``)."""
    items: list[dict[str, Any]] = []
    for page in range(MAX_PAGES):
        req = query_request(api, kind, page * PAGE, PAGE)
        answer = await client.expect(req, 200)
        if not isinstance(answer.body, list):
            raise ConnectorError(f"{req.method} {client.url}{req.path}: expected a JSON array, got {answer.excerpt()}")
        items.extend(x for x in answer.body if isinstance(x, dict))
        if len(answer.body) < PAGE:
            break
    return items


def item_id(item: dict[str, Any]) -> str | None:
    rid = item.get("@id", item.get("id"))
    return rid if isinstance(rid, str) else None


async def connector_status(client: EdcClient, api: ApiVersion, ids: dict[Kind, str]) -> dict[str, Any]:
    """Per collection: the ids the connector holds and whether the gateway's own resource is among them."""
    out: dict[str, Any] = {}
    for kind in ("asset", "policy", "contract"):
        held = sorted(rid for rid in (item_id(x) for x in await list_kind(client, api, kind)) if rid is not None)
        out[COLLECTIONS[kind]] = {
            "what": KIND_NAMES[kind],
            "gateway_id": ids[kind],
            "present": ids[kind] in held,
            "count": len(held),
            "ids": held,
        }
    return out


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """The connector's own validation of the purpose policy (``…/validate``)."""

    valid: bool
    errors: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "errors": list(self.errors)}


async def check_policy(client: EdcClient, api: ApiVersion, policy_id: str) -> PolicyCheck:
    """Ask the connector whether it can evaluate the policy. EDC reports a left operand that no extension
    binds (``dpv:hasPurpose`` without the purpose extension): such a constraint is silently dropped at
    negotiation, so the purpose restriction would not be enforced by the connector."""
    answer = await client.expect(validate_policy_request(api, policy_id), 200)
    body = answer.body if isinstance(answer.body, dict) else {}
    valid = body.get("isValid", body.get("https://w3id.org/edc/v0.0.1/ns/isValid"))
    errors = body.get("errors", [])
    return PolicyCheck(valid is True, tuple(str(e) for e in errors) if isinstance(errors, list) else (str(errors),))
