"""FHIR source endpoint for an EDC ``HttpData`` asset: ``GET /dataspace/v1/observations`` (docs/consent.md#endpoint).

Parameters: ``patient`` (a pseudonym, required), ``from`` / ``to`` (FHIR dateTime or ns since the epoch; default
everything), ``kind`` (comma-separated, see ``gateway.dataspace.observations.KINDS``; default all), ``_count``
(page size, default ``research.page_size``, at most ``research.max_page_size``), ``_offset`` (from the ``next``
link). ``Accept: text/csv`` (or ``_format=csv``) answers CSV with the signature in ``X-DS4H-Signature``; else
``application/fhir+json``: a ``searchset`` Bundle of Observations plus the signed Provenance
(gateway.dataspace.bundlesig). The bearer token is the research token (``research.endpoint_token_file``), not
the control token: wrong or missing → 401. Consent is re-checked on every request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.dataspace.bundlesig import json_body, sign_bundle, sign_csv
from gateway.dataspace.fhir import bundle, iso, to_csv
from gateway.dataspace.observations import KINDS, Query, QueryError, select
from gateway.dataspace.patients import FOREVER, ConsentDb
from gateway.dataspace.pseudonym import Pseudonymiser
from gateway.errors import GatewayError, StateError

log = logging.getLogger(__name__)

PATH = "/dataspace/v1/observations"
FHIR_JSON = "application/fhir+json"


def parse_when(text: str, what: str) -> int:
    from datetime import UTC, datetime

    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{what}: {text!r} is neither a FHIR dateTime nor ns since the epoch") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


@dataclass(frozen=True, slots=True)
class Signer:
    did: str
    sign: Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    content_type: str
    headers: dict[str, str]
    count: int


def make_page(
    state_dir: Path,
    pseudo: Pseudonymiser,
    signer: Signer,
    q: Query,
    *,
    offset: int,
    count: int,
    fmt: str,
    base_url: str,
) -> Page:
    """One page of the query, signed (blocking: run it in a thread)."""
    with ConsentDb.open(state_dir, readonly=True) as db:
        page, total = select(state_dir, db, pseudo, q, offset, count)
    now = time.time_ns()
    if fmt == "csv":
        body = to_csv(page).encode()
        sig = sign_csv(body, [i.envelope_n for i in page], signer.did, signer.sign)
        return Page(body, "text/csv", {"X-DS4H-Signature": sig, "X-Total-Count": str(total)}, len(page))

    def url(off: int) -> str:
        params: dict[str, str] = {"patient": q.pseudonym, "_count": str(count), "_offset": str(off)}
        if q.since_ns:
            params["from"] = str(q.since_ns)
        params["to"] = str(q.until_ns)
        if q.kinds:
            params["kind"] = ",".join(q.kinds)
        return f"{base_url}{PATH}?{urllib.parse.urlencode(params)}"

    nxt = url(offset + count) if offset + count < total else None
    b = bundle(page, total=total, self_url=url(offset), next_url=nxt, timestamp_ns=now)
    sign_bundle(b, [i.envelope_n for i in page], signer.did, signer.sign, iso(now))
    return Page(json_body(b), FHIR_JSON, {}, len(page))


class ObservationEndpoint:
    def __init__(
        self,
        state_dir: Path,
        pseudo: Pseudonymiser,
        signer: Signer,
        token: str,
        *,
        page_size: int,
        max_page_size: int,
    ) -> None:
        self._state_dir = state_dir
        self._pseudo = pseudo
        self._signer = signer
        self._token = token
        self._page_size = page_size
        self._max = max_page_size
        self.served = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.observations)]

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode())

    async def observations(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response(
                _outcome("security", "missing or wrong bearer token"),
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
                content_type=FHIR_JSON,
            )
        try:
            q, offset, count, fmt = self._parse(request)
        except QueryError as e:
            return web.json_response(_outcome("invalid", str(e)), status=400, content_type=FHIR_JSON)
        host = request.host
        base = f"{request.scheme}://{host}"
        try:
            page = await asyncio.to_thread(
                make_page,
                self._state_dir,
                self._pseudo,
                self._signer,
                q,
                offset=offset,
                count=count,
                fmt=fmt,
                base_url=base,
            )
        except StateError as e:
            log.warning("research endpoint: %s", e)
            return web.json_response(_outcome("exception", "research state unavailable"), status=503)
        self.served += page.count
        return web.Response(body=page.body, headers={"Content-Type": page.content_type, **page.headers})

    def _parse(self, request: web.Request) -> tuple[Query, int, int, str]:
        p = request.query
        pseudonym = p.get("patient", "").strip()
        if not pseudonym:
            raise QueryError("patient (a pseudonym) is required")
        since = parse_when(p["from"], "from") if "from" in p else 0
        until = parse_when(p["to"], "to") if "to" in p else FOREVER
        if until < since:
            raise QueryError("to is before from")
        kinds = tuple(k.strip() for k in p.get("kind", "").split(",") if k.strip())
        for k in kinds:
            if k not in KINDS:
                raise QueryError(f"kind {k!r} is not one of {', '.join(KINDS)}")
        try:
            count = int(p.get("_count", self._page_size))
            offset = int(p.get("_offset", 0))
        except ValueError:
            raise QueryError("_count and _offset must be integers") from None
        if not 1 <= count <= self._max:
            raise QueryError(f"_count must be in 1…{self._max}")
        if offset < 0:
            raise QueryError("_offset must be ≥ 0")
        fmt = "csv" if p.get("_format") == "csv" or "text/csv" in request.headers.get("Accept", "") else "fhir"
        q = Query(pseudonym, since, until, kinds)
        q.check_format(fmt)
        return q, offset, count, fmt


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def load_token(path: Path) -> str:
    from gateway.state.files import load_or_create_token

    try:
        return load_or_create_token(path)
    except OSError as e:
        raise GatewayError(f"research endpoint token {path}: {e}") from e
