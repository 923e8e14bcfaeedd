"""InfluxDB v2 sink: committed batches → line protocol → ``POST /api/v2/write?precision=ns``.

Uses ``influxdb_client``'s :class:`InfluxDBClientAsync` (aiohttp) and its write API with pre-built
line-protocol bytes (see :mod:`gateway.sinks.lineproto`). The async client does no retries of its
own (its aiohttp session has no retry layer; the ``retries`` option only exists for the synchronous
client), so every failure surfaces here once and is classified for the forwarder:

- connection errors, timeouts, 5xx other than 503, unexpected 1xx/3xx → :class:`RetryableSinkError`;
- 401 / 403 / 404 → :class:`RetryableSinkError` as well: a bad token, missing permission or unknown
  bucket/org is a configuration fault, not a fault of the data, and must not dead-letter good batches;
  408 (request timeout) is transient;
- 429 and 503 → :class:`ThrottledSinkError` with ``retry_after_s`` from ``Retry-After`` (delta-seconds
  or HTTP-date; 1 s when missing or unparsable);
- 413 → the body is split in halves on line boundaries and each half retried here, recursively; a
  single line that is still too large → :class:`RejectedSinkError`;
- any other 4xx → :class:`RejectedSinkError` with the status and the store's (truncated) error text;
- a batch that cannot be encoded (non-finite value, unwritable name) → :class:`RejectedSinkError`.

Batches are packed into request bodies of at most ``max_body_bytes`` (a single line longer than that
is sent on its own and left to the store to judge) and posted one after another. A failed write may
have stored some bodies already; that is harmless because points are idempotent (same series + time
overwrite). The token never appears in logs, exception messages or ``repr``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC
from typing import Any

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from gateway.errors import (
    PayloadError,
    RejectedSinkError,
    RetryableSinkError,
    SinkError,
    ThrottledSinkError,
    TooLargeSinkError,
)
from gateway.model import Batch
from gateway.sinks.lineproto import count_points, encode_batches

__all__ = ["DEFAULT_RETRY_AFTER_S", "InfluxSink", "pack_bodies", "parse_retry_after", "split_body"]

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER_S = 1.0
_ERROR_TEXT_MAX = 300
_RETRYABLE_4XX = frozenset({401, 403, 404, 408})


def parse_retry_after(value: str | None, *, default: float = DEFAULT_RETRY_AFTER_S, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 10.2.3).

    Missing or unparsable values give ``default``; dates in the past give 0.
    """
    if value is None:
        return default
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return default
    return max(0.0, seconds)


def _split_long_chunk(chunk: bytes, max_bytes: int) -> Iterator[bytes]:
    """Cut ``chunk`` on line boundaries into pieces of at most ``max_bytes`` (over-long lines alone)."""
    pos = 0
    end = len(chunk)
    while end - pos > max_bytes:
        cut = chunk.rfind(b"\n", pos, pos + max_bytes + 1)
        if cut == -1:  # the next line alone is longer than the limit
            cut = chunk.find(b"\n", pos + max_bytes)
            if cut == -1:
                break
        yield chunk[pos:cut]
        pos = cut + 1
    yield chunk[pos:]


