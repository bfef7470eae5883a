"""One backoff rule for every retry path (outbox, notifications, inbound events, receipts, RPC calls,
operator transactions): exponential in the attempt number, capped, with jitter so that rows that failed
together do not all come back in the same second."""

from __future__ import annotations

import random
from datetime import datetime, timedelta


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Delay before attempt `attempt + 1` after `attempt` failures (attempt >= 1): a random value in
    [d/2, d] where d = min(cap, base * 2^(attempt-1))."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def retry_at(*, attempts: int, max_attempts: int, now: datetime, base: float, cap: float) -> datetime | None:
    """The failure edge of the one delivery-attempt state machine (outbox deliveries, notifications, inbound
    webhook deliveries): after `attempts` failed attempts, when the next one is due (`backoff_seconds`), or
    None when `max_attempts` are used up and the row goes to its final state (dead, failed)."""
    if attempts >= max_attempts:
        return None
    return now + timedelta(seconds=backoff_seconds(attempts, base=base, cap=cap))
