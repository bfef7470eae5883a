"""Overview analytics: reads only, aggregated in SQL, over billing data reached through `billing.selectors`.

Every figure's exact definition is in docs/overview.md; the short version:
- Money is exact: token amounts are summed per token in its smallest unit (int), USD estimates use the rate
  stored on each payment (at confirmation, else at checkout, else the token's current estimate). Rational
  figures (MRR normalisation) are kept as fractions and rounded once, half away from zero, at the end.
- Windows are [start, end) in UTC (overview/periods.py); each figure comes with the previous window of the
  same length and a signed delta (current - previous, both as shown).
- Test networks are left out of money figures unless `include_testnets`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import structlog
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    BigIntegerField,
    BooleanField,
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Extract, Trunc
from django.utils import timezone

from billing import selectors as billing
from billing.fields import ZERO_ADDRESS
from overview.periods import Period
from overview.stats import newcombe_difference, wilson

log = structlog.get_logger(__name__)

TX = billing.TX_STATUS
SUB = billing.SUBSCRIPTION_STATUS
PAID = (TX.CONFIRMED, TX.REFUNDED)  # money that arrived (a refund goes out later, on its own date)
SUCCEEDED = (TX.CONFIRMED, TX.REFUNDED, TX.NEEDS_REVIEW)  # the chain accepted the payment at some point
# MRR normalisation: the price of one interval times this is its monthly value.
MONTHLY_FACTOR: dict[str, Fraction] = {
    "day": Fraction(30),
    "week": Fraction(30, 7),
    "month": Fraction(1),
    "year": Fraction(1, 12),
}
GRANULARITIES = ("day", "week", "month")
SPLITS = ("none", "token", "network", "plan")
MAX_SERIES_POINTS = 800
BALANCE_TTL = timedelta(seconds=60)
BALANCE_READ_TIMEOUT = 2.0
PERCENT = Fraction(100)


# --- one consistent, cheap read per answer ---------------------------------------------------------------


def analytics_read(fn):
    """Run a report in one read-only REPEATABLE READ transaction: its figures agree with each other (one
    snapshot)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outer = connection.in_atomic_block  # inside a caller's transaction (tests): keep its isolation
        with transaction.atomic():
            with connection.cursor() as cursor:
                if not outer:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # JIT compiling these plans costs seconds and saves milliseconds; the grouped counts hash in
                # memory rather than sort to disk (the planner cannot tell how few the groups are).
                cursor.execute("SET LOCAL jit = off")
                cursor.execute("SET LOCAL work_mem = '64MB'")
            return fn(*args, **kwargs)

    return wrapper


# --- exact numbers ---------------------------------------------------------------------------------------


def round_half_up(value: Fraction, places: int = 0) -> Decimal:
    """Round half away from zero to `places` decimals, exactly (no float, no binary rounding)."""
    scaled = abs(value) * 10**places
    whole = (scaled.numerator * 2 + scaled.denominator) // (2 * scaled.denominator)
    return Decimal(f"{'-' if value < 0 and whole else ''}{whole}E-{places}")  # from text: exact at any size


def display(amount: int, decimals: int) -> str:
    """An integer amount of the smallest unit in whole tokens, exact (Decimal.scaleb would round to 28 digits)."""
    return format(Decimal(f"{amount}E-{decimals}"), "f")


def _usd_text(value: Fraction) -> str:
    return format(round_half_up(value, 2), "f")


def _ratio_text(value: Fraction | None, places: int = 4) -> str | None:
    return None if value is None else format(round_half_up(value, places), "f")


def _delta_percent(current: Fraction, previous: Fraction) -> str | None:
    if previous == 0:
        return None
    return _ratio_text((current - previous) / abs(previous) * PERCENT, 2)


def _fr(value) -> Fraction:
    return Fraction(value) if value is not None else Fraction(0)


# --- catalog -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    id: int | None
    key: str  # SYMBOL@network-slug
    symbol: str
    network: str
    network_id: int
    decimals: int
    usd_estimate: Decimal
    is_native: bool
    address: str = ""  # lower-case; empty for the native coin
    enabled: bool = True


@dataclass(frozen=True)
class PlanInfo:
    id: int
    slug: str
    title: str
    interval: str
    experiment: str
    variant: str
    price_token_id: int
    price_amount: int


class Catalog:
    """Networks, tokens and plans of one request (a few dozen rows), so aggregates group by ids only."""

    def __init__(self) -> None:
        self.networks = {n.pk: n for n in billing.analytics_networks()}
        self.tokens: dict[int, TokenInfo] = {}
        self.by_key: dict[str, TokenInfo] = {}
        self.native: dict[int, TokenInfo] = {}
        self.token_models = {}
        for t in billing.analytics_tokens():
            self.token_models[t.pk] = t
            info = TokenInfo(
                id=t.pk,
                key=f"{t.symbol}@{t.network.slug}",
                symbol=t.symbol,
                network=t.network.slug,
                network_id=t.network_id,
                decimals=t.decimals,
                usd_estimate=t.usd_estimate or Decimal(0),
                is_native=t.is_native,
                address=t.address.lower(),
                enabled=t.enabled,
            )
            self.tokens[t.pk] = info
            self.by_key[info.key] = info
            if info.is_native:
                self.native[t.network_id] = info
        for net in self.networks.values():
            if net.pk not in self.native:  # fees are paid in the native coin even if no Token row names it
                info = TokenInfo(
                    None,
                    f"{net.native_symbol}@{net.slug}",
                    net.native_symbol,
                    net.slug,
                    net.pk,
                    net.native_decimals,
                    Decimal(0),
                    True,
                )
                self.native[net.pk] = info
                self.by_key[info.key] = info
        self.plans = {
            p.pk: PlanInfo(p.pk, p.slug, p.title, p.interval, p.experiment, p.variant, p.price_token_id, p.price_amount)
            for p in billing.analytics_plans()
        }
        self.plan_by_slug = {p.slug: p for p in self.plans.values()}
        self.network_by_slug = {n.slug: n for n in self.networks.values()}

    def money_network_ids(self, include_testnets: bool) -> list[int]:
        return sorted(pk for pk, n in self.networks.items() if include_testnets or not n.is_testnet)


# --- money ---------------------------------------------------------------------------------------------


@dataclass
class Money:
    """Amounts per token (exact fractions of the smallest unit) and their exact USD estimates per token."""

    amounts: dict[str, Fraction] = field(default_factory=dict)
    usds: dict[str, Fraction] = field(default_factory=dict)

    @property
    def usd(self) -> Fraction:
        return sum(self.usds.values(), Fraction(0))

    def add(self, token: TokenInfo, amount, usd: Fraction) -> None:
        self.amounts[token.key] = self.amounts.get(token.key, Fraction(0)) + _fr(amount)
        self.usds[token.key] = self.usds.get(token.key, Fraction(0)) + usd

    def plus(self, other: Money, sign: int = 1) -> Money:
        out = Money(dict(self.amounts), dict(self.usds))
        for key, amount in other.amounts.items():
            out.amounts[key] = out.amounts.get(key, Fraction(0)) + sign * amount
            out.usds[key] = out.usds.get(key, Fraction(0)) + sign * other.usds[key]
        return out

    def shown(self) -> tuple[dict[str, tuple[int, Decimal]], Decimal]:
        """Per token (amount rounded to the smallest unit, USD to the cent) and the total USD, rounded once."""
        per_token = {k: (int(round_half_up(v)), round_half_up(self.usds[k], 2)) for k, v in self.amounts.items()}
        return per_token, round_half_up(self.usd, 2)


def _token_amount(catalog: Catalog, key: str, amount: int, usd: Decimal) -> dict:
    token = catalog.by_key[key]
    return {
        "token": key,
        "symbol": token.symbol,
        "network": token.network,
        "decimals": token.decimals,
        "amount": str(amount),
        "display": display(amount, token.decimals),
        "usd": format(usd, "f"),
    }


ZERO = (0, Decimal("0.00"))


def money_figure(catalog: Catalog, money: Money) -> dict:
    per_token, usd = money.shown()
    return {
        "usd": format(usd, "f"),
        "by_token": [_token_amount(catalog, k, *per_token[k]) for k in sorted(per_token)],
    }