def pack_bodies(chunks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """Pack line-protocol chunks into request bodies of at most ``max_bytes`` (lines joined by ``\\n``).

    Empty chunks are skipped; a chunk larger than ``max_bytes`` is cut on line boundaries; a single
    line longer than ``max_bytes`` becomes a body of its own.
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        if not chunk:
            continue
        pieces = (chunk,) if len(chunk) <= max_bytes else _split_long_chunk(chunk, max_bytes)
        for piece in pieces:
            if parts and size + 1 + len(piece) > max_bytes:
                yield b"\n".join(parts)
                parts, size = [], 0
            size += len(piece) + (1 if parts else 0)
            parts.append(piece)
    if parts:
        yield b"\n".join(parts)


def split_body(body: bytes) -> tuple[bytes, bytes] | None:
    """Split a body in two halves on the line boundary nearest its middle; ``None`` for one line."""
    mid = len(body) // 2
    cut = body.rfind(b"\n", 0, mid + 1)
    if cut <= 0:
        cut = body.find(b"\n", mid)
        if cut == -1:
            return None
    return body[:cut], body[cut + 1 :]


def _redact_url(url: str) -> str:
    """The URL without user-info (``user:password@``), for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


class InfluxSink:
    """Writes batches to an InfluxDB v2 compatible ``/api/v2/write`` endpoint (see module docstring)."""

    def __init__(
        self,
        name: str,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        max_body_bytes: int = 4 * 1024 * 1024,
        verify_tls: bool = True,
        parallel_writes: int = 2,
    ) -> None:
        if parallel_writes < 1:
            raise ValueError("parallel_writes must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        self.name = name
        self.url = url
        self.org = org
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self.verify_tls = verify_tls
        self.parallel_writes = parallel_writes
        self._token = token
        self._safe_url = _redact_url(url)
        self._client: Any = None  # InfluxDBClientAsync, created lazily inside the running loop
        self._write_api: Any = None

    def __repr__(self) -> str:
        where = f"url={self._safe_url!r}, org={self.org!r}, bucket={self.bucket!r}"
        return f"InfluxSink(name={self.name!r}, {where})"

    # -- client lifecycle

    def _api(self) -> Any:
        if self._write_api is None:
            self._client = InfluxDBClientAsync(
                url=self.url,
                token=self._token,
                org=self.org,
                timeout=int(self.timeout_s * 1000),
                enable_gzip=False,
                verify_ssl=self.verify_tls,
            )
            self._write_api = self._client.write_api()
        return self._write_api

    async def close(self) -> None:
        """Close the HTTP session. A later write or ping opens a new one."""
        client, self._client, self._write_api = self._client, None, None
        if client is not None:
            await client.close()

    async def ping(self) -> bool:
        """True when the store answers ``/ping`` within the timeout."""
        self._api()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.ping()
        except (InfluxDBError, aiohttp.ClientError, OSError, TimeoutError):
            return False
        return True

    # -- writing

    async def write(self, batches: Sequence[Batch]) -> None:
        """Write all batches or raise; up to ``parallel_writes`` request bodies are in flight at once.

        Line protocol is built on a worker thread so the event loop keeps answering sources meanwhile.
        """
        try:
            chunks = await asyncio.to_thread(encode_batches, batches)
        except PayloadError as exc:
            raise RejectedSinkError(f"{self.name}: cannot encode batch as line protocol: {exc}") from exc
        await self.write_lines(chunks)

    async def write_lines(self, chunks: Sequence[bytes]) -> None:
        """Write line-protocol chunks (each whole lines) packed into request bodies, as :meth:`write` does:
        for callers that encode their own points (the research sink's pseudonymised series)."""
        bodies = list(pack_bodies(chunks, self.max_body_bytes))
        if len(bodies) == 1 or self.parallel_writes == 1:
            for body in bodies:
                await self._post_splitting(body)
            return
        slots = asyncio.Semaphore(self.parallel_writes)

        async def post(body: bytes) -> None:
            async with slots:
                await self._post_splitting(body)

        outcomes = await asyncio.gather(*(post(b) for b in bodies), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            # a rejection wins: the forwarder then isolates the offending batch; anything else is retried whole
            raise next((e for e in errors if isinstance(e, RejectedSinkError)), errors[0])

    async def _post_splitting(self, body: bytes) -> None:
        try:
            await self._post(body)
        except TooLargeSinkError as exc:
            halves = split_body(body)
            if halves is None:
                raise RejectedSinkError(
                    f"{self.name}: a single line of {len(body)} bytes is too large for the store ({exc})"
                ) from exc
            log.info(
                "%s: store refused %d bytes (%d points) as too large; splitting in halves",
                self.name,
                len(body),
                count_points(body),
            )
            for half in halves:
                await self._post_splitting(half)

    async def _post(self, body: bytes) -> None:
        api = self._api()
        try:
            async with asyncio.timeout(self.timeout_s):
                await api.write(bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.NS)
        except ApiException as exc:
            raise self._classify(exc) from exc
        except TimeoutError as exc:
            raise RetryableSinkError(
                f"{self.name}: write to {self._safe_url} timed out after {self.timeout_s:g} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            reason = self._clean(f"{type(exc).__name__}: {exc}")
            raise RetryableSinkError(f"{self.name}: cannot reach {self._safe_url}: {reason}") from exc
        except InfluxDBError as exc:
            raise RetryableSinkError(f"{self.name}: write failed: {self._clean(str(exc.message))}") from exc

    def _clean(self, text: str) -> str:
        """Truncate store/library text for a message and make sure the token is not in it."""
        text = " ".join(text.split())
        if self._token:
            text = text.replace(self._token, "<token>")
        if len(text) > _ERROR_TEXT_MAX:
            text = text[:_ERROR_TEXT_MAX] + "…"
        return text

    def _classify(self, exc: ApiException) -> SinkError:
        status = int(exc.status or 0)
        headers: Any = exc.headers or {}
        message = exc.message
        if isinstance(message, bytes | bytearray):
            message = bytes(message).decode("utf-8", "replace")
        detail = self._clean(str(message or exc.reason or ""))
        summary = f"{self.name}: HTTP {status} from {self._safe_url}"
        what = f"{summary}: {detail}"
        if status == 413:
            return TooLargeSinkError(what, summary=summary)
        if status in (429, 503):
            retry_after = parse_retry_after(headers.get("Retry-After"))
            after = f" (retry after {retry_after:g} s)"
            return ThrottledSinkError(what + after, retry_after, summary=summary + after)
        if status in _RETRYABLE_4XX:
            return RetryableSinkError(what, summary=summary)
        if 400 <= status < 500:
            return RejectedSinkError(what, summary=summary)
        return RetryableSinkError(what, summary=summary)
