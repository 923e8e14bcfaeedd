"""The local control API (loopback HTTP): what the CLI, the demo view and local sources talk to.

- ``GET /healthz`` — liveness: accepting data, or starting/stopping (no token).
- ``GET /readyz`` — readiness: outbox writable, sinks delivering or buffering within the disk budget; 503 with
  the reasons otherwise (no token).
- ``GET /metrics`` — Prometheus metrics (no token; loopback only).
- ``GET /api/v1/stats`` — counters, outbox depth per sink, dead letters, quarantine, disk (token).
- ``POST /api/v1/ingest`` — the local ingest source, see docs/ingest.md (token).
- ``POST /api/v1/ble/pair`` — open the BLE pairing window, body ``{"window_s": 120}`` (token; docs/ble.md).
- ``/status…`` — the live status page and its feed (its own token; gateway/web/server.py, docs/status-page.md).
- ``GET /dataspace/v1/credential`` — the gateway's Verifiable Credential as ``application/vc+jwt`` (no token:
  it is public; docs/dataspace.md). 404 when none is installed, 409 when it is no longer valid for this gateway.
- ``GET /dataspace/v1/observations`` — the research FHIR endpoint, with ``[research] enabled`` (its own token,
  ``<state_dir>/research.token``; registered through ``routes``, gateway/dataspace/endpoint.py, docs/consent.md).

The bearer token lives in ``<state_dir>/control.token`` (0600); the URL of a running gateway in
``<state_dir>/control.json``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import BackpressureError, OutboxError, PayloadError, ShuttingDownError
from gateway.ingest import IngestSource, parse_body
from gateway.metrics import GatewayMetrics
from gateway.outbox.committer import QuarantineRecord

if TYPE_CHECKING:
    from gateway.dataspace.credential import CredentialStore

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServer:
    def __init__(
        self,
        *,
        token: str,
        metrics: GatewayMetrics,
        ingest: IngestSource,
        stats: Callable[[], dict[str, Any]],
        health: Callable[[], dict[str, Any]],
        max_body_bytes: int,
        ble_pair: Callable[[float], dict[str, Any]] | None = None,
        credential: CredentialStore | None = None,
        routes: Sequence[web.RouteDef] = (),
        readiness: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._token = token
        self._metrics = metrics
        self._ingest = ingest
        self._stats = stats
        self._health = health
        self._ble_pair = ble_pair
        self._credential = credential
        self._readiness = readiness
        self._app = web.Application(client_max_size=max_body_bytes, middlewares=[self._auth])
        self._app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics),
                web.get("/api/v1/stats", self.stats),
                web.post("/api/v1/ingest", self.ingest),
                web.post("/api/v1/ble/pair", self.ble_pair),
                web.get("/dataspace/v1/credential", self.dataspace_credential),
            ]
        )
        # the research endpoint (gateway/dataspace/endpoint.py), the status page (gateway/web/server.py)
        self._app.add_routes(list(routes))
        self._runner: web.AppRunner | None = None
        self.url = ""

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        return await handler(request)

    async def start(self, host: str, port: int) -> str:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sock = server.sockets[0]  # type: ignore[attr-defined]
        bound_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def healthz(self, request: web.Request) -> web.Response:
        h = self._health()
        if self._credential is not None:
            h["dataspace_credential"] = self._credential.status().as_dict()
        return web.json_response(h, status=200 if h.get("status") == "ok" else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        r = self._readiness() if self._readiness is not None else {"status": "ready", "reasons": []}
        return web.json_response(r, status=200 if r.get("status") == "ready" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats())

    async def ingest(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._ingest_reject("too_large", "request body over web.max_body_bytes")
            raise
        try:
            req = parse_body(body, request.content_type)
        except PayloadError as e:
            self._ingest_reject("malformed", str(e), body)
            return web.json_response({"error": str(e)}, status=400)
        try:
            results = await self._ingest.ingest(req.batches, body, req.clock_ns)
        except BackpressureError as e:
            return web.json_response(
                {"error": str(e)}, status=503, headers={"Retry-After": str(max(1, round(e.retry_after_s)))}
            )
        except ShuttingDownError as e:
            return web.json_response({"error": str(e)}, status=503, headers={"Retry-After": "5"})
        except OutboxError as e:
            return web.json_response({"error": f"not committed: {e}"}, status=503, headers={"Retry-After": "1"})
        return web.json_response({"results": [r.as_dict() for r in results]})

    async def ble_pair(self, request: web.Request) -> web.Response:
        if self._ble_pair is None:
            return web.json_response({"error": "BLE is not enabled on this gateway ([ble] enabled)"}, status=409)
        try:
            body = json.loads(await request.read() or b"{}")
            window = float(body.get("window_s", 120))
        except (ValueError, TypeError, AttributeError) as e:
            return web.json_response({"error": f'body must be {{"window_s": seconds}}: {e}'}, status=400)
        if not 0 < window <= 3600:
            return web.json_response({"error": "window_s must be in (0, 3600]"}, status=400)
        return web.json_response(self._ble_pair(window))

    async def dataspace_credential(self, request: web.Request) -> web.Response:
        status = self._credential.status() if self._credential is not None else None
        if status is None or status.state == "none":
            return web.json_response({"error": "no gateway credential installed"}, status=404)
        if status.state != "valid" or status.credential is None:
            return web.json_response({"error": status.detail, "state": status.state}, status=409)
        return web.Response(text=status.credential.token, content_type="application/vc+jwt")

    def _ingest_reject(self, reason: str, detail: str, body: bytes = b"") -> None:
        self._ingest.quarantine(QuarantineRecord.of(reason, detail, None, body))


def write_control_file(state_dir: Path, url: str, pid: int, did: str) -> None:
    path = state_dir / "control.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": pid, "did": did}))
    tmp.replace(path)