def money_kpi(catalog: Catalog, current: Money, previous: Money) -> dict:
    """Current, previous and the signed delta of what is shown (so current - previous == delta exactly)."""
    cur, cur_usd = current.shown()
    prev, prev_usd = previous.shown()
    keys = sorted(set(cur) | set(prev))

    def delta(k: str) -> tuple[int, Decimal]:
        (a, u), (b, v) = cur.get(k, ZERO), prev.get(k, ZERO)
        return a - b, u - v

    return {
        "current": {
            "usd": format(cur_usd, "f"),
            "by_token": [_token_amount(catalog, k, *cur.get(k, ZERO)) for k in keys],
        },
        "previous": {
            "usd": format(prev_usd, "f"),
            "by_token": [_token_amount(catalog, k, *prev.get(k, ZERO)) for k in keys],
        },
        "delta": {
            "usd": format(cur_usd - prev_usd, "f"),
            "by_token": [_token_amount(catalog, k, *delta(k)) for k in keys],
        },
        "delta_percent": _delta_percent(Fraction(cur_usd), Fraction(prev_usd)),
    }


def count_kpi(current: int, previous: int) -> dict:
    return {
        "current": current,
        "previous": previous,
        "delta": current - previous,
        "delta_percent": _delta_percent(Fraction(current), Fraction(previous)),
    }


def ratio_kpi(current: Fraction | None, previous: Fraction | None, places: int = 4) -> dict:
    """Rates and USD averages as decimal strings; the delta is of the shown values."""
    cur = None if current is None else round_half_up(current, places)
    prev = None if previous is None else round_half_up(previous, places)
    return {
        "current": None if cur is None else format(cur, "f"),
        "previous": None if prev is None else format(prev, "f"),
        "delta": None if cur is None or prev is None else format(cur - prev, "f"),
        "delta_percent": None if cur is None or prev is None else _delta_percent(Fraction(cur), Fraction(prev)),
    }


# --- SQL building blocks ---------------------------------------------------------------------------------

DEC = DecimalField()
ONE = Value(1)  # COUNT(1) FILTER (...): counts rows without reading a column an index does not hold
RATE = Coalesce(F("usd_rate_at_confirmation"), F("usd_rate_at_checkout"), output_field=DEC)
USD_NUMERATOR = ExpressionWrapper(F("amount") * RATE, output_field=DEC)
RATED = Q(usd_rate_at_confirmation__isnull=False) | Q(usd_rate_at_checkout__isnull=False)


class PercentileCont(Aggregate):
    """percentile_cont(f) WITHIN GROUP (ORDER BY expr): a continuous percentile computed by PostgreSQL."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    allow_distinct = False
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=str(float(fraction)), **extra)


def _usd(token: TokenInfo, numerator, unrated) -> Fraction:
    """USD of a group of payments: sum(amount * stored rate), plus unrated amounts at the token's estimate."""
    total = _fr(numerator) + _fr(unrated) * _fr(token.usd_estimate)
    return total / 10**token.decimals


def _checkout_payments():
    """Ledger rows born of a checkout (they have a customer). Unmatched transfers are not revenue."""
    return billing.analytics_payments().filter(user__isnull=False)


def _is_current(field_name: str, start: datetime) -> ExpressionWrapper:
    """Groups a scan over both windows into current (true) and previous (false) rows."""
    return ExpressionWrapper(Q(**{f"{field_name}__gte": start}), output_field=BooleanField())


MONEY_SUMS = {
    "s_amount": Sum("amount"),
    "s_usd": Sum(USD_NUMERATOR),  # rows without a stored rate add NULL, which SUM skips ...
    "s_unrated": Sum("amount", filter=~RATED),  # ... and come back at the token's estimate
    "s_n": Count("*"),
}


def _collect(catalog: Catalog, rows, token_of, key_of) -> dict:
    """rows with is_cur and s_amount/s_usd/s_unrated/s_n -> {"cur"|"prev": {key: [Money, count]}}."""
    out: dict[str, dict] = {p: defaultdict(lambda: [Money(), 0]) for p in ("cur", "prev")}
    for row in rows:
        token = token_of(row)
        slot = out["cur" if row["is_cur"] else "prev"][key_of(row)]
        slot[0].add(token, row["s_amount"], _usd(token, row["s_usd"], row["s_unrated"]))
        slot[1] += row["s_n"]
    return out


def _day_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _day_ceil(moment: datetime) -> datetime:
    floor = _day_floor(moment)
    return floor if floor == moment else floor + timedelta(days=1)


def split_days(period: Period) -> tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
    """Both windows cut into the whole UTC days inside one of them (read from the daily rollup) and the
    partial days at their edges (read from the ledger): (rollup runs, ledger ranges), each [from, to)."""
    runs, edges = [], []
    for a, b in ((period.previous.start, period.start), (period.start, period.end)):
        lo, hi = _day_ceil(a), _day_floor(b)
        if lo >= hi:  # no whole day inside: all from the ledger
            edges.append((a, b))
            continue
        runs.append((lo, hi))
        edges.extend(r for r in ((a, lo), (hi, b)) if r[0] < r[1])
    merged: list[tuple[datetime, datetime]] = []
    for a, b in edges:  # the day cut by `start` is one range, not two (one index range scan less)
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return runs, merged


ROLLUP_SUMS = {"s_amount": Sum("amount"), "s_usd": Sum("usd"), "s_unrated": Sum("unrated"), "s_n": Sum("n")}


def _money_rows(
    kind: str,
    moment_field: str,
    status_q: Q,
    period: Period,
    network_ids: list[int],
    group: tuple[str, ...],
    extra: Q | None,
) -> list[dict]:
    """Sums of `kind` (gross or refunds) over both windows, by window and `group` (token, network, plan ids):
    whole UTC days from the daily rollup (billing.models.rollup, kept in step with the ledger in the writing
    transaction), the partial days at the windows' edges from the ledger, in one statement. A group may come
    back in several rows (one per source and range); _collect adds them up."""
    runs, edges = split_days(period)
    parts = [
        _checkout_payments()
        .filter(
            extra or Q(),
            status_q,
            network_id__in=network_ids,
            **{f"{moment_field}__gte": a, f"{moment_field}__lt": b},
        )
        .annotate(is_cur=_is_current(moment_field, period.start))
        .values("is_cur", *group)
        .annotate(**MONEY_SUMS)
        for a, b in edges
    ]
    if runs:
        days = Q()
        for lo, hi in runs:
            days |= Q(day__gte=lo.date(), day__lt=hi.date())
        parts.append(
            billing.analytics_revenue_rollup()
            .filter(days, extra or Q(), kind=kind, network_id__in=network_ids)
            .annotate(is_cur=ExpressionWrapper(Q(day__gte=_day_ceil(period.start).date()), output_field=BooleanField()))
            .values("is_cur", *group)
            .annotate(**ROLLUP_SUMS)
        )
    first, *rest = parts
    return list(first.union(*rest, all=True)) if rest else list(first)


def _gross_rows(period: Period, network_ids: list[int], group: tuple[str, ...], extra: Q | None = None):
    """Money received by payments confirmed in the window and the previous one."""
    return _money_rows("gross", "confirmed_at", Q(status__in=PAID), period, network_ids, group, extra)


def _refund_rows(period: Period, network_ids: list[int], group: tuple[str, ...], extra: Q | None = None):
    """Money sent back: refunded payments, on the date of the refund, valued like their payment."""
    return _money_rows("refund", "refunded_at", Q(status=TX.REFUNDED), period, network_ids, group, extra)


def _fee_rows(period: Period, network_ids: list[int], group: tuple[str, ...], extra: Q | None = None):
    """Network fees of the operator's refund and withdrawal transactions (mined or reverted: both paid gas)."""
    return (
        billing.analytics_operator_transactions()
        .filter(
            extra or Q(),
            kind__in=(billing.OPERATOR_TX_KIND.REFUND, billing.OPERATOR_TX_KIND.WITHDRAW),
            status__in=(billing.OPERATOR_TX_STATUS.MINED, billing.OPERATOR_TX_STATUS.REVERTED),
            fee__isnull=False,
            network_id__in=network_ids,
            mined_at__gte=period.previous.start,
            mined_at__lt=period.end,
        )
        .annotate(is_cur=_is_current("mined_at", period.start))
        .values("is_cur", "network_id", *group)
        .annotate(s_fee=Sum("fee"), s_n=Count("*"))
    )


def _fees_money(catalog: Catalog, rows, key_of=lambda row: None) -> dict[str, dict]:
    out: dict[str, dict] = {"cur": defaultdict(lambda: [Money(), 0]), "prev": defaultdict(lambda: [Money(), 0])}
    for row in rows:
        native = catalog.native[row["network_id"]]
        slot = out["cur" if row["is_cur"] else "prev"][key_of(row)]
        fee = _fr(row["s_fee"])
        slot[0].add(native, fee, fee * _fr(native.usd_estimate) / 10**native.decimals)
        slot[1] += row["s_n"]
    return out


