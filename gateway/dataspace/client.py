"""HTTP client of the EDC Management API: ``X-Api-Key``, a timeout on every request, TLS verified by default.

Library errors are translated here: a refused key is :class:`ConnectorAuthError`, an unreachable or
silent connector :class:`ConnectorUnreachableError`; every other answer is returned to the caller, who
decides what a 409 or a 404 means.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from gateway.dataspace import ConnectorAuthError, ConnectorError, ConnectorUnreachableError
from gateway.dataspace.edc import EdcRequest

API_KEY_HEADER = "X-Api-Key"
MAX_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    """Parsed JSON, the text when it is not JSON, ``None`` when empty."""

    def excerpt(self) -> str:
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return text if len(text) <= 300 else text[:300] + "…"


class EdcClient:
    """One session to one connector's Management API. Use ``async with``."""

    def __init__(
        self,
        management_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        verify_tls: bool = True,
        ca_file: Path | None = None,
    ) -> None:
        self.url = management_url.rstrip("/")
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._ssl: ssl.SSLContext | bool = True
        if not verify_tls:
            self._ssl = False
        elif ca_file is not None:
            self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never the key
        return f"EdcClient({self.url!r})"

    async def __aenter__(self) -> EdcClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={API_KEY_HEADER: self._api_key, "Accept": "application/json"},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, req: EdcRequest) -> Answer:
        """Send one request; 401/403 raise :class:`ConnectorAuthError`, other statuses are returned."""
        assert self._session is not None, "use `async with EdcClient(...)`"
        url = self.url + req.path
        what = f"{req.method} {url}"
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._session.request(req.method, url, json=req.body, ssl=self._ssl) as resp:
                    raw = await resp.content.read(MAX_ANSWER_BYTES)
                    status = resp.status
        except TimeoutError:
            raise ConnectorUnreachableError(
                f"{what}: the connector did not answer within {self._timeout_s:g} s ([dataspace.edc] timeout_s)"
            ) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise ConnectorUnreachableError(
                f"{what}: the connector's TLS certificate does not verify ({e.certificate_error}); "
                "give its CA in [dataspace.edc] ca_file"
            ) from e
        except aiohttp.ClientConnectorError as e:
            raise ConnectorUnreachableError(f"{what}: cannot connect to the connector: {e.os_error}") from e
        except aiohttp.ClientError as e:
            raise ConnectorUnreachableError(f"{what}: {type(e).__name__}: {e}") from e
        answer = Answer(status, _parse(raw))
        if status in (401, 403):
            raise ConnectorAuthError(
                f"the connector at {self.url} refused the Management API key (HTTP {status} on {req.method} "
                f"{req.path}): check [dataspace.edc] api_key_file and the connector's web.http.management auth key",
                status,
            )
        return answer

    async def expect(self, req: EdcRequest, *ok: int) -> Answer:
        """Send and require one of the ``ok`` statuses, else :class:`ConnectorError`."""
        answer = await self.send(req)
        if answer.status not in ok:
            raise ConnectorError(
                f"{req.method} {self.url}{req.path}: HTTP {answer.status}: {answer.excerpt()}", answer.status
            )
        return answer


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
