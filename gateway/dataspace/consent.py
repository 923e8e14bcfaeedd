"""Importing consent: FHIR R4 ``Consent`` resources and opt-out lists → :class:`ConsentRecord` s.

FHIR mapping (docs/consent.md#fhir-consent):

- a file holds one ``Consent``, a ``Bundle`` of them (``entry[].resource``), a JSON array, or NDJSON;
- ``id`` is required (a re-import of the same id replaces what it imported before);
- ``status``: kept as given; only ``active`` counts (``draft``, ``proposed``, ``inactive``, ``rejected``,
  ``entered-in-error`` are stored but never make a reading eligible; re-importing a Consent as ``inactive``
  withdraws it);
- ``scope`` must be ``research`` (system ``http://terminology.hl7.org/CodeSystem/consentscope``); Consents of
  another scope are skipped and listed;
- ``patient``: ``identifier.value`` when present, else the id of ``reference`` ``Patient/<id>``: the same string
  ``ds4h-gateway patients bind`` takes;
- ``provision.type``: ``permit`` or ``deny`` (required); ``provision.period`` start/end (either may be missing:
  open); ``provision.purpose``: when given, at least one research purpose (v3-ActReason ``HRESCH``,
  ``CLINTRCH``), else the provision is not a research provision and skipped; nested ``provision.provision`` items
  become records of their own (exceptions: their own type and period; purpose inherited when absent).

Bad input raises :class:`ConsentError` naming the resource (``Consent/<id>`` or its position) and the field.
Opt-out list: one patient id per line (``#`` comments): each is a ``deny`` for research without end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.dataspace.patients import RESEARCH, ConsentRecord
from gateway.errors import GatewayError

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESEARCH_PURPOSES = frozenset({"HRESCH", "CLINTRCH"})
STATUSES = frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})


class ConsentError(GatewayError):
    """A consent file cannot be imported; the message names the resource and the field."""


@dataclass
class ImportResult:
    records: list[ConsentRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Resources or provisions not imported, and why (not research)."""