# --- subscriptions: MRR, active, new, churned, past due, debt -------------------------------------------


def _active_at(t: datetime) -> Q:
    """In force just before t: started before t, not ended before t, paid through t."""
    return Q(created_at__lt=t) & (Q(ended_at__isnull=True) | Q(ended_at__gte=t)) & Q(current_period_end__gte=t)


def _past_due_at(t: datetime) -> Q:
    """Started, not ended, its paid time over and not canceled: the renewal is owed."""
    return (
        Q(created_at__lt=t)
        & (Q(ended_at__isnull=True) | Q(ended_at__gte=t))
        & Q(current_period_end__lt=t)
        & Q(cancel_at_period_end=False)
    )


def _in(field_name: str, start: datetime, end: datetime) -> Q:
    return Q(**{f"{field_name}__gte": start, f"{field_name}__lt": end})


@dataclass
class SubscriptionFigures:
    mrr: Money
    active: int
    past_due: int
    debt_past_due: Money
    new: int
    churned: int
    lapsed: int
    debt_lapsed: Money


def token_rates(catalog: Catalog, instants: dict[str, datetime]) -> dict[str, dict[int, Fraction]]:
    """USD per whole token at each instant: the rate stored on the latest paid payment in that token confirmed
    before it (at confirmation, else at checkout); the token's current estimate when there is none."""
    annotations = {}
    for name, t in instants.items():
        latest = (
            billing.analytics_payments()
            .filter(token_id=OuterRef("pk"), status__in=PAID, confirmed_at__lt=t)
            .order_by("-confirmed_at", "-id")
            .annotate(rate=RATE)
            .values("rate")[:1]
        )
        annotations[f"rate_{name}"] = Subquery(latest, output_field=DEC)
    out: dict[str, dict[int, Fraction]] = {name: {} for name in instants}
    for row in billing.analytics_tokens_queryset().annotate(**annotations).values("pk", "usd_estimate", *annotations):
        for name in instants:
            rate = row[f"rate_{name}"]
            out[name][row["pk"]] = _fr(rate if rate is not None else row["usd_estimate"])
    return out


def _mrr_money(catalog: Catalog, plan: PlanInfo, count: int, rate: Fraction) -> tuple[TokenInfo, Fraction, Fraction]:
    token = catalog.tokens[plan.price_token_id]
    amount = plan.price_amount * count * MONTHLY_FACTOR[plan.interval]
    return token, amount, amount * rate / 10**token.decimals


def subscription_figures(catalog: Catalog, period: Period, network_ids: list[int]) -> dict[str, object]:
    """Subscriptions of both windows in one scan of those that lived in either of them.

    MRR at an instant t: every subscription in force at t (started before t, not ended, paid through t) adds the
    list price of the plan in force at t, per month (MONTHLY_FACTOR), in that plan's price token; the USD estimate
    uses each token's rate stored on its latest payment before t (token_rates). The plan in force at t is the
    subscription's plan when its current period started by t (renewals keep the period start; only an upgrade or
    a downgrade taking effect moves it); otherwise the plan of the customer's latest payment confirmed before t
    and not refunded by then (looked up for those few subscriptions only).
    Returns {"cur": SubscriptionFigures, "prev": ..., "segments": {...}, "base_active": int}.
    """
    end, start, prev_start = period.end, period.start, period.previous.start
    paid_at_start = Q(status=TX.CONFIRMED) | Q(status=TX.REFUNDED, refunded_at__gte=start)
    plan_then = (
        _checkout_payments()
        .filter(paid_at_start, user_id=OuterRef("user_id"), confirmed_at__lt=start, plan_id__isnull=False)
        .order_by("-confirmed_at")
        .values("plan_id")[:1]
    )
    plan_ids = [
        pk for pk, plan in catalog.plans.items() if catalog.tokens[plan.price_token_id].network_id in network_ids
    ]
    # Steady: in force since before both windows, paid through `end`, on the same plan since before `start`.
    # Such a subscription is in force at all three instants (base, start, end) on its own plan, was neither
    # created nor ended in a window and owes nothing: it adds its plan's MRR at both ends and one to each active
    # count, and nothing else. Most live subscriptions are steady; they are counted per plan from a narrow
    # partial index (subscription_steady_idx), and the per-row classification below runs only on the rest.
    steady = Q(
        ended_at__isnull=True,
        created_at__lt=prev_start,
        current_period_start__lte=start,
        current_period_end__gte=end,
    )
    steady_counts = (
        billing.analytics_subscriptions().filter(steady, plan_id__in=plan_ids).values("plan_id").annotate(n=Count("*"))
    )
    subs = (
        billing.analytics_subscriptions()
        .filter(plan_id__in=plan_ids, created_at__lt=end)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=prev_start))
        .filter(~steady)
        .annotate(
            # Lazily evaluated by PostgreSQL: the lookup runs only for subscriptions whose plan changed since.
            plan_at_start=Case(
                When(Q(current_period_start__lte=start) | ~_active_at(start), then=F("plan_id")),
                default=Coalesce(Subquery(plan_then), F("plan_id"), output_field=BigIntegerField()),
                output_field=BigIntegerField(),
            ),
        )
    )

    def flag(q: Q):
        return Cast(ExpressionWrapper(q, output_field=BooleanField()), IntegerField())

    def state_at(t: datetime):
        """0: not started or ended by t; 1: in force at t; 2: its paid time over (past due unless canceled)."""
        lived = Q(created_at__lt=t) & (Q(ended_at__isnull=True) | Q(ended_at__gte=t))
        return ExpressionWrapper(flag(lived) * (1 + flag(Q(current_period_end__lt=t))), output_field=IntegerField())

    def window_of(field_name: str):
        """0: before the previous window (or empty); 1: in the previous window; 2: in the current one."""
        return ExpressionWrapper(
            flag(Q(**{f"{field_name}__gte": prev_start})) + flag(Q(**{f"{field_name}__gte": start})),
            output_field=IntegerField(),
        )

    # Each subscription falls into a few small integer categories computed once per row; PostgreSQL counts the
    # combinations (a few hundred at most) and Python adds them up.
    rows = (
        subs.annotate(
            at_end=state_at(end),
            at_start=state_at(start),
            at_base=state_at(prev_start),
            created_in=window_of("created_at"),
            ended_in=window_of("ended_at"),
            has_grace=flag(Q(grace_until__isnull=False)),
        )
        .values(
            "plan_id",
            "plan_at_start",
            "debt_token_id",
            "at_end",
            "at_start",
            "at_base",
            "created_in",
            "ended_in",
            "status",
            "cancel_at_period_end",
            "has_grace",
        )
        # The debt is the amount owed, else one period at the plan's price (in the plan's token): summed here as
        # the owed amounts plus a count of those owing nothing, priced in Python from the catalog (no join).
        .annotate(n=Count("*"), debt=Sum("debt_amount"), n_unpriced=Count("id", filter=Q(debt_amount=0)))
    )
    rates = token_rates(catalog, {"cur": end, "prev": start})
    figures = {p: SubscriptionFigures(Money(), 0, 0, Money(), 0, 0, 0, Money()) for p in ("cur", "prev")}
    segments: dict[tuple, dict] = {}
    base_active = 0
    window = {2: "cur", 1: "prev"}
    steady_rows = [
        {
            "plan_id": row["plan_id"],
            "plan_at_start": row["plan_id"],
            "debt_token_id": None,
            "at_end": 1,
            "at_start": 1,
            "at_base": 1,
            "created_in": 0,
            "ended_in": None,
            "status": SUB.ACTIVE,
            "cancel_at_period_end": False,
            "has_grace": 0,
            "n": row["n"],
            "debt": 0,
            "n_unpriced": 0,
        }
        for row in steady_counts
    ]
    for row in [*rows, *steady_rows]:
        n = row["n"]
        own_plan = catalog.plans[row["plan_id"]]
        debt_token = catalog.tokens[row["debt_token_id"] or own_plan.price_token_id]
        debt = _fr(row["debt"]) + row["n_unpriced"] * own_plan.price_amount
        debt_usd = debt * _fr(debt_token.usd_estimate) / 10**debt_token.decimals
        for p, state, plan_id in (
            ("cur", row["at_end"], row["plan_id"]),
            ("prev", row["at_start"], row["plan_at_start"]),
        ):
            fig = figures[p]
            if state == 1:
                plan = catalog.plans[plan_id]
                token, amount, usd = _mrr_money(catalog, plan, n, rates[p].get(plan.price_token_id, Fraction(0)))
                fig.mrr.add(token, amount, usd)
                fig.active += n
                if p == "cur":
                    seg = segments.setdefault((plan_id, token.key), {"active": 0, "mrr": Money()})
                    seg["active"] += n
                    seg["mrr"].add(token, amount, usd)
            elif state == 2 and not row["cancel_at_period_end"]:
                fig.past_due += n
                fig.debt_past_due.add(debt_token, debt, debt_usd)
        if row["at_base"] == 1:
            base_active += n
        if row["created_in"] in window:
            figures[window[row["created_in"]]].new += n
        if row["ended_in"] in window and row["status"] in (SUB.CANCELED, SUB.EXPIRED):
            fig = figures[window[row["ended_in"]]]
            fig.churned += n
            if row["status"] == SUB.EXPIRED and row["has_grace"]:
                fig.lapsed += n
                fig.debt_lapsed.add(debt_token, debt, debt_usd)
    return {"cur": figures["cur"], "prev": figures["prev"], "segments": segments, "base_active": base_active}


