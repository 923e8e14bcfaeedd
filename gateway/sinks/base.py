"""The one small interface every sink implements.

A sink writes a sequence of committed batches and either returns (all written, idempotently) or
raises one of the classified :class:`~gateway.errors.SinkError` subclasses:

- :class:`~gateway.errors.RetryableSinkError` — transient; the forwarder backs off and retries.
- :class:`~gateway.errors.ThrottledSinkError` — the store said slow down; wait ``retry_after_s``.
- :class:`~gateway.errors.RejectedSinkError` — the data itself was refused; the forwarder bisects
  the sequence to find the offending batch and moves it to the dead-letter table.

Writes must be idempotent: the same batch written twice yields the same stored points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.model import Batch


class Sink(Protocol):
    name: str
    """Sink name as used in config, metrics and cursors (``influx``, ``local`` …)."""

    async def write(self, batches: Sequence[Batch]) -> None: ...

    async def close(self) -> None: ...
