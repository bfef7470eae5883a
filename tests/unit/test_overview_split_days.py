"""overview.selectors.split_days: which parts of the two windows come from the daily rollup (whole UTC days
inside one window) and which from the ledger (the partial days at the edges)."""

from datetime import UTC, datetime, timedelta

from overview.periods import Period
from overview.selectors import split_days


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def covered(runs, edges) -> timedelta:
    return sum((b - a for a, b in [*runs, *edges]), timedelta())


def test_a_preset_window_reads_whole_days_from_the_rollup_and_three_partial_days_from_the_ledger():
    period = Period("7d", at(8, 13, 30), at(15, 13, 30))
    runs, edges = split_days(period)
    assert runs == [(at(2), at(8)), (at(9), at(15))]
    # The day cut by the window's start is one ledger range (both windows' parts of it).
    assert edges == [(at(1, 13, 30), at(2)), (at(8), at(9)), (at(15), at(15, 13, 30))]
    assert covered(runs, edges) == period.end - period.previous.start


def test_windows_on_midnights_read_the_rollup_only():
    runs, edges = split_days(Period("custom", at(10), at(20)))
    assert runs == [(datetime(2026, 10, 31, tzinfo=UTC), at(10)), (at(10), at(20))]
    assert edges == []


def test_a_window_without_a_whole_day_reads_the_ledger_only():
    period = Period("custom", at(10, 6), at(11, 5))  # 23 hours: neither window holds a whole UTC day
    runs, edges = split_days(period)
    assert runs == []
    assert edges == [(at(9, 7), at(11, 5))]
