"""A loopback HTTP reverse proxy that injects faults, for testing sinks against a real server.

VictoriaMetrics never answers 413/429/4xx on its own, so tests put this proxy in front of it:
every request is forwarded unchanged (method, path, query, headers minus hop-by-hop ones,
raw body) and the upstream answer is relayed, unless a programmed fault applies.

Async use::

    proxy = FaultProxy(vm.url)
    url = await proxy.start()
    proxy.fail_next(2, 429, headers={"Retry-After": "1"})
    ...
    await proxy.stop()

From synchronous code, or to serve another process, run it on its own event-loop thread::

    with proxy.run_in_thread() as url:
        ...

Fault programming methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.threadloop import serve_in_thread

# RFC 9110 7.6.1 hop-by-hop headers, plus the ones aiohttp computes itself
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)


@dataclass(frozen=True)
class RequestRecord:
    """One request seen by the proxy."""

    method: str
    path: str
    query: str
    body_size: int
    status: int  # status returned to the client; 0 when the connection was dropped
    fault: str | None  # None when relayed from upstream, else why the proxy answered itself


@dataclass
class _Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class FaultProxy:
    """Fault-injecting reverse proxy bound to 127.0.0.1."""

    def __init__(self, upstream_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._drop_next = 0
        self._max_body: int | None = None
        self._delay = 0.0
        self._requests: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- fault programming (thread-safe)
    def fail_next(
        self,
        n: int,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and headers/body) without forwarding."""
        with self._lock:
            self._faults.extend(_Fault(status, dict(headers or {}), body) for _ in range(n))

    def drop_next(self, n: int) -> None:
        """Close the connection without answering for the next ``n`` requests."""
        with self._lock:
            self._drop_next += n

    def max_body(self, limit: int | None) -> None:
        """Answer 413 to requests whose body is larger than ``limit`` bytes (None: no limit)."""
        with self._lock:
            self._max_body = limit

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before handling each request (0: no delay)."""
        with self._lock:
            self._delay = seconds

    def reset(self) -> None:
        """Clear programmed faults, limits and the request log."""
        with self._lock:
            self._faults.clear()
            self._drop_next = 0
            self._max_body = None
            self._delay = 0.0
            self._requests.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the requests seen so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults) + self._drop_next

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FaultProxy is not started")
        return f"http://{self.host}:{self.port}"

    # -- lifecycle
    async def start(self) -> str:
        if self._runner is not None:
            return self.url
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress=False: relay compressed request bodies as they came
        runner = web.AppRunner(app, access_log=None, auto_decompress=False, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=120),
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if runner is not None:
            await runner.cleanup()
        if session is not None:
            await session.close()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """Serve on a private event loop in a daemon thread; yield its URL (for code that runs its own loop)."""
        with serve_in_thread(self.start, self.stop, "faultproxy") as url:
            yield url

    # -- request handling
    def _record(self, request: web.Request, size: int, status: int, fault: str | None) -> None:
        with self._lock:
            self._requests.append(
                RequestRecord(request.method, request.path, request.query_string, size, status, fault)
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            delay = self._delay
            drop = self._drop_next > 0
            if drop:
                self._drop_next -= 1
            fault = None if drop else (self._faults.pop(0) if self._faults else None)
            limit = self._max_body
        if delay:
            await asyncio.sleep(delay)
        if drop:
            self._record(request, len(body), 0, "dropped")
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing to send: the client sees a reset connection
        if fault is not None:
            self._record(request, len(body), fault.status, "fail_next")
            return web.Response(status=fault.status, headers=fault.headers, body=fault.body)
        if limit is not None and len(body) > limit:
            self._record(request, len(body), 413, "max_body")
            return web.Response(status=413, text=f"request body of {len(body)} bytes exceeds {limit}\n")

        assert self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        target = self.upstream_url + request.rel_url.raw_path_qs
        try:
            async with self._session.request(
                request.method,
                target,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            ) as upstream:
                payload = await upstream.read()
                out_headers = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP)
                status = upstream.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(request, len(body), 502, "upstream_error")
            return web.Response(status=502, text=f"fault proxy: upstream error: {exc!r}\n")
        self._record(request, len(body), status, None)
        return web.Response(status=status, headers=out_headers, body=payload)
