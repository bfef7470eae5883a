"""Confidence intervals against the published examples, window arithmetic, exact rounding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest

from overview.periods import PeriodError, resolve_period
from overview.selectors import MONTHLY_FACTOR, round_half_up, series_buckets
from overview.stats import newcombe_difference, wilson

# Newcombe RG. Interval estimation for the difference between independent proportions: comparison of eleven
# methods. Stat Med 1998;17:873-890, Table II, method 10 (hybrid score), to 4 decimals.
NEWCOMBE_1998 = [
    ((56, 70, 48, 80), ("0.0524", "0.3339")),
    ((9, 10, 3, 10), ("0.1705", "0.8090")),
    ((6, 7, 2, 7), ("0.0582", "0.8062")),
    ((5, 56, 0, 29), ("-0.0381", "0.1926")),
    ((0, 10, 0, 20), ("-0.1611", "0.2775")),
    ((0, 10, 0, 10), ("-0.2775", "0.2775")),
    ((10, 10, 0, 20), ("0.6791", "1.0000")),
    ((10, 10, 0, 10), ("0.6075", "1.0000")),
]
# Newcombe RG. Two-sided confidence intervals for the single proportion. Stat Med 1998;17:857-872, Table I,
# method 3 (Wilson score, no continuity correction).
WILSON_1998 = [
    ((81, 263), ("0.2553", "0.3662")),
    ((15, 148), ("0.0624", "0.1605")),
    ((0, 20), ("0.0000", "0.1611")),
    ((1, 29), ("0.0061", "0.1718")),
    ((29, 29), ("0.8830", "1.0000")),
]


def q4(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.0001")), "f")


@pytest.mark.parametrize("counts,expected", NEWCOMBE_1998)
def test_newcombe_hybrid_score_interval_matches_the_paper(counts, expected):
    interval = newcombe_difference(*counts)
    assert (q4(interval.low), q4(interval.high)) == expected


@pytest.mark.parametrize("counts,expected", WILSON_1998)
def test_wilson_interval_matches_the_paper(counts, expected):
    interval = wilson(*counts)
    assert (q4(interval.low), q4(interval.high)) == expected


def test_no_trials_no_interval():
    assert wilson(0, 0) is None
    assert newcombe_difference(1, 2, 0, 0) is None
    with pytest.raises(ValueError):
        wilson(3, 2)


NOW = datetime(2026, 3, 17, 15, 30, tzinfo=UTC)


def test_presets_and_previous_window():
    p = resolve_period(name="7d", start=None, end=None, now=NOW)
    assert (p.start, p.end) == (NOW - timedelta(days=7), NOW)
    assert (p.previous.start, p.previous.end) == (NOW - timedelta(days=14), NOW - timedelta(days=7))
    mtd = resolve_period(name="mtd", start=None, end=None, now=NOW)
    assert mtd.start == datetime(2026, 3, 1, tzinfo=UTC) and mtd.end == NOW
    assert mtd.previous.start == datetime(2026, 3, 1, tzinfo=UTC) - (NOW - datetime(2026, 3, 1, tzinfo=UTC))
    assert resolve_period(name=None, start=None, end=None, now=NOW).name == "30d"


def test_custom_windows_are_utc_and_a_date_to_includes_its_day():
    p = resolve_period(name=None, start="2026-02-01", end="2026-02-28", now=NOW)
    assert p.name == "custom"
    assert (p.start, p.end) == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    p = resolve_period(name="custom", start="2026-02-01T10:00:00+02:00", end="2026-02-02T00:00:00", now=NOW)
    assert (p.start, p.end) == (datetime(2026, 2, 1, 8, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC))


@pytest.mark.parametrize(
    "name,start,end,field",
    [
        ("week", None, None, "period"),
        ("custom", None, "2026-02-01", "from"),
        ("custom", "2026-02-01", None, "to"),
        ("custom", "2026-02-31", "2026-03-01", "from"),
        ("custom", "2026-03-01", "2026-03-01T00:00:00Z", "to"),
        ("custom", "1999-12-31", "2000-01-02", "from"),
        ("custom", "2020-01-01", "2026-01-01", "to"),
        ("30d", "2026-01-01", None, "from"),
    ],
)
def test_bad_windows_name_their_field(name, start, end, field):
    with pytest.raises(PeriodError) as error:
        resolve_period(name=name, start=start, end=end, now=NOW)
    assert field in error.value.fields


def test_round_half_away_from_zero_is_exact():
    assert round_half_up(Fraction(193, 8), 2) == Decimal("24.13")  # 24.125
    assert round_half_up(Fraction(-193, 8), 2) == Decimal("-24.13")
    assert round_half_up(Fraction(1, 3), 4) == Decimal("0.3333")
    with localcontext() as ctx:  # the same value by another road: 100-digit Decimal, ROUND_HALF_UP
        ctx.prec = 100
        wide = (Decimal(2**256 - 1) * 30 / 7).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert round_half_up(Fraction(2**256 - 1) * Fraction(30, 7)) == wide
    # an amount that a float would get wrong
    assert round_half_up(Fraction(10**30 + 1, 2)) == 5 * 10**29 + 1


def test_monthly_factors():
    assert {k: str(v) for k, v in MONTHLY_FACTOR.items()} == {"day": "30", "week": "30/7", "month": "1", "year": "1/12"}


def test_series_buckets_are_utc_days_weeks_months_cut_by_the_window():
    p = resolve_period(name="custom", start="2026-01-30T12:00:00Z", end="2026-03-02T06:00:00Z", now=NOW)
    months = series_buckets(p, "month")
    assert [(a.isoformat(), b.isoformat()) for a, b in months] == [
        ("2026-01-30T12:00:00+00:00", "2026-02-01T00:00:00+00:00"),
        ("2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"),
        ("2026-03-01T00:00:00+00:00", "2026-03-02T06:00:00+00:00"),
    ]
    weeks = series_buckets(p, "week")
    assert weeks[1][0] == datetime(2026, 2, 2, tzinfo=UTC) and weeks[1][0].weekday() == 0
    days = series_buckets(p, "day")
    assert len(days) == 32 and days[-1][1] == p.end


def test_display_is_exact_at_uint256():
    from overview.selectors import display

    big = 2**256 - 1
    assert display(big, 18) == f"{str(big)[:-18]}.{str(big)[-18:]}"
    assert display(-30_000_000, 6) == "-30.000000"
    assert display(0, 6) == "0.000000"
