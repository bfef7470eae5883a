"""The one backoff rule: grows with the attempt, capped, jittered within [d/2, d]."""

from billing.retry import backoff_seconds


def test_backoff_grows_is_capped_and_jittered():
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)]:
        values = {backoff_seconds(attempt, base=2.0, cap=60.0) for _ in range(200)}
        assert all(ceiling / 2 <= v <= ceiling for v in values)
        assert len(values) > 1  # jitter: not one fixed delay
