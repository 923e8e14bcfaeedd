"""Retry delays: one pure function of the attempt number and the error, used by every retry loop."""

from __future__ import annotations

import random

from gateway.errors import ThrottledSinkError


def backoff_delay(
    attempt: int,
    error: BaseException | None = None,
    *,
    initial_s: float = 0.5,
    max_s: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter; a server's Retry-After is honoured as a floor.

    ``attempt`` counts from 0. With jitter the delay lies in [cap/2, cap] where
    cap = min(max_s, initial_s * 2**attempt), so it never collapses to zero.
    """
    r = rng or random
    cap = min(max_s, initial_s * (2 ** min(attempt, 30)))
    delay: float = cap / 2 + r.random() * cap / 2
    if isinstance(error, ThrottledSinkError):
        delay = max(delay, min(error.retry_after_s, 3600.0))
    return delay
