"""A loopback test double of an EDC connector's Management API (v3 or v4), strict about the specs.

Every request is validated against the vendored specs (:mod:`tests.edc_specs`); a request that does
not conform is answered 400 *and* recorded in :attr:`EdcDouble.violations`, which tests assert to be
empty. Every answer it gives is validated too. It answers as EDC does: ``X-Api-Key`` wrong or missing
→ 401; ``POST <collection>`` → 200 ``IdResponse``, or 409 when the id exists; ``PUT`` → 204, or 404 when
it does not; ``GET``/``DELETE <collection>/{id}`` → 200/204 or 404; ``POST <collection>/request`` → 200
with the page asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.edc_specs import request_errors, response_errors
from tests.threadloop import serve_in_thread

COLLECTIONS = ("assets", "policydefinitions", "contractdefinitions")
_TYPES = {"assets": "Asset", "policydefinitions": "PolicyDefinition", "contractdefinitions": "ContractDefinition"}
_ROUTE = re.compile(r"^/(v3|v4)/(assets|policydefinitions|contractdefinitions)(?:/([^/]+))?$")
_VALIDATE = re.compile(r"^/(v3|v4)/policydefinitions/([^/]+)/validate$")
V3_RESPONSE_CONTEXT = ["https://w3id.org/edc/connector/management/v0.0.1"]
V4_CONTEXT = ["https://w3id.org/edc/connector/management/v2"]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    body: Any
    api_key: str | None


class EdcDouble:
    def __init__(self, api: str = "v4", api_key: str = "test-api-key") -> None:
        self.api = api
        self.api_key = api_key
        self.store: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
        self.created_at: dict[tuple[str, str], int] = {}
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.delay_s = 0.0
        self.bound_left_operands: set[str] = set()
        """Left operands an extension of this connector binds (none, as in a stock EDC)."""
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/management"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """Serve on a private event loop in a daemon thread; yield its URL (for code that runs its own loop)."""
        with serve_in_thread(self.start, self.stop, "edc-double") as url:
            yield url

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            return copy.deepcopy(self.store)

    # --- handling -------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        path = request.path.removeprefix("/management")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._answer(request.method, path, None, 400, [{"message": "not JSON", "type": "InvalidRequest"}])
        key = request.headers.get("X-Api-Key")
        if key != self.api_key:
            with self._lock:
                self.seen.append(Seen(request.method, path, 401, body, key))
            return web.json_response(
                [{"message": "Request could not be authenticated", "type": "Unauthorized"}], status=401
            )
        errors = request_errors(self.api, request.method, path, body)
        if errors:
            with self._lock:
                self.violations.extend(errors)
            return self._answer(
                request.method, path, body, 400, [{"message": e, "type": "ValidationFailure"} for e in errors]
            )
        status, answer = self._apply(request.method, path, body)
        return self._answer(request.method, path, body, status, answer)

    def _answer(self, method: str, path: str, body: Any, status: int, answer: Any) -> web.StreamResponse:
        problems = response_errors(self.api, method, path, status, answer, body)
        with self._lock:
            self.violations.extend(f"(the double's own answer) {p}" for p in problems)
            self.seen.append(Seen(method, path, status, body, self.api_key))
        if answer is None:
            return web.Response(status=status)
        return web.json_response(answer, status=status)

    def _context(self) -> Any:
        return V3_RESPONSE_CONTEXT if self.api == "v3" else V4_CONTEXT

    def _error(self, message: str, kind: str) -> list[dict[str, str]]:
        return [{"message": message, "type": kind}]

    def _validate(self, api: str, rid: str) -> tuple[int, Any]:
        """EDC's policy validation: every left operand must be bound (by an extension) to a policy scope."""
        with self._lock:
            held = self.store["policydefinitions"].get(rid)
        if held is None:
            return 404, {"message": f"{rid} not found", "type": "ObjectNotFound"}
        errors = [
            f"leftOperand '{c['leftOperand']}' is not bound to any scopes"
            for perm in held["policy"].get("permission", [])
            for c in perm.get("constraint", [])
            if c.get("leftOperand") not in self.bound_left_operands
        ]
        result: dict[str, Any] = {"isValid": not errors, "errors": errors}
        if api == "v4":
            result = {"@context": V4_CONTEXT, "@type": "PolicyValidationResult", **result}
        return 200, result

    def _apply(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        v = _VALIDATE.match(path)
        if v is not None and method == "POST" and v.group(1) == self.api:
            return self._validate(v.group(1), v.group(2))
        m = _ROUTE.match(path)
        if m is None or m.group(1) != self.api:
            return 404, self._error(f"no resource at {path}", "NotFound")
        coll, sub = m.group(2), m.group(3)
        with self._lock:
            held = self.store[coll]
            if sub == "request" and method == "POST":
                offset, limit = int(body.get("offset", 0)), int(body.get("limit", 50))
                items = [self._output(coll, rid) for rid in sorted(held)][offset : offset + limit]
                return 200, items
            if sub is None and method == "POST":
                rid = body.get("@id") or f"generated-{len(held) + 1}"
                if rid in held:
                    return 409, self._error(
                        f"Object of type {_TYPES[coll]} with ID={rid} already exists", "ObjectConflict"
                    )
                held[rid] = copy.deepcopy(body)
                self.created_at[(coll, rid)] = int(time.time() * 1000)
                return 200, {
                    "@context": self._context(),
                    "@type": "IdResponse",
                    "@id": rid,
                    "createdAt": self.created_at[(coll, rid)],
                }
            if method == "PUT" and (sub is None) == (coll != "policydefinitions"):
                rid = sub if sub is not None else body.get("@id")
                if rid not in held:
                    return 404, None
                held[rid] = copy.deepcopy(body)
                return 204, None
            if sub is not None and method == "GET":
                return (
                    (200, self._output(coll, sub))
                    if sub in held
                    else (404, self._error(f"{sub} not found", "ObjectNotFound"))
                )
            if sub is not None and method == "DELETE":
                if sub not in held:
                    return 404, self._error(f"{sub} not found", "ObjectNotFound")
                del held[sub]
                return 204, None
        return 405, self._error(f"{method} {path} is not supported", "MethodNotAllowed")

    def _output(self, coll: str, rid: str) -> dict[str, Any]:
        item = {k: v for k, v in self.store[coll][rid].items() if k != "@context"}
        item["@id"] = rid
        item["createdAt"] = self.created_at[(coll, rid)]
        if self.api == "v4":
            item["@context"] = V4_CONTEXT
        return item