# --- dashboard -------------------------------------------------------------------------------------------


def _sum_money(groups: dict) -> tuple[Money, int]:
    total, n = Money(), 0
    for money, count in groups.values():
        total = total.plus(money)
        n += count
    return total, n


def _checkout_rows(period: Period, network_ids: list[int], group: tuple[str, ...] = ()):
    """Checkouts created in both windows, counted per window, status (and `group`) from the ledger itself."""
    return (
        _checkout_payments()
        .filter(network_id__in=network_ids, created_at__gte=period.previous.start, created_at__lt=period.end)
        .annotate(is_cur=_is_current("created_at", period.start))
        .values("is_cur", "status", *group)
        .annotate(n=Count("*"))
    )


def _tally(rows, key_of=lambda row: None) -> dict:
    """{key: {"cur"|"prev": {"started", "failed", "succeeded", "paid"}}} from _checkout_rows."""
    out: dict = defaultdict(
        lambda: {p: dict.fromkeys(("started", "failed", "succeeded", "paid"), 0) for p in ("cur", "prev")}
    )
    for row in rows:
        counts = out[key_of(row)]["cur" if row["is_cur"] else "prev"]
        counts["started"] += row["n"]
        counts["failed"] += row["n"] if row["status"] == TX.FAILED else 0
        counts["succeeded"] += row["n"] if row["status"] in SUCCEEDED else 0
        counts["paid"] += row["n"] if row["status"] in PAID else 0
    return out


def _checkout_counts(period: Period, network_ids: list[int]) -> dict[str, dict[str, int]]:
    return _tally(_checkout_rows(period, network_ids))[None]


def _failure_rate(counts: dict[str, int]) -> Fraction | None:
    attempts = counts["failed"] + counts["succeeded"]
    return Fraction(counts["failed"], attempts) if attempts else None


def _conversion(counts: dict[str, int]) -> Fraction | None:
    return Fraction(counts["paid"], counts["started"]) if counts["started"] else None


def revenue_totals(catalog: Catalog, period: Period, network_ids: list[int]) -> dict[str, dict[str, Money]]:
    gross = _collect(
        catalog,
        _gross_rows(period, network_ids, ("token_id",)),
        lambda r: catalog.tokens[r["token_id"]],
        lambda r: None,
    )
    refunds = _collect(
        catalog,
        _refund_rows(period, network_ids, ("token_id",)),
        lambda r: catalog.tokens[r["token_id"]],
        lambda r: None,
    )
    fees = _fees_money(catalog, _fee_rows(period, network_ids, ()))
    out: dict[str, dict[str, Money]] = {}
    for p in ("cur", "prev"):
        g, r, f = _sum_money(gross[p])[0], _sum_money(refunds[p])[0], _sum_money(fees[p])[0]
        out[p] = {"gross": g, "refunds": r, "fees": f, "net": g.plus(r, -1).plus(f, -1)}
    return out


@analytics_read
def dashboard(*, period: Period, include_testnets: bool = False) -> dict:
    catalog = Catalog()
    ids = catalog.money_network_ids(include_testnets)
    money = revenue_totals(catalog, period, ids)
    subs = subscription_figures(catalog, period, ids)
    cur, prev = subs["cur"], subs["prev"]
    counts = _checkout_counts(period, ids)

    def arpu(fig: SubscriptionFigures) -> Fraction | None:
        return fig.mrr.usd / fig.active if fig.active else None

    def churn_rate(churned: int, base: int) -> Fraction | None:
        return Fraction(churned, base) if base else None

    segments = []
    for (plan_id, token_key), seg in sorted(
        subs["segments"].items(), key=lambda kv: (catalog.plans[kv[0][0]].slug, kv[0][1])
    ):
        plan = catalog.plans[plan_id]
        token = catalog.by_key[token_key]
        segments.append(
            {
                "plan": plan.slug,
                "plan_title": plan.title,
                "interval": plan.interval,
                "experiment": plan.experiment,
                "variant": plan.variant,
                "token": token.key,
                "network": token.network,
                "active_subscriptions": seg["active"],
                "mrr": money_figure(catalog, seg["mrr"]),
            }
        )
    return {
        "period": period.as_dict(),
        "include_testnets": include_testnets,
        "kpis": {
            "mrr": money_kpi(catalog, cur.mrr, prev.mrr),
            "arpu_usd": ratio_kpi(arpu(cur), arpu(prev), 2),
            "active_subscriptions": count_kpi(cur.active, prev.active),
            "new_subscriptions": count_kpi(cur.new, prev.new),
            "churned_subscriptions": count_kpi(cur.churned, prev.churned),
            "churn_rate": ratio_kpi(
                churn_rate(cur.churned, prev.active), churn_rate(prev.churned, subs["base_active"])
            ),
            "past_due_subscriptions": count_kpi(cur.past_due, prev.past_due),
            "revenue_gross": money_kpi(catalog, money["cur"]["gross"], money["prev"]["gross"]),
            "refunds": money_kpi(catalog, money["cur"]["refunds"], money["prev"]["refunds"]),
            "network_fees": money_kpi(catalog, money["cur"]["fees"], money["prev"]["fees"]),
            "revenue_net": money_kpi(catalog, money["cur"]["net"], money["prev"]["net"]),
            "debt": money_kpi(
                catalog, cur.debt_past_due.plus(cur.debt_lapsed), prev.debt_past_due.plus(prev.debt_lapsed)
            ),
            "debt_past_due": money_kpi(catalog, cur.debt_past_due, prev.debt_past_due),
            "debt_lapsed": money_kpi(catalog, cur.debt_lapsed, prev.debt_lapsed),
            "lapsed_subscriptions": count_kpi(cur.lapsed, prev.lapsed),
            "checkouts": count_kpi(counts["cur"]["started"], counts["prev"]["started"]),
            "conversion": ratio_kpi(_conversion(counts["cur"]), _conversion(counts["prev"])),
            "failure_rate": ratio_kpi(_failure_rate(counts["cur"]), _failure_rate(counts["prev"])),
        },
        "segments": segments,
    }


# --- revenue series ----------------------------------------------------------------------------------------


