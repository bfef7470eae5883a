"""Reporting windows: `?period=7d|30d|90d|mtd|custom&from=&to=`, each with the previous window of equal length.

A window is half-open, [start, end), in UTC. Presets end now; `mtd` starts at 00:00 UTC on the first of the
month. `custom` takes `from` and `to` as ISO dates or datetimes (no offset means UTC); a date-only `to`
includes that whole day. The previous window is [start - length, start). Definitions: docs/overview.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

PRESETS: dict[str, timedelta] = {"7d": timedelta(days=7), "30d": timedelta(days=30), "90d": timedelta(days=90)}
PERIOD_CHOICES = ("7d", "30d", "90d", "mtd", "custom")
MAX_LENGTH = timedelta(days=3 * 366)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class PeriodError(ValueError):
    """Field errors of a period request: {"from": ["..."], ...}."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class Period:
    name: str
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def previous(self) -> Period:
        return Period(self.name, self.start - self.length, self.start)

    def as_dict(self) -> dict:
        prev = self.previous
        return {
            "name": self.name,
            "from": self.start,
            "to": self.end,
            "previous_from": prev.start,
            "previous_to": prev.end,
        }


def parse_instant(raw: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date (00:00 UTC, or the next midnight when `end_of_day`) or datetime (naive = UTC)."""
    raw = raw.strip()
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        moment = datetime.combine(day, time(0), tzinfo=UTC)
        return moment + timedelta(days=1) if end_of_day else moment
    value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def resolve_period(*, name: str | None, start: str | None, end: str | None, now: datetime) -> Period:
    """Validate and resolve the query parameters; PeriodError carries the field errors."""
    errors: dict[str, list[str]] = {}
    if name is None:
        name = "custom" if (start or end) else "30d"
    if name not in PERIOD_CHOICES:
        raise PeriodError({"period": [f"One of {', '.join(PERIOD_CHOICES)}."]})
    now = now.astimezone(UTC)
    if name != "custom":
        for field, value in (("from", start), ("to", end)):
            if value:
                errors[field] = ["Only with period=custom."]
        if errors:
            raise PeriodError(errors)
        if name == "mtd":
            first = datetime(now.year, now.month, 1, tzinfo=UTC)
            return Period(name, first, max(now, first + timedelta(seconds=1)))
        return Period(name, now - PRESETS[name], now)

    parsed: dict[str, datetime] = {}
    for field, value in (("from", start), ("to", end)):
        if not value:
            errors[field] = ["Required with period=custom."]
            continue
        try:
            parsed[field] = parse_instant(value, end_of_day=field == "to")
        except (ValueError, OverflowError):
            errors[field] = ["An ISO 8601 date (2026-01-31) or datetime (2026-01-31T12:00:00Z)."]
    if errors:
        raise PeriodError(errors)
    begin, finish = parsed["from"], parsed["to"]
    if begin < EARLIEST:
        raise PeriodError({"from": [f"Not before {EARLIEST.date().isoformat()}."]})
    if finish <= begin:
        raise PeriodError({"to": ["Must be after from."]})
    if finish - begin > MAX_LENGTH:
        raise PeriodError({"to": [f"A window is at most {MAX_LENGTH.days} days long."]})
    return Period(name, begin, finish)
