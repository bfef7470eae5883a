"""One backoff rule for every retry path (outbox, notifications, inbound events, receipts, RPC calls,
operator transactions): exponential in the attempt number, capped, with jitter so that rows that failed
together do not all come back in the same second."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Delay before attempt `attempt + 1` after `attempt` failures (attempt >= 1): a random value in
    [d/2, d] where d = min(cap, base * 2^(attempt-1))."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)
