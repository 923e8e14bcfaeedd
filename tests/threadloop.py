"""Run an asyncio test server on a private event loop in a daemon thread, for code under test that runs its
own ``asyncio.run`` (CLI commands, synchronous clients)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def serve_in_thread(
    start: Callable[[], Coroutine[Any, Any, T]], stop: Callable[[], Coroutine[Any, Any, None]], name: str
) -> Iterator[T]:
    """``start()`` on the thread's loop (its result is yielded), ``stop()`` at the end; every wait bounded."""
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    finally:
        try:
            asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