def _resources(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConsentError(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConsentError(f"{path}: not UTF-8 text") from e
    try:
        docs: list[Any] = [json.loads(text)]
    except json.JSONDecodeError as first:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ConsentError(f"{path}: not JSON (nor NDJSON): {first}") from None
    n = 0
    for doc in docs:
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            n += 1
            where = f"{path} resource {n}"
            if isinstance(item, dict) and item.get("resourceType") == "Bundle":
                entries = item.get("entry", [])
                if not isinstance(entries, list):
                    raise ConsentError(f"{where} (Bundle): entry must be an array")
                for k, ent in enumerate(entries):
                    res = ent.get("resource") if isinstance(ent, dict) else None
                    yield f"{where} (Bundle) entry {k}", res
            else:
                yield where, item


def _time(where: str, name: str, value: Any) -> int:
    if not isinstance(value, str):
        raise ConsentError(f"{where}: {name} must be a FHIR dateTime string")
    text = value.strip()
    try:
        if len(text) == 4:
            dt = datetime(int(text), 1, 1, tzinfo=UTC)
        elif len(text) == 7:
            dt = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                if "T" in text:
                    raise ConsentError(f"{where}: {name} {value!r} has a time but no time zone")
                dt = dt.replace(tzinfo=UTC)
    except ValueError:
        raise ConsentError(f"{where}: {name} {value!r} is not a FHIR dateTime") from None
    return int(dt.timestamp() * 1_000_000) * 1000


def _codings(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, dict):
        c = obj.get("coding", [])
        return [x for x in c if isinstance(x, dict)] if isinstance(c, list) else []
    return []


def _patient(where: str, res: dict[str, Any]) -> str:
    p = res.get("patient")
    if not isinstance(p, dict):
        raise ConsentError(f"{where}: patient is missing (a Reference with identifier or reference)")
    ident = p.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str) and ident["value"].strip():
        return str(ident["value"]).strip()
    ref = p.get("reference")
    if isinstance(ref, str) and ref.startswith("Patient/") and len(ref) > len("Patient/"):
        return ref[len("Patient/") :]
    raise ConsentError(f"{where}: patient has neither identifier.value nor a reference 'Patient/<id>'")


def _purposes(where: str, prov: dict[str, Any]) -> list[tuple[str, str]] | None:
    raw = prov.get("purpose")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ConsentError(f"{where}: provision.purpose must be an array of Coding")
    return [(str(x.get("system", "")), str(x.get("code", ""))) for x in raw]


def _is_research(purposes: list[tuple[str, str]]) -> bool:
    return any(code in RESEARCH_PURPOSES and system in ("", ACT_REASON) for system, code in purposes)


def _provisions(
    where: str,
    prov: Any,
    inherited: list[tuple[str, str]] | None,
    path: str,
) -> Iterator[tuple[str, str, int, int | None, list[tuple[str, str]] | None]]:
    if not isinstance(prov, dict):
        raise ConsentError(f"{where}: {path} must be an object")
    typ = prov.get("type")
    if typ not in ("permit", "deny"):
        raise ConsentError(f"{where}: {path}.type must be 'permit' or 'deny' (got {typ!r})")
    period = prov.get("period", {})
    if not isinstance(period, dict):
        raise ConsentError(f"{where}: {path}.period must be a Period")
    start = _time(where, f"{path}.period.start", period["start"]) if "start" in period else -(1 << 63)
    end = _time(where, f"{path}.period.end", period["end"]) if "end" in period else None
    if end is not None and end <= start:
        raise ConsentError(f"{where}: {path}.period.end is not after its start")
    purposes = _purposes(where, prov)
    if purposes is None:
        purposes = inherited
    yield path, typ, start, end, purposes
    nested = prov.get("provision", [])
    if not isinstance(nested, list):
        raise ConsentError(f"{where}: {path}.provision must be an array")
    for k, sub in enumerate(nested):
        yield from _provisions(where, sub, purposes, f"{path}.provision[{k}]")


def parse_consent(where: str, res: Any) -> tuple[list[ConsentRecord], list[str]]:
    if not isinstance(res, dict):
        raise ConsentError(f"{where}: not a JSON object")
    if res.get("resourceType") != "Consent":
        raise ConsentError(f"{where}: resourceType is {res.get('resourceType')!r}, not 'Consent'")
    rid = res.get("id")
    if not isinstance(rid, str) or not rid:
        raise ConsentError(f"{where} (Consent): id is missing")
    name = f"Consent/{rid}"
    status = res.get("status")
    if status not in STATUSES:
        raise ConsentError(f"{name}: status {status!r} is not one of {', '.join(sorted(STATUSES))}")
    scope = _codings(res.get("scope"))
    if not scope:
        raise ConsentError(f"{name}: scope is missing (a CodeableConcept; research consents use 'research')")
    if not any(c.get("code") == "research" and c.get("system", SCOPE_SYSTEM) == SCOPE_SYSTEM for c in scope):
        return [], [f"{name}: scope {scope[0].get('code')!r} is not research"]
    patient = _patient(name, res)
    if "provision" not in res:
        raise ConsentError(f"{name}: provision is missing (type permit/deny, period, purpose)")
    records: list[ConsentRecord] = []
    skipped: list[str] = []
    for path, typ, start, end, purposes in _provisions(name, res["provision"], None, "provision"):
        if purposes is not None and not _is_research(purposes):
            codes = ", ".join(c for _, c in purposes) or "none"
            skipped.append(f"{name}: {path}: purpose {codes} is not a research purpose (HRESCH, CLINTRCH)")
            continue
        records.append(ConsentRecord(patient, typ, start, end, str(status), "fhir", f"{name}#{path}", RESEARCH))
    return records, skipped


def load_fhir(path: Path) -> ImportResult:
    out = ImportResult()
    for where, res in _resources(path):
        records, skipped = parse_consent(where, res)
        out.records += records
        out.skipped += skipped
    return out


def load_opt_out(path: Path) -> ImportResult:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConsentError(f"{path}: cannot read: {e.strerror or e}") from e
    out = ImportResult()
    for n, line in enumerate(lines, 1):
        pid = line.split("#", 1)[0].strip()
        if not pid:
            continue
        if len(pid) > 256:
            raise ConsentError(f"{path} line {n}: patient id longer than 256 characters")
        out.records.append(ConsentRecord(pid, "deny", -(1 << 63), None, "active", "opt-out", f"opt-out:{pid}"))
    return out
