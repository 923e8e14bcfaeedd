"""Asyncio client for the gateway's local ingest API (``POST /api/v1/ingest``, docs/ingest.md).

Delivery rule: a batch stays in the client's buffer until the gateway answers ``committed`` or
``duplicate`` for it. On ``503`` the client waits ``Retry-After`` and resends the same batches; on a
connection error, a timeout or a ``5xx`` it backs off (exponential, full jitter) and resends them.
``quarantined`` batches are logged, counted and dropped (resending them as is cannot help).

Each acknowledged source key (``device/boot/seq``) is appended to the optional *ack log*, one per
line, written, flushed and fsync'd once per answered request. Crash tests compare that file with
what the gateway stored: every line must be there.

Usage::

    async with IngestClient(url, token, ack_log=path) as client:
        await client.submit(batches)
        await client.flush(within_s=10)
    print(client.stats.as_dict())
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import cbor2

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"


class IngestAuthError(RuntimeError):
    """The gateway refused the token (401): nothing can be delivered."""


def ingest_url(url: str) -> str:
    """Accept either the gateway's control base URL or the full ingest URL."""
    url = url.rstrip("/")
    return url if url.endswith(INGEST_PATH) else url + INGEST_PATH


def source_key_text(batch: Mapping[str, Any]) -> str:
    """``device/part/part`` — the same text form the gateway uses for a source key."""
    return "/".join([str(batch["device"]), *(str(p) for p in batch["key"])])


def _cbor_head(major: int, n: int) -> bytes:
    """A CBOR data item head (major type + argument), RFC 8949 §3."""
    mt = major << 5
    if n < 24:
        return bytes([mt | n])
    if n < 0x100:
        return bytes([mt | 24, n])
    if n < 0x10000:
        return bytes([mt | 25]) + n.to_bytes(2, "big")
    if n < 0x1_0000_0000:
        return bytes([mt | 26]) + n.to_bytes(4, "big")
    return bytes([mt | 27]) + n.to_bytes(8, "big")


_BODY_PREFIX = _cbor_head(5, 2) + cbor2.dumps("clock")
_BATCHES_KEY = cbor2.dumps("batches")


def encode_body(encoded_batches: list[bytes], clock_ns: int) -> bytes:
    """``cbor2.dumps({"clock": clock_ns, "batches": [...]})`` from batches already CBOR-encoded one by one.

    ``clock`` is the device's clock at the moment of sending (set anew on every resend), from which the
    gateway estimates the device's clock offset.
    """
    return b"".join(
        [_BODY_PREFIX, cbor2.dumps(clock_ns), _BATCHES_KEY, _cbor_head(4, len(encoded_batches)), *encoded_batches]
    )


