"""The live status page: routes on the control API's loopback port, and optionally a second HTTPS listener.

- ``GET /status`` — the page (the login form without a valid session; ``?token=…`` logs in once, sets the
  session cookie and redirects to ``/status`` so the token leaves the address bar and history).
- ``POST /status/login`` — form field ``token`` → session cookie; ``POST /status/logout`` clears it.
- ``GET /status/feed`` — server-sent events: ``event: update``, one JSON object per ``update_interval_s``
  with the status (devices, sinks, quarantine, counters, readiness) and what is new in each curve.
- ``GET /status/static/<file>`` — the page's own JS and CSS (no CDN: it works on an isolated network).

Everything but the static files and the login form needs the status token (``<state_dir>/status.token``,
or ``[web.status] token_file``), on loopback too: the page shows patient data. The session cookie holds an
HMAC of the token, not the token; changing the token ends every session. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import html
import json
import logging
import ssl
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import StatusPageSection
from gateway.errors import ConfigError
from gateway.metrics import GatewayMetrics
from gateway.web.live import Cursor, LiveBoard
from gateway.web.view import status_view

log = logging.getLogger(__name__)

COOKIE = "ds4h_status"
STATIC_FILES = {
    "status.js": "text/javascript",
    "charts.js": "text/javascript",
    "status.css": "text/css",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("gateway.web").joinpath("static").joinpath(name).read_bytes()


def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"ds4h-status-session/v1", hashlib.sha256).hexdigest()


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": location, "Cache-Control": "no-store"})


class StatusPage:
    """The status page's handlers, shared by the loopback control port and the optional second listener."""

    def __init__(
        self,
        cfg: StatusPageSection,
        *,
        token: str,
        snapshot: Callable[[], dict[str, Any]],
        board: LiveBoard,
        metrics: GatewayMetrics,
    ) -> None:
        self._cfg = cfg
        self.token = token
        """The login token (never logged; the demo prints it in its status page URL)."""
        self._token = token
        self._session = _session_value(token)
        self._snapshot = snapshot
        self.board = board
        self._metrics = metrics
        self._closing = asyncio.Event()
        self._view: dict[str, Any] = {}
        self._view_at = 0.0
        self._last_committed: tuple[float, int] | None = None
        self._rate = 0.0
        self._runner: web.AppRunner | None = None
        self._tls: ssl.SSLContext | None = None
        if cfg.cert_file is not None and cfg.key_file is not None:  # at start, so that a bad file stops it cleanly
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                self._tls.load_cert_chain(cfg.cert_file, cfg.key_file)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"web.status.cert_file/key_file: cannot load: {e}") from e
        self.url = ""
        """URL of the second listener, when one runs."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/status", self.page),
            web.post("/status/login", self.login),
            web.post("/status/logout", self.logout),
            web.get("/status/feed", self.feed),
            web.get("/status/static/{name}", self.static),
        ]

    # --- auth ----------------------------------------------------------------------------------
    def authorised(self, request: web.Request) -> bool:
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return True
        given = request.headers.get("Authorization", "")
        return bool(given) and hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode())

    def _token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.strip().encode(), self._token.encode())

    def _login_response(self, request: web.Request) -> web.Response:
        self._metrics.status_logins.labels(outcome="accepted").inc()
        resp = _see_other("/status")
        resp.set_cookie(
            COOKIE,
            self._session,
            max_age=int(self._cfg.session_hours * 3600),
            path="/status",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return resp

    def _login_form(self, error: str = "") -> web.Response:
        page = _asset("login.html").decode().replace("{{error}}", html.escape(error))
        return web.Response(
            text=page, status=401, content_type="text/html", headers={**_HEADERS, "Cache-Control": "no-store"}
        )

    # --- handlers ------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        given = request.query.get("token")
        if given is not None:
            if self._token_ok(given):
                return self._login_response(request)
            self._metrics.status_logins.labels(outcome="refused").inc()
            log.warning("status page: login refused (wrong token) from %s", request.remote)
            return self._login_form("That is not the status token of this gateway.")
        if not self.authorised(request):
            return self._login_form()
        return web.Response(
            body=_asset("status.html"),
            content_type="text/html",
            headers={**_HEADERS, "Cache-Control": "no-store"},
        )

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = form.get("token")
        if isinstance(given, str) and self._token_ok(given):
            return self._login_response(request)
        self._metrics.status_logins.labels(outcome="refused").inc()
        log.warning("status page: login refused (wrong token) from %s", request.remote)
        return self._login_form("That is not the status token of this gateway.")

    async def logout(self, request: web.Request) -> web.StreamResponse:
        resp = _see_other("/status")
        resp.del_cookie(COOKIE, path="/status")
        return resp

    async def root(self, request: web.Request) -> web.Response:
        return _see_other("/status")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ctype = STATIC_FILES.get(name)
        if ctype is None:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name), content_type=ctype, headers={**_HEADERS, "Cache-Control": "no-cache"})

    def _status(self) -> dict[str, Any]:
        """The status part of an update, built at most once per half interval whatever the number of viewers."""
        now = time.monotonic()
        if now - self._view_at >= self._cfg.update_interval_s / 2 or not self._view:
            snap = self._snapshot()
            committed = int(snap.get("counters", {}).get("readings_committed", 0))
            if self._last_committed is not None and now > self._last_committed[0]:
                self._rate = (committed - self._last_committed[1]) / (now - self._last_committed[0])
            if self._last_committed is None or now - self._last_committed[0] >= 1.0:
                self._last_committed = (now, committed)
            self._view = status_view(snap, self.board, self._rate)
            self._view_at = now
        return self._view

    async def feed(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return web.json_response({"error": "log in to the status page first"}, status=401, headers=_HEADERS)
        resp = web.StreamResponse(
            headers={
                **_HEADERS,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        cursor = Cursor()
        self._metrics.status_viewers.inc()
        try:
            await resp.write(b"retry: 2000\n\n")
            while not self._closing.is_set():
                update = {"status": self._status(), **self.board.delta(cursor), "strip_s": self._cfg.ecg_strip_s}
                data = json.dumps(update, separators=(",", ":")).encode()
                await resp.write(b"event: update\ndata: " + data + b"\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=self._cfg.update_interval_s)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the viewer went away (or the server is stopping)
        finally:
            self._metrics.status_viewers.dec()
        return resp

    # --- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Ends every open feed (before the servers stop, so that they need not wait for them)."""
        self._closing.set()

    async def start_listener(self, host: str, port: int) -> str:
        """The second listener: the status page only, HTTPS when cert and key are configured."""
        ctx = self._tls
        app = web.Application()
        app.add_routes(self.routes())
        app.router.add_get("/", self.root)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if ctx else 'http'}://{shown}:{bound}/status"
        return self.url

    async def stop_listener(self) -> None:
        self.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def load_status_token(cfg: StatusPageSection, state_dir: Path) -> str:
    from gateway.state.files import load_or_create_token

    return load_or_create_token(cfg.token_file if cfg.token_file is not None else state_dir / "status.token")