def _bucket_start(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "day":
        return day
    if granularity == "week":  # ISO weeks start on Monday, as PostgreSQL's date_trunc('week')
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_bucket(start: datetime, granularity: str) -> datetime:
    if granularity == "day":
        return start + timedelta(days=1)
    if granularity == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def series_buckets(period: Period, granularity: str) -> list[tuple[datetime, datetime]]:
    """UTC buckets covering [start, end); the first and last may be cut by the window."""
    out = []
    cursor = _bucket_start(period.start, granularity)
    while cursor < period.end:
        nxt = _next_bucket(cursor, granularity)
        out.append((max(cursor, period.start), min(nxt, period.end)))
        cursor = nxt
    return out


def count_buckets(period: Period, granularity: str) -> int:
    approx = {"day": 1, "week": 7, "month": 28}[granularity]
    return period.length.days // approx + 2


@dataclass(frozen=True)
class SeriesFilter:
    token: TokenInfo | None = None
    network_id: int | None = None
    plan_id: int | None = None

    def payments(self) -> Q:
        q = Q()
        if self.token is not None:
            q &= Q(token_id=self.token.id)
        if self.network_id is not None:
            q &= Q(network_id=self.network_id)
        if self.plan_id is not None:
            q &= Q(plan_id=self.plan_id)
        return q

    def fees(self) -> Q | None:
        """None: no fee can match (a plan filter keeps refund fees of that plan; withdrawals have no plan)."""
        q = Q()
        if self.token is not None:
            if not self.token.is_native:
                return None
            q &= Q(network_id=self.token.network_id)
        if self.network_id is not None:
            q &= Q(network_id=self.network_id)
        if self.plan_id is not None:
            q &= Q(payment__plan_id=self.plan_id)
        return q


SPLIT_FIELD = {"none": None, "token": "token_id", "network": "network_id", "plan": "plan_id"}
NO_PLAN = "(no plan)"


def _split_label(catalog: Catalog, split: str, value) -> str:
    if split == "none":
        return "all"
    if split == "token":
        return catalog.tokens[value].key if value in catalog.tokens else catalog.native[value].key
    if split == "network":
        return catalog.networks[value].slug
    return catalog.plans[value].slug if value is not None else NO_PLAN


@analytics_read
def revenue(
    *,
    period: Period,
    include_testnets: bool = False,
    granularity: str = "day",
    basis: str = "gross",
    split: str = "none",
    filters: SeriesFilter | None = None,
    catalog: Catalog | None = None,
) -> dict:
    """Totals for the window (with the previous one) and a series per split key, bucketed in UTC."""
    catalog = catalog or Catalog()
    filters = filters or SeriesFilter()
    ids = catalog.money_network_ids(include_testnets)
    if filters.network_id is not None:
        ids = [i for i in ids if i == filters.network_id]
    buckets = series_buckets(period, granularity)
    index = {start_of: i for i, (start_of, _) in enumerate(buckets)}
    split_field = SPLIT_FIELD[split]

    def bucket_of(moment: datetime) -> int:
        return index[max(_bucket_start(moment, granularity), buckets[0][0])]

    # series[label][bucket] -> Money; each component signed (+gross, -refunds, -fees)
    series: dict[str, list[Money]] = {}

    def add(label: str, i: int, token: TokenInfo, amount, usd: Fraction, sign: int) -> None:
        points = series.setdefault(label, [Money() for _ in buckets])
        points[i].add(token, sign * _fr(amount), sign * usd)

    window = Q()  # the series covers the current window only
    trunc = {
        "confirmed_at": Trunc("confirmed_at", granularity, tzinfo=UTC),
        "refunded_at": Trunc("refunded_at", granularity, tzinfo=UTC),
        "mined_at": Trunc("mined_at", granularity, tzinfo=UTC),
    }
    group_extra = (split_field,) if split_field and split_field != "token_id" else ()

    components = [("confirmed_at", 1, Q(status__in=PAID))]
    if basis == "net":
        components.append(("refunded_at", -1, Q(status=TX.REFUNDED)))
    for moment_field, sign, status_q in components:
        rows = (
            _checkout_payments()
            .filter(
                window,
                status_q,
                filters.payments(),
                network_id__in=ids,
                **{f"{moment_field}__gte": period.start, f"{moment_field}__lt": period.end},
            )
            .annotate(bucket=trunc[moment_field])
            .values("bucket", "token_id", *group_extra)
            .annotate(
                s_amount=Sum("amount"),
                s_usd=Sum(USD_NUMERATOR, filter=RATED),
                s_unrated=Sum("amount", filter=~RATED),
            )
        )
        for row in rows:
            token = catalog.tokens[row["token_id"]]
            value = row[split_field] if split_field else None
            add(
                _split_label(catalog, split, value),
                bucket_of(row["bucket"]),
                token,
                row["s_amount"],
                _usd(token, row["s_usd"], row["s_unrated"]),
                sign,
            )
    if basis == "net":
        fee_q = filters.fees()
        if fee_q is not None:
            fee_group = {"plan": ("payment__plan_id",)}.get(split, ())
            rows = (
                billing.analytics_operator_transactions()
                .filter(
                    fee_q,
                    kind__in=(billing.OPERATOR_TX_KIND.REFUND, billing.OPERATOR_TX_KIND.WITHDRAW),
                    status__in=(billing.OPERATOR_TX_STATUS.MINED, billing.OPERATOR_TX_STATUS.REVERTED),
                    fee__isnull=False,
                    network_id__in=ids,
                    mined_at__gte=period.start,
                    mined_at__lt=period.end,
                )
                .annotate(bucket=trunc["mined_at"])
                .values("bucket", "network_id", *fee_group)
                .annotate(fee=Sum("fee"))
            )
            for row in rows:
                native = catalog.native[row["network_id"]]
                if split == "token":
                    label = native.key
                elif split == "network":
                    label = catalog.networks[row["network_id"]].slug
                elif split == "plan":
                    plan_id = row["payment__plan_id"]
                    label = catalog.plans[plan_id].slug if plan_id is not None else NO_PLAN
                else:
                    label = "all"
                fee = _fr(row["fee"])
                add(
                    label,
                    bucket_of(row["bucket"]),
                    native,
                    fee,
                    fee * _fr(native.usd_estimate) / 10**native.decimals,
                    -1,
                )

    if not series and split == "none":
        series["all"] = [Money() for _ in buckets]
    totals = _revenue_totals_filtered(catalog, period, ids, filters)
    return {
        "period": period.as_dict(),
        "include_testnets": include_testnets,
        "granularity": granularity,
        "basis": basis,
        "split": split,
        "filters": {
            "token": filters.token.key if filters.token else None,
            "network": catalog.networks[filters.network_id].slug if filters.network_id is not None else None,
            "plan": catalog.plans[filters.plan_id].slug if filters.plan_id is not None else None,
        },
        "totals": {name: money_kpi(catalog, values["cur"], values["prev"]) for name, values in totals.items()},
        "series": [
            {
                "key": label,
                "points": [
                    {"start": b0, "end": b1, **money_figure(catalog, points[i])} for i, (b0, b1) in enumerate(buckets)
                ],
            }
            for label, points in sorted(series.items())
        ],
    }


def _revenue_totals_filtered(
    catalog: Catalog, period: Period, ids: list[int], filters: SeriesFilter
) -> dict[str, dict[str, Money]]:
    token_of = lambda r: catalog.tokens[r["token_id"]]  # noqa: E731
    gross = _collect(catalog, _gross_rows(period, ids, ("token_id",), filters.payments()), token_of, lambda r: None)
    refunds = _collect(catalog, _refund_rows(period, ids, ("token_id",), filters.payments()), token_of, lambda r: None)
    fee_q = filters.fees()
    fees = _fees_money(catalog, _fee_rows(period, ids, (), fee_q)) if fee_q is not None else {"cur": {}, "prev": {}}
    out: dict[str, dict[str, Money]] = {"gross": {}, "refunds": {}, "fees": {}, "net": {}}
    for p in ("cur", "prev"):
        g, r, f = _sum_money(gross[p])[0], _sum_money(refunds[p])[0], _sum_money(fees[p])[0]
        out["gross"][p], out["refunds"][p], out["fees"][p] = g, r, f
        out["net"][p] = g.plus(r, -1).plus(f, -1)
    return out


def revenue_csv_rows(report: dict) -> list[list[str]]:
    """One row per bucket, series and token (tidy data); a bucket with no money has one row with no token."""
    rows = [["bucket_start", "bucket_end", "series", "basis", "token", "amount", "amount_display", "usd"]]
    for series in report["series"]:
        for point in series["points"]:
            start, end = point["start"].isoformat(), point["end"].isoformat()
            if not point["by_token"]:
                rows.append([start, end, series["key"], report["basis"], "", "0", "0", "0.00"])
            for item in point["by_token"]:
                rows.append(
                    [
                        start,
                        end,
                        series["key"],
                        report["basis"],
                        item["token"],
                        item["amount"],
                        item["display"],
                        item["usd"],
                    ]
                )
    return rows


# --- networks ----------------------------------------------------------------------------------------------


@analytics_read
def networks(*, period: Period, include_testnets: bool = False) -> dict:
    """Per network: volume and transactions with the previous window, failure rate, confirmation latency
    (submitted -> confirmed, percentile_cont in SQL), follower lag per contract, RPC endpoint health."""
    catalog = Catalog()
    ids = catalog.money_network_ids(include_testnets)
    volume = _collect(
        catalog,
        _gross_rows(period, ids, ("network_id", "token_id")),
        lambda r: catalog.tokens[r["token_id"]],
        lambda r: r["network_id"],
    )
    attempts = _tally(_checkout_rows(period, ids, ("network_id",)), lambda row: row["network_id"])
    seconds = ExpressionWrapper(Extract(F("confirmed_at") - F("submitted_at"), "epoch"), output_field=FloatField())
    latency = {
        row["network_id"]: row
        for row in _checkout_payments()
        .filter(
            network_id__in=ids,
            status__in=SUCCEEDED,
            submitted_at__isnull=False,
            confirmed_at__gte=period.start,
            confirmed_at__lt=period.end,
        )
        .values("network_id")
        .annotate(
            p50=PercentileCont(seconds, 0.5),
            p95=PercentileCont(seconds, 0.95),
            samples=Count("*"),
        )
    }
    endpoints = defaultdict(list)
    for endpoint in billing.rpc_endpoints_health():
        endpoints[endpoint.pop("network_id")].append(endpoint)
    contracts = defaultdict(list)
    for contract in billing.analytics_contracts():
        contracts[contract.network_id].append(contract)

    out = []
    for network_id in ids:
        network = catalog.networks[network_id]
        live = [e for e in endpoints.get(network_id, []) if e["enabled"]]
        heads = [e["last_head_block"] for e in live if e["last_head_block"] is not None]
        head = max(heads) if heads else None
        followers = []
        for contract in contracts.get(network_id, []):
            cursor = getattr(contract, "cursor", None)
            last_block = cursor.last_block if cursor else None
            lag = max(head - last_block, 0) if head is not None and last_block is not None else None
            followers.append(
                {
                    "contract": contract.slug,
                    "enabled": contract.enabled,
                    "last_block": last_block,
                    "head_block": head,
                    "lag_blocks": lag,
                    "behind_depth_blocks": None if lag is None else max(lag - network.confirmation_depth, 0),
                    "last_run_at": cursor.last_run_at if cursor else None,
                    "last_error": _masked(cursor.last_error) if cursor else "",
                }
            )
        counts = attempts[network_id]
        cur_volume, cur_n = _sum_money({k: v for k, v in volume["cur"].items() if k == network_id})
        prev_volume, prev_n = _sum_money({k: v for k, v in volume["prev"].items() if k == network_id})
        lat = latency.get(network_id) or {}
        out.append(
            {
                "network": network.slug,
                "name": network.name,
                "chain_id": network.chain_id,
                "is_testnet": network.is_testnet,
                "enabled": network.enabled,
                "confirmation_depth": network.confirmation_depth,
                "volume": money_kpi(catalog, cur_volume, prev_volume),
                "transactions": count_kpi(cur_n, prev_n),
                "checkouts": count_kpi(counts["cur"]["started"], counts["prev"]["started"]),
                "failed": count_kpi(counts["cur"]["failed"], counts["prev"]["failed"]),
                "failure_rate": ratio_kpi(_failure_rate(counts["cur"]), _failure_rate(counts["prev"])),
                "confirmation_latency_seconds": {
                    "p50": _seconds_text(lat.get("p50")),
                    "p95": _seconds_text(lat.get("p95")),
                    "samples": lat.get("samples", 0),
                },
                "head_block": head,
                "followers": followers,
                "rpc_endpoints": endpoints.get(network_id, []),
                "rpc_healthy": sum(1 for e in live if e["healthy"]),
                "rpc_enabled": len(live),
            }
        )
    return {"period": period.as_dict(), "include_testnets": include_testnets, "networks": out}


def _seconds_text(value: float | None) -> str | None:
    # percentile_cont returns double precision: shown to the millisecond (a latency, not money).
    return None if value is None else format(Decimal(repr(value)).quantize(Decimal("0.001")), "f")


def _masked(text: str) -> str:
    from billing_project.logging import mask_url

    return mask_url(text) if text else ""


# --- payouts -----------------------------------------------------------------------------------------------


def _token_for_address(catalog: Catalog, network_id: int, address: str) -> TokenInfo | None:
    address = (address or "").lower()
    if not address or address == ZERO_ADDRESS:
        return catalog.native.get(network_id)
    for token in catalog.tokens.values():
        if token.network_id == network_id and not token.is_native and token.address == address:
            return token
    return None


def payouts(*, period: Period, include_testnets: bool = False, limit: int = 100, now: datetime | None = None) -> dict:
    """Withdrawals from each contract (its `Withdrawn` logs, as the follower recorded them) in the window and the
    previous one, and what each contract holds now per token, read from the chain and cached with its read
    time: when the chain cannot be read, the last balance is shown marked stale, never an error."""
    catalog = Catalog()
    ids = catalog.money_network_ids(include_testnets)
    now = now or timezone.now()
    contracts = [c for c in billing.analytics_contracts() if c.network_id in ids]
    events = list(
        billing.analytics_chain_events()
        .filter(
            name="Withdrawn",
            removed=False,
            contract__network_id__in=ids,
            created_at__gte=period.previous.start,
            created_at__lt=period.end,
        )
        .select_related("contract__network")
        .defer(
            "contract__abi", "contract__webhook_secret", "contract__previous_webhook_secret", "contract__fallback_rpc"
        )
        .order_by("-created_at", "-id")
    )
    totals = {"cur": defaultdict(Money), "prev": defaultdict(Money)}
    recent = []
    for event in events:
        contract = event.contract
        token = _token_for_address(catalog, contract.network_id, event.token_address or event.args.get("token", ""))
        if token is None or event.amount is None:
            continue
        p = "cur" if event.created_at >= period.start else "prev"
        usd = _fr(event.amount) * _fr(token.usd_estimate) / 10**token.decimals
        totals[p][contract.slug].add(token, event.amount, usd)
        if p == "cur" and len(recent) < limit:
            recent.append(
                {
                    "contract": contract.slug,
                    "network": contract.network.slug,
                    "token": token.key,
                    "amount": str(event.amount),
                    "display": display(event.amount, token.decimals),
                    "usd": format(round_half_up(usd, 2), "f"),
                    "to": str(event.args.get("to") or ""),
                    "tx_hash": event.tx_hash,
                    "block_number": event.block_number,
                    "explorer_url": contract.network.tx_url(event.tx_hash),
                    "at": event.created_at,
                }
            )
    rows = []
    all_cur, all_prev, held = Money(), Money(), Money()
    for contract in contracts:
        balances = contract_balances(contract=contract, catalog=catalog, now=now)
        for item in balances:
            if item["amount"] is not None:
                token = catalog.by_key[item["token"]]
                held.add(
                    token, int(item["amount"]), _fr(int(item["amount"])) * _fr(token.usd_estimate) / 10**token.decimals
                )
        cur, prev = totals["cur"].get(contract.slug, Money()), totals["prev"].get(contract.slug, Money())
        all_cur, all_prev = all_cur.plus(cur), all_prev.plus(prev)
        rows.append(
            {
                "contract": contract.slug,
                "network": contract.network.slug,
                "address": contract.address,
                "explorer_url": contract.network.address_url(contract.address),
                "enabled": contract.enabled,
                "withdrawn": money_kpi(catalog, cur, prev),
                "balances": balances,
            }
        )
    return {
        "period": period.as_dict(),
        "include_testnets": include_testnets,
        "withdrawn": money_kpi(catalog, all_cur, all_prev),
        "held": money_figure(catalog, held),
        "contracts": rows,
        "withdrawals": recent,
    }


def _balance_key(contract_id: int, token_id: int) -> str:
    return f"overview:balance:{contract_id}:{token_id}"


def contract_balances(*, contract, catalog: Catalog, now: datetime) -> list[dict]:
    """Each enabled token of the contract's network: the cached balance when younger than BALANCE_TTL, else a
    fresh read (one per network per TTL, failures included, so a dead endpoint costs one timeout a minute)."""
    tokens = [t for t in catalog.token_models.values() if t.network_id == contract.network_id and t.enabled]
    keys = {t.pk: _balance_key(contract.pk, t.pk) for t in tokens}
    cached = cache.get_many(list(keys.values()))
    due = [t for t in tokens if not _fresh(cached.get(keys[t.pk]), now)]
    if due and contract.network.enabled and contract.address:
        try:
            fresh = billing.contract_balances_read(contract=contract, tokens=due, timeout=BALANCE_READ_TIMEOUT)
            failure = None
        except Exception as exc:  # the chain is unreachable: keep what we had, note why, try again after the TTL
            fresh, failure = {}, _masked(str(exc))[:300] or type(exc).__name__
            log.info("overview.balance_unavailable", contract_slug=contract.slug, error=failure)
        updates = {}
        for token in due:
            entry = dict(cached.get(keys[token.pk]) or {"amount": None, "read_at": None})
            entry["attempt_at"] = now.isoformat()
            value = fresh.get(token.pk)
            if isinstance(value, int):
                entry.update(amount=str(value), read_at=now.isoformat(), error="")
            else:
                entry["error"] = failure or _masked(str(value))[:300]
            updates[keys[token.pk]] = entry
        cache.set_many(updates, timeout=7 * 24 * 3600)
        cached.update(updates)
    out = []
    for token in tokens:
        info = catalog.tokens[token.pk]
        entry = cached.get(keys[token.pk]) or {"amount": None, "read_at": None, "error": ""}
        if not contract.network.enabled:
            entry = {**entry, "error": entry.get("error") or "network disabled: not read"}
        amount = entry.get("amount")
        read_at = entry.get("read_at")
        usd = None
        if amount is not None:
            usd = format(round_half_up(_fr(int(amount)) * _fr(info.usd_estimate) / 10**info.decimals, 2), "f")
        out.append(
            {
                "token": info.key,
                "symbol": info.symbol,
                "decimals": info.decimals,
                "amount": amount,
                "display": None if amount is None else display(int(amount), info.decimals),
                "usd": usd,
                "read_at": datetime.fromisoformat(read_at) if read_at else None,
                "stale": read_at is None
                or bool(entry.get("error"))
                or now - datetime.fromisoformat(read_at) > BALANCE_TTL,
                "error": entry.get("error") or "",
            }
        )
    return out


def _fresh(entry: dict | None, now: datetime) -> bool:
    if not entry or not entry.get("attempt_at"):
        return False
    return now - datetime.fromisoformat(entry["attempt_at"]) < BALANCE_TTL


# --- incidents ---------------------------------------------------------------------------------------------

SPIKE_MIN_FAILED = 5
SPIKE_MIN_RATE = Fraction(1, 10)
SPIKE_BASELINE_FACTOR = 2
SLOW_RPC_MS = 2000
FOLLOWER_LAG_BLOCKS = 100  # beyond the confirmation depth


def _incident(
    kind: str,
    ref,
    *,
    severity: str,
    at,
    title: str,
    detail: str,
    link: str,
    admin_url: str,
    network: str | None = None,
    count: int = 1,
) -> dict:
    return {
        "id": f"{kind}:{ref}",
        "kind": kind,
        "severity": severity,
        "at": at,
        "title": title,
        "detail": detail,
        "network": network,
        "count": count,
        "link": link,
        "admin_url": admin_url,
    }


@analytics_read
def incidents(*, period: Period, limit: int = 100, now: datetime | None = None) -> dict:
    """What needs an operator, newest first, each linking to what it is about (an API path and the admin page).

    Windowed: failed-payment spikes and reorgs in the window. Open state, whatever its age: RPC endpoints
    degraded now, followers behind, payments in review, dead letters, unmatched transfers. Operations cover
    every network, test networks included.
    """
    catalog = Catalog()
    now = now or timezone.now()
    items: list[dict] = []
    counts: dict[str, int] = defaultdict(int)
    _incidents_failed_spikes(items, counts, catalog, period=period, now=now)
    _incidents_rpc_and_followers(items, counts, catalog, now=now)
    _incidents_reorgs(items, counts, catalog, period=period)
    _incidents_open_items(items, counts, catalog, limit=limit)
    items.sort(key=lambda i: (i["at"], i["id"]), reverse=True)
    return {
        "period": period.as_dict(),
        "counts": {k: counts.get(k, 0) for k in INCIDENT_KINDS},
        "incidents": items[:limit],
    }


def _incidents_failed_spikes(
    items: list[dict], counts: dict[str, int], catalog: Catalog, *, period: Period, now: datetime
) -> None:
    """Failed-payment spikes in the window."""
    # failed-payment spikes: a UTC day whose failure rate is high, and at least twice the network's usual
    day = Trunc("created_at", "day", tzinfo=UTC)
    baseline = {
        r["network_id"]: r
        for r in _checkout_payments()
        .filter(created_at__gte=period.previous.start, created_at__lt=period.end)
        .values("network_id")
        .annotate(failed=Count(ONE, filter=Q(status=TX.FAILED)), ok=Count(ONE, filter=Q(status__in=SUCCEEDED)))
    }
    days = (
        _checkout_payments()
        .filter(created_at__gte=period.start, created_at__lt=period.end)
        .annotate(day=day)
        .values("network_id", "day")
        .annotate(failed=Count(ONE, filter=Q(status=TX.FAILED)), ok=Count(ONE, filter=Q(status__in=SUCCEEDED)))
        .filter(failed__gte=SPIKE_MIN_FAILED)
    )
    for row in days:
        base = baseline.get(row["network_id"]) or {"failed": 0, "ok": 0}
        base_rate = (
            Fraction(base["failed"], base["failed"] + base["ok"]) if base["failed"] + base["ok"] else Fraction(0)
        )
        rate = Fraction(row["failed"], row["failed"] + row["ok"])
        if rate < SPIKE_MIN_RATE or rate < SPIKE_BASELINE_FACTOR * base_rate:
            continue
        network = catalog.networks[row["network_id"]]
        start = row["day"]
        end = start + timedelta(days=1)
        counts["failed_payment_spike"] += 1
        items.append(
            _incident(
                "failed_payment_spike",
                f"{network.slug}:{start.date().isoformat()}",
                severity="critical" if rate >= Fraction(1, 2) else "warning",
                at=min(end, now),
                title=f"{row['failed']} failed payments on {network.name} on {start.date().isoformat()}",
                detail=(
                    f"failure rate {_ratio_text(rate * PERCENT, 1)} % that day against "
                    f"{_ratio_text(base_rate * PERCENT, 1)} % over the last two windows"
                ),
                network=network.slug,
                count=row["failed"],
                link=(
                    f"/v1/billing/admin/transactions?status=failed&network={network.slug}"
                    f"&created_after={start.isoformat()}&created_before={end.isoformat()}"
                ).replace("+00:00", "Z"),
                admin_url=f"/admin/billing/paymenttransaction/?status__exact=failed&network__id__exact={network.pk}",
            )
        )


def _incidents_rpc_and_followers(items: list[dict], counts: dict[str, int], catalog: Catalog, *, now: datetime) -> None:
    """RPC endpoints degraded now and chain followers behind the head."""
    # RPC degradation and followers behind: the state now
    endpoints = defaultdict(list)
    for endpoint in billing.rpc_endpoints_health():
        endpoints[endpoint["network_id"]].append(endpoint)
    for network_id, eps in endpoints.items():
        network = catalog.networks[network_id]
        live = [e for e in eps if e["enabled"]]
        if not network.enabled or not live:
            continue
        down = [e for e in live if not e["healthy"] or e["consecutive_failures"]]
        slow = [e for e in live if e["healthy"] and (e["last_latency_ms"] or 0) > SLOW_RPC_MS]
        for e in down + slow:
            counts["rpc_degraded"] += 1
            state = (
                f"down: {e['last_error'] or 'no answer'}" if e in down else f"slow: {e['last_latency_ms']} ms last call"
            )
            items.append(
                _incident(
                    "rpc_degraded",
                    e["id"],
                    severity="critical" if len(down) == len(live) else "warning",
                    at=e["last_checked_at"] or now,
                    title=f"RPC endpoint #{e['position']} of {network.name} {state.split(':')[0]}",
                    detail=f"{e['url']} {state}; {e['consecutive_failures']} failures in a row; "
                    f"{len(live) - len(down)} of {len(live)} endpoints healthy",
                    network=network.slug,
                    link=f"/v1/billing/admin/networks/{network.slug}",
                    admin_url=f"/admin/billing/network/{network.pk}/change/",
                )
            )
    for contract in billing.analytics_contracts():
        network = contract.network
        cursor = getattr(contract, "cursor", None)
        heads = [e["last_head_block"] for e in endpoints.get(network.pk, []) if e["enabled"] and e["last_head_block"]]
        if not (contract.enabled and network.enabled and cursor and heads):
            continue
        lag = max(heads) - cursor.last_block
        if lag > network.confirmation_depth + FOLLOWER_LAG_BLOCKS or cursor.last_error:
            counts["follower_behind"] += 1
            items.append(
                _incident(
                    "follower_behind",
                    contract.slug,
                    severity="warning",
                    at=cursor.last_run_at or cursor.updated_at,
                    title=f"Chain follower of {contract.slug} is {lag} blocks behind the head",
                    detail=_masked(cursor.last_error) or f"cursor at block {cursor.last_block}",
                    network=network.slug,
                    link=f"/v1/billing/admin/contracts/{contract.slug}/events",
                    admin_url=f"/admin/billing/paymentcontract/{contract.pk}/change/",
                )
            )


def _incidents_reorgs(items: list[dict], counts: dict[str, int], catalog: Catalog, *, period: Period) -> None:
    """Reorgs in the window, one incident per network and fork."""
    # reorgs in the window: ledger rows the follower (or a check) sent to review because a log vanished
    reorgs = defaultdict(lambda: {"n": 0, "at": None, "reason": ""})
    for change in (
        billing.analytics_status_changes()
        .filter(to_status=TX.NEEDS_REVIEW, created_at__gte=period.start, created_at__lt=period.end)
        .filter(reason__icontains="reorg")
        .values("created_at", "reason", "details", "transaction__network_id")
        .order_by("-created_at")[:1000]
    ):
        fork = (change["details"] or {}).get("fork_block")
        key = (change["transaction__network_id"], fork if fork is not None else change["created_at"].date())
        group = reorgs[key]
        group["n"] += 1
        group["at"] = max(group["at"] or change["created_at"], change["created_at"])
        group["reason"] = group["reason"] or change["reason"]
    for (network_id, fork), group in reorgs.items():
        network = catalog.networks[network_id]
        counts["reorg"] += 1
        items.append(
            _incident(
                "reorg",
                f"{network.slug}:{fork}",
                severity="critical",
                at=group["at"],
                title=f"Reorg on {network.name}: {group['n']} payment(s) sent to review",
                detail=group["reason"] + (f" (fork at block {fork})" if isinstance(fork, int) else ""),
                network=network.slug,
                count=group["n"],
                link=f"/v1/billing/admin/transactions?status=needs_review&network={network.slug}",
                admin_url=f"/admin/billing/paymenttransaction/?status__exact=needs_review&network__id__exact={network.pk}",
            )
        )


def _incidents_open_items(items: list[dict], counts: dict[str, int], catalog: Catalog, *, limit: int) -> None:
    """Open items whatever their age: payments in review, unmatched transfers, dead letters."""
    # open items: payments in review, unmatched transfers, dead letters
    for status, kind, what in (
        (TX.NEEDS_REVIEW, "needs_review", "Payment needs review"),
        (TX.UNMATCHED, "unmatched_transfer", "Transfer without a checkout"),
    ):
        qs = billing.analytics_payments().filter(status=status)
        counts[kind] += qs.count()
        for tx in qs.order_by("-created_at", "-id").values(
            "id",
            "public_id",
            "updated_at",
            "created_at",
            "network_id",
            "token_id",
            "amount",
            "failure_reason",
            "tx_hash",
        )[:limit]:
            network = catalog.networks[tx["network_id"]]
            token = catalog.tokens[tx["token_id"]]
            items.append(
                _incident(
                    kind,
                    tx["public_id"],
                    severity="warning",
                    at=tx["updated_at"] if kind == "needs_review" else tx["created_at"],
                    title=f"{what}: {display(tx['amount'], token.decimals)} {token.symbol} on {network.name}",
                    detail=tx["failure_reason"] or (tx["tx_hash"] or ""),
                    network=network.slug,
                    link=f"/v1/billing/admin/transactions/{tx['public_id']}",
                    admin_url=f"/admin/billing/paymenttransaction/{tx['id']}/change/",
                )
            )
    dead = billing.dead_letters()
    counts["dead_letter"] += dead.count()
    for delivery in dead.order_by("-updated_at", "-id")[:limit]:
        items.append(
            _incident(
                "dead_letter",
                delivery.pk,
                severity="warning",
                at=delivery.updated_at,
                title=f"Dead letter: {delivery.event.topic} to {delivery.subscriber}",
                detail=f"{delivery.attempts} attempts; last error: {_masked(delivery.last_error)[:300]}",
                link=f"/v1/billing/admin/outbox?status=dead&subscriber={delivery.subscriber}",
                admin_url=f"/admin/billing/outboxdelivery/{delivery.pk}/change/",
            )
        )


INCIDENT_KINDS = (
    "failed_payment_spike",
    "rpc_degraded",
    "follower_behind",
    "reorg",
    "needs_review",
    "unmatched_transfer",
    "dead_letter",
)


# --- experiments -------------------------------------------------------------------------------------------

CONTROL_NAMES = ("control", "a")


@analytics_read
def experiments(*, period: Period, include_testnets: bool = False) -> dict:
    """Per experiment and variant (plans carry `experiment` / `variant`): checkouts started in the window (ledger
    rows a checkout created), how many of them were paid (confirmed, even if refunded later), conversion with
    its Wilson interval, revenue and ARPU of the paid ones, and each variant's conversion difference against
    the control with Newcombe's hybrid score interval (95 %)."""
    catalog = Catalog()
    ids = catalog.money_network_ids(include_testnets)
    plans = [p for p in catalog.plans.values() if p.experiment]
    plan_ids = [p.id for p in plans]
    paid = Q(status__in=PAID)
    base = _checkout_payments().filter(
        plan_id__in=plan_ids, network_id__in=ids, created_at__gte=period.start, created_at__lt=period.end
    )
    rows = base.values("plan_id", "token_id").annotate(
        checkouts=Count("*"),
        confirmed=Count(ONE, filter=paid),
        s_amount=Sum("amount", filter=paid),
        s_usd=Sum(USD_NUMERATOR, filter=paid & RATED),
        s_unrated=Sum("amount", filter=paid & ~RATED),
    )
    payers = {
        (r["plan__experiment"], r["plan__variant"]): r["n"]
        for r in base.values("plan__experiment", "plan__variant").annotate(
            n=Count("user_id", distinct=True, filter=paid)
        )
    }
    variants: dict[str, dict[str, dict]] = defaultdict(dict)
    for plan in plans:
        v = variants[plan.experiment].setdefault(
            plan.variant or "-", {"plans": [], "checkouts": 0, "confirmed": 0, "revenue": Money()}
        )
        v["plans"].append(plan.slug)
    for row in rows:
        plan = catalog.plans[row["plan_id"]]
        v = variants[plan.experiment][plan.variant or "-"]
        v["checkouts"] += row["checkouts"]
        v["confirmed"] += row["confirmed"]
        if row["confirmed"]:
            token = catalog.tokens[row["token_id"]]
            v["revenue"].add(token, row["s_amount"], _usd(token, row["s_usd"], row["s_unrated"]))
    out = []
    for experiment in sorted(variants):
        names = sorted(variants[experiment])
        control = next((n for n in CONTROL_NAMES if n in names), names[0])
        rendered = []
        for name in names:
            v = variants[experiment][name]
            customers = payers.get((experiment, "" if name == "-" else name), 0)
            ci = wilson(v["confirmed"], v["checkouts"])
            rendered.append(
                {
                    "variant": name,
                    "plans": sorted(v["plans"]),
                    "checkouts": v["checkouts"],
                    "confirmed": v["confirmed"],
                    "conversion": _ratio_text(Fraction(v["confirmed"], v["checkouts"])) if v["checkouts"] else None,
                    "conversion_ci": None
                    if ci is None
                    else {"low": _ratio_text(Fraction(ci.low)), "high": _ratio_text(Fraction(ci.high))},
                    "revenue": money_figure(catalog, v["revenue"]),
                    "paying_customers": customers,
                    "arpu_usd": _usd_text(v["revenue"].usd / customers) if customers else None,
                }
            )
        comparisons = []
        c = variants[experiment][control]
        for name in names:
            if name == control:
                continue
            v = variants[experiment][name]
            interval = newcombe_difference(v["confirmed"], v["checkouts"], c["confirmed"], c["checkouts"])
            difference = (
                Fraction(v["confirmed"], v["checkouts"]) - Fraction(c["confirmed"], c["checkouts"])
                if v["checkouts"] and c["checkouts"]
                else None
            )
            comparisons.append(
                {
                    "variant": name,
                    "control": control,
                    "difference": _ratio_text(difference),
                    "ci_low": None if interval is None else _ratio_text(Fraction(interval.low)),
                    "ci_high": None if interval is None else _ratio_text(Fraction(interval.high)),
                    "significant": None if interval is None else bool(interval.low > 0 or interval.high < 0),
                }
            )
        out.append({"experiment": experiment, "control": control, "variants": rendered, "comparisons": comparisons})
    return {
        "period": period.as_dict(),
        "include_testnets": include_testnets,
        "confidence": "0.95",
        "method": "Wilson score interval per variant; Newcombe hybrid score interval (method 10) for differences",
        "experiments": out,
    }