@dataclass(slots=True)
class ClientStats:
    submitted: int = 0
    """Batches handed to the client."""
    sent: int = 0
    """Batch transmissions, resends included."""
    acked: int = 0
    """Batches acknowledged: committed + duplicates."""
    committed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    rejected: int = 0
    """Batches dropped because the gateway refused the whole request (400/413/other 4xx)."""
    retries: int = 0
    """Requests that had to be sent again (503, connection error, timeout, 5xx)."""
    requests: int = 0
    """HTTP requests attempted."""
    busy: int = 0
    """503 answers (back-pressure)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Pending:
    key: str
    body: bytes


class IngestClient:
    """Posts batch maps as CBOR, keeping each one until the gateway acknowledges it.

    ``concurrency`` requests may be in flight at once (1 keeps batches in order per device).
    ``rate`` caps transmissions in batches per second (``None``: as fast as the gateway answers).
    ``max_pending`` bounds the buffer: :meth:`submit` waits while it is full.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        batches_per_request: int = 200,
        request_timeout_s: float = 30.0,
        ack_log: str | os.PathLike[str] | None = None,
        rate: float | None = None,
        concurrency: int = 1,
        max_pending: int = 200_000,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if batches_per_request < 1:
            raise ValueError("batches_per_request must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0")
        self.url = ingest_url(url)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/cbor",
            "Accept": "application/json, application/cbor",
        }
        self.batches_per_request = batches_per_request
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._ack_log_path = Path(ack_log) if ack_log is not None else None
        self._ack_file: IO[bytes] | None = None
        self._ack_lock = asyncio.Lock()
        self._ack_writes: set[asyncio.Future[None]] = set()
        self.rate = rate
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._session = session
        self._own_session = session is None
        self.stats = ClientStats()
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._changed = asyncio.Condition()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self.error: BaseException | None = None
        self._rate_start = 0.0
        self._rate_sent = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> IngestClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._workers:
            return
        if self._ack_log_path is not None and self._ack_file is None:
            self._ack_file = await asyncio.to_thread(_open_append, self._ack_log_path)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._rate_start = time.monotonic()
        self._workers = [asyncio.create_task(self._worker(), name=f"ingest-{i}") for i in range(self.concurrency)]

    async def close(self) -> None:
        """Stop sending (batches still pending are abandoned: call :meth:`flush` first)."""
        self._closing = True
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            try:
                await w
            except asyncio.CancelledError:
                pass
            except Exception:  # already recorded in self.error
                pass
        self._workers = []
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None
        if self._ack_writes:
            await asyncio.gather(*self._ack_writes, return_exceptions=True)
        if self._ack_file is not None:
            f, self._ack_file = self._ack_file, None
            await asyncio.to_thread(f.close)

    # ------------------------------------------------------------------ API

    @property
    def pending(self) -> int:
        """Batches not yet acknowledged (queued or in flight)."""
        return len(self._queue) + self._in_flight

    async def submit(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Buffer ``batches`` for delivery (each is CBOR-encoded once, here)."""
        for b in batches:
            if self.error is not None:
                raise self.error
            if len(self._queue) >= self.max_pending:
                async with self._changed:
                    await self._changed.wait_for(lambda: len(self._queue) < self.max_pending or self.error is not None)
            self._queue.append(_Pending(source_key_text(b), cbor2.dumps(b)))
            self.stats.submitted += 1
        async with self._changed:
            self._changed.notify_all()

    async def flush(self, within_s: float | None = None) -> bool:
        """Wait until every submitted batch is acknowledged or dropped; False on timeout or error."""
        try:
            async with asyncio.timeout(within_s), self._changed:
                await self._changed.wait_for(lambda: self.pending == 0 or self.error is not None)
        except TimeoutError:
            return False
        return self.pending == 0 and self.error is None

    # ------------------------------------------------------------------ sending

    async def _worker(self) -> None:
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self._queue))
                    n = min(self.batches_per_request, len(self._queue))
                    chunk = [self._queue.popleft() for _ in range(n)]
                    self._in_flight += n
                    self._changed.notify_all()  # room in the buffer for submit()
                try:
                    await self._deliver(chunk)
                finally:
                    async with self._changed:
                        self._in_flight -= n
                        self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("ingest client stopped: %s", exc)
            self.error = exc
            async with self._changed:
                self._changed.notify_all()

    async def _pace(self, n: int) -> None:
        if self.rate is None:
            return
        self._rate_sent += n
        due = self._rate_start + self._rate_sent / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.backoff_max_s, self.backoff_initial_s * 2.0**attempt)
        return random.uniform(cap / 2.0, cap)

    async def _deliver(self, chunk: list[_Pending]) -> None:
        """Send ``chunk`` until every batch in it is acknowledged, quarantined or rejected."""
        assert self._session is not None
        attempt = 0
        while chunk:
            if attempt:
                self.stats.retries += 1
            await self._pace(len(chunk))
            self.stats.requests += 1
            self.stats.sent += len(chunk)
            body = encode_body([p.body for p in chunk], time.time_ns())
            try:
                async with self._session.post(
                    self.url, data=body, headers=self._headers, timeout=self._timeout
                ) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    payload = await resp.read()
                    ctype = resp.content_type
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                delay = self._backoff(attempt)
                log.warning(
                    "ingest: %s: %s: %s; resending %d batches in %.2fs",
                    self.url,
                    type(exc).__name__,
                    exc,
                    len(chunk),
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
                continue

            if status == 200:
                results = _parse_results(payload, ctype)
                if results is None or len(results) != len(chunk):
                    delay = self._backoff(attempt)
                    log.warning("ingest: unexpected answer %r; resending in %.2fs", payload[:200], delay)
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                chunk = await self._settle(chunk, results)
                if chunk:  # unknown statuses: resend those
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                continue
            if status == 503:
                self.stats.busy += 1
                hinted = _retry_after_s(retry_after)
                delay = self._backoff(attempt) if hinted is None else hinted
                log.info("ingest: gateway busy (503); resending %d batches in %.2fs", len(chunk), delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if status == 401:
                raise IngestAuthError("gateway refused the token (401 Unauthorized)")
            if status == 413 and len(chunk) > 1:
                half = len(chunk) // 2
                log.warning("ingest: body too large (413); splitting %d batches", len(chunk))
                self.batches_per_request = max(1, min(self.batches_per_request, half))
                await self._deliver(chunk[:half])
                chunk = chunk[half:]
                continue
            if 400 <= status < 500:
                log.error(
                    "ingest: gateway refused the request (%d %r); dropping %d batches",
                    status,
                    payload[:200],
                    len(chunk),
                )
                self.stats.rejected += len(chunk)
                return
            delay = self._backoff(attempt)
            log.warning("ingest: HTTP %d; resending %d batches in %.2fs", status, len(chunk), delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _settle(self, chunk: list[_Pending], results: list[Any]) -> list[_Pending]:
        """Apply per-batch results; return the batches to send again."""
        acked: list[str] = []
        again: list[_Pending] = []
        for p, r in zip(chunk, results, strict=True):
            status = r.get("status") if isinstance(r, dict) else None
            if status == "committed":
                self.stats.committed += 1
                acked.append(p.key)
            elif status == "duplicate":
                self.stats.duplicates += 1
                acked.append(p.key)
            elif status == "quarantined":
                self.stats.quarantined += 1
                log.warning("ingest: %s quarantined: %s", p.key, r.get("reason"))
            else:
                log.warning("ingest: %s: unknown result %r; will resend", p.key, r)
                again.append(p)
        self.stats.acked += len(acked)
        if acked:
            await self._log_acks(acked)
        return again

    async def _log_acks(self, keys: list[str]) -> None:
        if self._ack_file is None:
            return
        data = "".join(k + "\n" for k in keys).encode()
        async with self._ack_lock:
            f = self._ack_file
            if f is not None:
                # Shielded: once the gateway acknowledged, the line is written even if we are cancelled.
                task = asyncio.ensure_future(asyncio.to_thread(_write_sync, f, data))
                self._ack_writes.add(task)
                task.add_done_callback(self._ack_writes.discard)
                await asyncio.shield(task)


def _open_append(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


def _write_sync(f: IO[bytes], data: bytes) -> None:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _parse_results(payload: bytes, content_type: str) -> list[Any] | None:
    try:
        doc = cbor2.loads(payload) if content_type == "application/cbor" else json.loads(payload)
    except Exception:
        return None
    results = doc.get("results") if isinstance(doc, dict) else None
    return results if isinstance(results, list) else None


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds; HTTP dates fall back to back-off)."""
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None
