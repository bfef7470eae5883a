"""Subscription rules (docs/subscriptions.md). What was paid is a list of `SubscriptionPeriod` rows; the
subscription's `plan`, `status`, `current_period_*` and `pending_*` fields are derived from them here, in
the same transaction as every change, under the subscription's row lock.

- The plan in force at time t is the plan of the active period covering t.
- A renewal (the plan in force) and a downgrade (a lower tier) queue after all paid time.
- An upgrade (a higher tier, or another plan of the same tier) starts now; the unused part of the period
  in force becomes time on the new plan: unused seconds x old price per second / new price per second,
  the prices being the USD estimates stored on the payments, exact, rounded down to whole seconds. Periods
  queued behind it keep their plan and move after the new time.
- A refund removes the periods its payment bought (later periods move up); a reorg suspends them the same
  way and a re-mined payment restores its unused time. The subscription ends only when no paid time
  remains from now on.
- A cancel takes effect at the end of all paid time. Past the end of all paid time (not canceled): past due
  for the plan's grace period, the renewal price recorded as debt; after the grace period: expired.

Each change of what the user may do, or of how long it is paid for, writes a plan.changed.v1 outbox event
in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime, timedelta
from fractions import Fraction
from typing import NamedTuple

import structlog
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.bulk_sql import bulk_cursor, json_list
from billing.models import (
    LIVE_SUBSCRIPTION_STATUSES,
    PaymentTransaction,
    PeriodKind,
    PeriodStatus,
    Plan,
    Subscription,
    SubscriptionPeriod,
    SubscriptionStatus,
    Token,
)
from billing.services.outbox import outbox_emit, outbox_emit_many

log = structlog.get_logger(__name__)
ONE_SECOND = timedelta(seconds=1)
MICROS = 10**6


# --- the plan.changed.v1 event ----------------------------------------------------------------------------


def _plan_changed_event(
    *,
    user_id: int,
    previous_plan: Plan | None,
    plan: Plan | None,
    reason: str,
    transaction_id: int | None,
    period_end: datetime | None,
    paid_until: datetime | None,
) -> tuple[str, dict, str, str]:
    """(topic, payload, aggregate type, aggregate id) of one plan.changed.v1 event."""
    payload = {
        "occurred_at": timezone.now().isoformat(),
        "user_id": user_id,
        "previous_plan": previous_plan.slug if previous_plan else None,
        "plan": plan.slug if plan else None,
        "limits": dict(plan.limits) if plan else {},
        "reason": reason,
        "transaction_id": str(transaction_id) if transaction_id else None,
        "period_end": period_end.isoformat() if period_end else None,
        "paid_until": paid_until.isoformat() if paid_until else None,
    }
    return "plan.changed.v1", payload, "user", str(user_id)


def _emit_plan_changed(**kwargs) -> None:
    topic, payload, aggregate_type, aggregate_id = _plan_changed_event(**kwargs)
    outbox_emit(topic=topic, payload=payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id)


# --- the timeline -------------------------------------------------------------------------------------------


@contextmanager
def _rearranging_periods():
    """Inside, periods may overlap for a moment (a rule moves several rows); on the way out the database
    checks the exclusion constraint at once, so a rule that left an overlap fails here, not at commit."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS period_no_overlap DEFERRED")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS period_no_overlap IMMEDIATE")


def _timeline(sub: Subscription) -> list[SubscriptionPeriod]:
    """The subscription's active periods, in time order."""
    return list(
        SubscriptionPeriod.objects.select_related(
            "plan", "transaction__plan", "transaction__token", "credit_for__plan", "credit_for__token"
        )
        .filter(subscription=sub, status=PeriodStatus.ACTIVE)
        .order_by("starts_at", "id")
    )


def _ensure_periods(sub: Subscription) -> None:
    """A subscription written without periods (before migration 0007, or by hand) gets them from its fields."""
    if sub.periods.exists():
        return
    last = sub.last_transaction
    pending = bool(sub.pending_plan_id and sub.pending_period_end and sub.pending_period_end > sub.current_period_end)
    pays_pending = pending and last is not None and last.plan_id == sub.pending_plan_id
    SubscriptionPeriod.objects.create(
        subscription=sub,
        plan_id=sub.plan_id,
        starts_at=sub.current_period_start,
        ends_at=sub.current_period_end,
        transaction=last if last is not None and last.plan_id == sub.plan_id and not pays_pending else None,
        kind=PeriodKind.MIGRATED,
        note="from the subscription's period fields",
    )
    if pending:
        SubscriptionPeriod.objects.create(
            subscription=sub,
            plan_id=sub.pending_plan_id,
            starts_at=sub.current_period_end,
            ends_at=sub.pending_period_end,
            transaction=last if pays_pending else None,
            kind=PeriodKind.MIGRATED,
            note="from the subscription's pending downgrade",
        )


def covering(periods: Iterable[SubscriptionPeriod], at: datetime) -> SubscriptionPeriod | None:
    """The period in force at `at` (periods never overlap, so at most one)."""
    return next((p for p in periods if p.starts_at <= at < p.ends_at), None)


def paid_until_of(periods: list[SubscriptionPeriod]) -> datetime | None:
    return max((p.ends_at for p in periods), default=None)


def _run(periods: list[SubscriptionPeriod], index: int) -> tuple[datetime, datetime, int, int]:
    """The contiguous stretch of the same plan around periods[index]: (start, end, first index, last index)."""
    first = last = index
    plan_id = periods[index].plan_id
    while (
        first > 0 and periods[first - 1].plan_id == plan_id and periods[first - 1].ends_at == periods[first].starts_at
    ):
        first -= 1
    while (
        last + 1 < len(periods)
        and periods[last + 1].plan_id == plan_id
        and periods[last + 1].starts_at == periods[last].ends_at
    ):
        last += 1
    return periods[first].starts_at, periods[last].ends_at, first, last


def _lay_out(queue: list[SubscriptionPeriod], start: datetime) -> None:
    """Place `queue` back to back from `start`, each keeping its length (saved only when it moved)."""
    cursor = start
    for period in queue:
        length = period.ends_at - period.starts_at
        if period.starts_at != cursor:
            period.starts_at, period.ends_at = cursor, cursor + length
            period.save(update_fields=["starts_at", "ends_at", "updated_at"])
        cursor = period.ends_at


def _close_gaps(periods: list[SubscriptionPeriod], now: datetime) -> None:
    """After periods were taken out: what is queued moves up behind the period in force, or starts now."""
    in_force = covering(periods, now)
    queue = [p for p in periods if p.starts_at > now]
    _lay_out(queue, in_force.ends_at if in_force else now)


def _derive(sub: Subscription, periods: list[SubscriptionPeriod], now: datetime) -> bool:
    """Set the subscription's derived fields from its periods. Returns whether a period is in force now."""
    if not periods:
        sub.pending_plan = None
        sub.pending_period_end = None
        return False
    in_force = covering(periods, now)
    index = periods.index(in_force) if in_force else len(periods) - 1
    start, end, _, last = _run(periods, index)
    sub.plan = periods[index].plan
    sub.current_period_start, sub.current_period_end = start, end
    following = last + 1
    if in_force and following < len(periods) and periods[following].starts_at == end:
        sub.pending_plan = periods[following].plan
        sub.pending_period_end = _run(periods, following)[1]
    else:
        sub.pending_plan = None
        sub.pending_period_end = None
    return in_force is not None


def _activate(sub: Subscription) -> None:
    sub.status = SubscriptionStatus.ACTIVE
    sub.debt_amount = 0
    sub.debt_token = None
    sub.grace_until = None
    sub.ended_at = None


def _emit_for(sub: Subscription, *, previous: Plan | None, reason: str, transaction_id: int | None, periods) -> None:
    _emit_plan_changed(
        user_id=sub.user_id,
        previous_plan=previous,
        plan=sub.plan,
        reason=reason,
        transaction_id=transaction_id,
        period_end=sub.current_period_end,
        paid_until=paid_until_of(periods),
    )


def _end(
    sub: Subscription,
    *,
    status: str,
    reason: str,
    now: datetime,
    transaction_id: int | None = None,
    period_end: datetime | None = None,
) -> Subscription:
    """Nothing is paid from now on: no plan from now on."""
    sub.status = status
    sub.ended_at = now
    sub.pending_plan = None
    sub.pending_period_end = None
    sub.save()
    end = period_end or sub.current_period_end
    _emit_plan_changed(
        user_id=sub.user_id,
        previous_plan=sub.plan,
        plan=None,
        reason=reason,
        transaction_id=transaction_id,
        period_end=end,
        paid_until=end,
    )
    return sub


# --- prices and the upgrade credit -------------------------------------------------------------------------


def _usd(tx: PaymentTransaction) -> Fraction | None:
    """The USD estimate of what a payment paid: usd_rate_at_confirmation x amount, exact."""
    if tx.usd_rate_at_confirmation is None or not tx.amount:
        return None
    return Fraction(tx.usd_rate_at_confirmation) * tx.amount / 10**tx.token.decimals


def paid_length(tx: PaymentTransaction) -> timedelta:
    return tx.plan.period * max(tx.periods, 1)


def price_per_second(period: SubscriptionPeriod) -> Fraction | None:
    """USD per second of a period: its payment's USD estimate over the time that payment bought (for an
    upgrade credit, the upgrade payment's); for a period without a payment, the plan's USD estimate."""
    source = period.credit_for if period.kind == PeriodKind.UPGRADE_CREDIT else period.transaction
    if source is not None and source.plan_id:
        usd = _usd(source)
        if usd:
            return usd / int(paid_length(source).total_seconds())
    if period.plan.price_usd_estimate:
        return Fraction(period.plan.price_usd_estimate) / int(period.plan.period.total_seconds())
    return None


def upgrade_credit_seconds(unused: timedelta, old: Fraction | None, new: Fraction | None) -> int:
    """floor(unused seconds x old price per second / new price per second). Exact: the unused time in whole
    microseconds and the prices as fractions; without a known price on either side, second for second."""
    unused_us = (unused.days * 86_400 + unused.seconds) * MICROS + unused.microseconds
    if unused_us <= 0:
        return 0
    if not old or not new:
        return unused_us // MICROS
    ratio = old / new
    return (unused_us * ratio.numerator) // (MICROS * ratio.denominator)


# --- placing paid time ---------------------------------------------------------------------------------------


def _lock_live(user_id: int) -> Subscription | None:
    sub = (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("plan", "last_transaction")
        .filter(user_id=user_id, status__in=LIVE_SUBSCRIPTION_STATUSES)
        .first()
    )
    if sub is not None:
        _ensure_periods(sub)
    return sub


def _place(
    sub: Subscription,
    *,
    plan: Plan,
    length: timedelta,
    now: datetime,
    transaction: PaymentTransaction | None,
    credit_for: PaymentTransaction | None = None,
    kind: str | None = None,
    row: SubscriptionPeriod | None = None,
    restoring: bool = False,
) -> str:
    """Add `length` of paid time on `plan` to the subscription (the rules in the module docstring).
    `row`: an existing (suspended) period to reuse; `restoring`: time given back after a reorg, which never
    starts in the past. Returns the event reason."""
    periods = _timeline(sub)
    in_force = covering(periods, now)
    paid_until = paid_until_of(periods)
    new = row or SubscriptionPeriod(subscription=sub)
    new.subscription = sub
    new.plan = plan
    new.transaction = transaction
    new.credit_for = credit_for
    new.status = PeriodStatus.ACTIVE
    new.suspended_at = None

    def put(start: datetime, default_kind: str) -> None:
        new.kind = kind or default_kind
        new.starts_at, new.ends_at = start, start + length
        new.save()

    if in_force is None:
        # Nothing in force (a new subscription, or past due): a payment for the last plan pays from the end of
        # its paid time (the grace days it used) when it reaches now; anything else starts now.
        renews = (
            not restoring
            and bool(periods)
            and plan.pk == sub.plan_id
            and paid_until is not None
            and paid_until + length > now
        )
        put(paid_until if renews else now, PeriodKind.RENEWAL if renews else PeriodKind.PAYMENT)
        return "payment_confirmed"
    if plan.pk == in_force.plan_id:
        put(paid_until, PeriodKind.RENEWAL)
        return "payment_confirmed"
    if plan.tier < in_force.plan.tier:
        put(paid_until, PeriodKind.PAYMENT)
        log.info("subscription.downgrade_queued", user_id=sub.user_id, plan=plan.slug, starts_at=paid_until)
        return "payment_confirmed"

    # An upgrade: the new time starts now; the unused part of the period in force becomes time on the new plan.
    queued = [p for p in periods if p.starts_at > now]
    unused = in_force.ends_at - now
    with _rearranging_periods():
        _end_now(in_force, now)
        put(now, PeriodKind.PAYMENT)
        rate_source = credit_for if credit_for is not None else transaction
        seconds, credit = _upgrade_credit(sub, in_force, unused, plan=plan, rate_source=rate_source, at=new.ends_at)
        _lay_out([credit, *queued] if credit else queued, new.ends_at)
    log.info(
        "subscription.upgraded",
        user_id=sub.user_id,
        plan=plan.slug,
        previous_plan=in_force.plan.slug,
        unused_seconds=int(unused.total_seconds()),
        credit_seconds=seconds,
    )
    return "upgraded"


def _end_now(period: SubscriptionPeriod, now: datetime) -> None:
    """The period in force gives way to an upgrade: it ends now, or, not started yet, is replaced whole."""
    if period.starts_at < now:
        period.ends_at = now
        period.save(update_fields=["ends_at", "updated_at"])
    else:
        period.status = PeriodStatus.REPLACED
        period.note = "its whole time became an upgrade credit"
        period.save(update_fields=["status", "note", "updated_at"])


def _upgrade_credit(
    sub: Subscription,
    in_force: SubscriptionPeriod,
    unused: timedelta,
    *,
    plan: Plan,
    rate_source: PaymentTransaction | None,
    at: datetime,
) -> tuple[int, SubscriptionPeriod | None]:
    """The unused time of the period in force, as time on the new plan at the two prices per second (none when
    it is worth no whole second), starting `at`. -> (seconds, the credit period or None)."""
    new_price = price_per_second(SubscriptionPeriod(plan=plan, transaction=rate_source, kind=PeriodKind.PAYMENT))
    seconds = upgrade_credit_seconds(unused, price_per_second(in_force), new_price)
    if seconds <= 0:
        return seconds, None
    credit = SubscriptionPeriod.objects.create(
        subscription=sub,
        plan=plan,
        starts_at=at,
        ends_at=at + timedelta(seconds=seconds),
        transaction=in_force.transaction,
        credit_for=rate_source,
        kind=PeriodKind.UPGRADE_CREDIT,
        note=f"{int(unused.total_seconds())} s of {in_force.plan.slug} -> {seconds} s of {plan.slug}",
    )
    return seconds, credit


def _settle(
    sub: Subscription, *, now: datetime, previous: Plan | None, reason: str, transaction_id: int | None
) -> Subscription:
    """Derive, save and tell: the step every rule ends with."""
    periods = _timeline(sub)
    if _derive(sub, periods, now):
        _activate(sub)
        sub.save()
        _emit_for(sub, previous=previous, reason=reason, transaction_id=transaction_id, periods=periods)
        return sub
    # Nothing paid from now on: the current period ends now.
    if sub.current_period_end > now:
        sub.current_period_end = max(now, sub.current_period_start + ONE_SECOND)
    return _end(
        sub, status=SubscriptionStatus.EXPIRED, reason=reason, now=now, transaction_id=transaction_id, period_end=now
    )


@transaction.atomic
def subscription_apply_payment(*, tx: PaymentTransaction, now: datetime | None = None) -> Subscription | None:
    """Called once per confirmed ledger row (the caller guarantees once): adds the time it paid for."""
    if tx.user_id is None or tx.plan_id is None:
        return None
    now = now or timezone.now()
    plan = tx.plan
    sub = _lock_live(tx.user_id)
    previous = None
    if sub is None:
        sub = Subscription.objects.create(
            user_id=tx.user_id,
            plan=plan,
            status=SubscriptionStatus.ACTIVE,
            current_period_start=now,
            current_period_end=now + paid_length(tx),
            last_transaction=tx,
        )
    else:
        previous = sub.plan
        sub.last_transaction = tx
        sub.cancel_at_period_end = False
        sub.canceled_at = None
    reason = _place(sub, plan=plan, length=paid_length(tx), now=now, transaction=tx)
    return _settle(sub, now=now, previous=previous, reason=reason, transaction_id=tx.pk)


class _Sub:
    """A subscription's fields as the bulk path reads and derives them (no model instance per row)."""

    __slots__ = (
        "pk",
        "user_id",
        "plan",
        "status",
        "current_period_start",
        "current_period_end",
        "pending_plan",
        "pending_period_end",
        "grace_until",
        "debt_amount",
        "debt_token",
        "ended_at",
        "last_transaction_id",
        "cancel_at_period_end",
        "canceled_at",
        "has_periods",
    )

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    def row(self) -> dict:
        return {
            "id": self.pk,
            "user_id": self.user_id,
            "plan_id": self.plan.pk,
            "status": self.status,
            "current_period_start": self.current_period_start.isoformat(),
            "current_period_end": self.current_period_end.isoformat(),
            "pending_plan_id": self.pending_plan.pk if self.pending_plan else None,
            "pending_period_end": self.pending_period_end.isoformat() if self.pending_period_end else None,
            "grace_until": self.grace_until.isoformat() if self.grace_until else None,
            "debt_amount": str(self.debt_amount or 0),
            "debt_token_id": self.debt_token.pk if self.debt_token else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "last_transaction_id": self.last_transaction_id,
            "cancel_at_period_end": bool(self.cancel_at_period_end),
            "canceled_at": self.canceled_at.isoformat() if self.canceled_at else None,
        }


class _Period:
    __slots__ = ("sub", "plan_id", "plan", "starts_at", "ends_at", "transaction_id", "kind")

    def __init__(self, sub, plan, starts_at, ends_at, transaction_id=None, kind=""):
        self.sub, self.plan_id, self.plan = sub, plan.pk, plan
        self.starts_at, self.ends_at, self.transaction_id, self.kind = starts_at, ends_at, transaction_id, kind


def subscriptions_apply_payments(*, txs: list, now: datetime | None = None) -> int:
    """`subscription_apply_payment` for many confirmed payments at once, in their order (the chain follower's
    batches): one query for the live subscriptions (locked), one for their periods, then one statement each for
    the new subscriptions, the changed ones and the new periods, and the plan.changed.v1 events in bulk. The
    rules are the same functions (`covering`, `_derive`, `_activate`); what this applies in bulk is a payment
    that starts a subscription, renews the plan in force or queues a downgrade. Anything else (an upgrade, past
    due, a subscription written without periods) and every later payment of that user go through
    `subscription_apply_payment` one by one, after the bulk writes. The caller guarantees each payment once and
    holds the ledger rows' locks. `txs`: confirmed ledger rows (anything with pk, user_id, plan_id and periods,
    e.g. payments.PaidRow). Bulk writes skip django-auditlog (the ledger's status history records the
    chain event that caused them). Returns how many payments were applied in bulk.

    In steps for a caller that sends its own statements in the same psycopg pipeline (payments):
    `subscriptions_lock_live` (the reads, which wait for their rows) and `subscriptions_write_payments` (the
    rules in Python, then writes only, sent without waiting), then `subscriptions_apply_later`."""
    now = now or timezone.now()
    state = subscriptions_lock_live(txs=txs)
    applied, later = subscriptions_write_payments(state=state, now=now)
    subscriptions_apply_later(later, now=now)
    return applied


class LiveSubscriptions(NamedTuple):
    by_user: dict
    plans: dict
    subs: dict
    timelines: dict


def subscriptions_lock_live(*, txs: list) -> LiveSubscriptions:
    """The reads of `subscriptions_apply_payments`: the payments by user, the plans, the users' live
    subscriptions (locked, in id order) and their periods."""
    by_user: dict[int, list] = {}
    for tx in txs:
        if tx.user_id is not None and tx.plan_id is not None:
            by_user.setdefault(tx.user_id, []).append(tx)
    if not by_user:
        return LiveSubscriptions(by_user, {}, {}, {})
    plans = Plan.objects.in_bulk()
    tokens: dict = {}
    subs: dict[int, _Sub] = {}
    with bulk_cursor() as cursor:  # tuples, not model instances: a batch holds up to 2,000 payments
        cursor.execute(_LOCK_LIVE_SUBSCRIPTIONS, [json_list(by_user), *LIVE_SUBSCRIPTION_STATUSES])
        for values in cursor.fetchall():
            row = dict(zip(_SUB_FIELDS, values, strict=True))
            row["debt_amount"] = int(row["debt_amount"])
            debt_token_id = row.pop("debt_token_id")
            if debt_token_id is not None and debt_token_id not in tokens:
                tokens[debt_token_id] = Token.objects.get(pk=debt_token_id)
            sub = _Sub(
                **row,
                pk=row["id"],
                plan=plans[row["plan_id"]],
                pending_plan=plans.get(row["pending_plan_id"]),
                debt_token=tokens.get(debt_token_id),
            )
            subs[sub.user_id] = sub
        timelines: dict[int, list] = {sub.pk: [] for sub in subs.values()}
        if subs:
            by_pk = {sub.pk: sub for sub in subs.values()}
            cursor.execute(_TIMELINES, [json_list(by_pk)])
            for sub_id, plan_id, status, starts_at, ends_at in cursor.fetchall():
                by_pk[sub_id].has_periods = True
                if status == PeriodStatus.ACTIVE:
                    timelines[sub_id].append(_Period(by_pk[sub_id], plans[plan_id], starts_at, ends_at))
    return LiveSubscriptions(by_user, plans, subs, timelines)


def subscriptions_write_payments(
    *, state: LiveSubscriptions, now: datetime, extra_events: list | None = None
) -> tuple[int, list]:
    """The rules of `subscriptions_apply_payments` over the rows `subscriptions_lock_live` read, then the writes
    (new subscriptions, changed ones, periods, and the plan.changed.v1 events with `extra_events` in one outbox
    statement). Only writes whose results are not read: a caller may send them in a psycopg pipeline. A new
    subscription's periods find it by its user (the one live subscription of a user). Returns (payments applied
    in bulk, payments left for `subscriptions_apply_later`)."""
    by_user, plans, subs, timelines = state
    new_subs: list[_Sub] = []
    changed: dict[int, _Sub] = {}
    new_periods: list[_Period] = []
    events: list[tuple[str, dict, str, str]] = list(extra_events or [])
    later: list = []
    for user_id, payments in by_user.items():
        sub = subs.get(user_id)
        periods = timelines.get(sub.pk, []) if sub is not None else []
        for position, tx in enumerate(payments):
            plan = plans[tx.plan_id]
            length = plan.period * max(tx.periods, 1)
            if sub is None:
                previous = None
                sub = _Sub(
                    user_id=user_id,
                    plan=plan,
                    status=SubscriptionStatus.ACTIVE,
                    current_period_start=now,
                    current_period_end=now + length,
                    last_transaction_id=tx.pk,
                    cancel_at_period_end=False,
                    debt_amount=0,
                    has_periods=True,
                )
                new_subs.append(sub)
                start, kind = now, PeriodKind.PAYMENT
            else:
                in_force = covering(periods, now) if sub.has_periods else None
                if in_force is not None and plan.pk == in_force.plan_id:
                    start, kind = paid_until_of(periods), PeriodKind.RENEWAL
                elif in_force is not None and plan.tier < in_force.plan.tier:
                    start, kind = paid_until_of(periods), PeriodKind.PAYMENT
                else:
                    later.extend(payments[position:])  # an upgrade, past due, no periods: the one-by-one rules
                    break
                previous = sub.plan
                sub.last_transaction_id = tx.pk
                sub.cancel_at_period_end = False
                sub.canceled_at = None
                if sub.pk is not None:
                    changed[sub.pk] = sub
            period = _Period(sub, plan, start, start + length, tx.pk, kind)
            periods.append(period)
            new_periods.append(period)
            _derive(sub, periods, now)  # the new period is at or after the one in force: something is in force
            _activate(sub)
            events.append(
                _plan_changed_event(
                    user_id=user_id,
                    previous_plan=previous,
                    plan=sub.plan,
                    reason="payment_confirmed",
                    transaction_id=tx.pk,
                    period_end=sub.current_period_end,
                    paid_until=paid_until_of(periods),
                )
            )
    with connection.cursor() as cursor:
        if new_subs:
            cursor.execute(_INSERT_SUBSCRIPTIONS, [now, now, _json_rows([sub.row() for sub in new_subs])])
        if changed:
            cursor.execute(_UPDATE_SUBSCRIPTIONS, [now, _json_rows([sub.row() for sub in changed.values()])])
        if new_periods:
            rows = [
                {
                    "s": p.sub.pk,
                    "u": p.sub.user_id,
                    "p": p.plan_id,
                    "a": p.starts_at.isoformat(),
                    "e": p.ends_at.isoformat(),
                    "t": p.transaction_id,
                    "k": p.kind,
                }
                for p in new_periods
            ]
            cursor.execute(
                _INSERT_PERIODS, [*LIVE_SUBSCRIPTION_STATUSES, PeriodStatus.ACTIVE, now, now, _json_rows(rows)]
            )
    outbox_emit_many(events)
    return len(new_periods), later


def subscriptions_apply_later(later: list, *, now: datetime) -> None:
    """The payments the bulk rules left (`subscriptions_write_payments`), one by one, in order."""
    for tx in later:
        subscription_apply_payment(tx=PaymentTransaction.objects.select_related("plan", "token").get(pk=tx.pk), now=now)


def _json_rows(rows: list[dict]) -> str:
    return json.dumps(rows, separators=(",", ":"))


_SUB_FIELDS = [
    "id",
    "user_id",
    "plan_id",
    "status",
    "current_period_start",
    "current_period_end",
    "pending_plan_id",
    "pending_period_end",
    "grace_until",
    "debt_amount",
    "debt_token_id",
    "ended_at",
    "last_transaction_id",
    "cancel_at_period_end",
    "canceled_at",
]
# The live subscriptions of the batch's users, locked in id order, and their periods (bulk_cursor reads them).
_LOCK_LIVE_SUBSCRIPTIONS = (
    f"SELECT {', '.join(f'{name}::text' if name == 'debt_amount' else name for name in _SUB_FIELDS)} "  # noqa: S608
    f"FROM {Subscription._meta.db_table} "
    "WHERE user_id IN (SELECT json_array_elements_text(%s::json)::bigint) AND status IN (%s, %s) "
    "ORDER BY id FOR UPDATE"
)
_TIMELINES = (
    "SELECT subscription_id, plan_id, status, starts_at, ends_at "  # noqa: S608
    f"FROM {SubscriptionPeriod._meta.db_table} "
    "WHERE subscription_id IN (SELECT json_array_elements_text(%s::json)::bigint) ORDER BY starts_at, id"
)
_SUB_COLUMNS = """user_id bigint, plan_id bigint, status text, current_period_start timestamptz,
    current_period_end timestamptz, pending_plan_id bigint, pending_period_end timestamptz, grace_until timestamptz,
    debt_amount numeric, debt_token_id bigint, ended_at timestamptz, last_transaction_id bigint,
    cancel_at_period_end boolean, canceled_at timestamptz"""
_SUB_NAMES = [line.split()[0] for line in _SUB_COLUMNS.replace("\n", " ").split(",")]
_INSERT_SUBSCRIPTIONS = (
    f"INSERT INTO {Subscription._meta.db_table} ({', '.join(_SUB_NAMES)}, created_at, updated_at) "  # noqa: S608
    f"SELECT {', '.join(_SUB_NAMES)}, %s, %s FROM json_to_recordset(%s::json) AS v({_SUB_COLUMNS})"
)
_UPDATE_SUBSCRIPTIONS = (
    f"UPDATE {Subscription._meta.db_table} AS s "  # noqa: S608 (names from the model and the list above)
    f"SET {', '.join(f'{name} = v.{name}' for name in _SUB_NAMES)}, updated_at = %s "
    f"FROM json_to_recordset(%s::json) AS v(id bigint, {_SUB_COLUMNS}) WHERE s.id = v.id"
)
_INSERT_PERIODS = f"""
    INSERT INTO {SubscriptionPeriod._meta.db_table} (subscription_id, plan_id, starts_at, ends_at, transaction_id,
        kind, status, note, created_at, updated_at)
    SELECT COALESCE(s, (SELECT l.id FROM {Subscription._meta.db_table} AS l
            WHERE l.user_id = v.u AND l.status IN (%s, %s))),
        p, a, e, t, k, %s, '', %s, %s
    FROM json_to_recordset(%s::json)
        AS v(s bigint, u bigint, p bigint, a timestamptz, e timestamptz, t bigint, k text)"""  # noqa: S608


def _take_out(
    *, tx: PaymentTransaction, now: datetime, status: str, reason: str, statuses: tuple[str, ...]
) -> Subscription | None:
    """Refund (status removed) or reorg (status suspended): the periods `tx` bought leave the timeline."""
    if tx.user_id is not None:
        live = Subscription.objects.filter(user_id=tx.user_id, status__in=LIVE_SUBSCRIPTION_STATUSES).first()
        if live is not None:
            _ensure_periods(live)
    rows = list(
        SubscriptionPeriod.objects.filter(transaction=tx, status__in=statuses).values_list("pk", "subscription_id")
    )
    result = None
    for sub_id in sorted({s for _, s in rows}):
        sub = Subscription.objects.select_for_update(of=("self",)).select_related("plan").get(pk=sub_id)
        mine = list(SubscriptionPeriod.objects.filter(transaction=tx, subscription=sub, status__in=statuses))
        affects_now = any(p.status == PeriodStatus.ACTIVE and p.ends_at > now for p in mine)
        for period in mine:
            period.status = status
            if status == PeriodStatus.SUSPENDED:
                period.suspended_at = now
            else:
                period.removed_at = now
            period.save(update_fields=["status", "suspended_at", "removed_at", "updated_at"])
        if sub.status not in LIVE_SUBSCRIPTION_STATUSES or not affects_now:
            continue  # history only: nothing paid from now on changed
        previous = sub.plan
        with _rearranging_periods():
            _close_gaps(_timeline(sub), now)
        result = _settle(sub, now=now, previous=previous, reason=reason, transaction_id=tx.pk)
        log.info(f"subscription.{reason}", user_id=sub.user_id, subscription_id=sub.pk, transaction_id=tx.pk)
    return result


@transaction.atomic
def subscription_apply_refund(*, tx: PaymentTransaction, now: datetime | None = None) -> Subscription | None:
    """A refund takes back exactly the time its payment bought (later periods move up); the subscription
    ends only when no paid time remains. Returns the changed live subscription, if one changed."""
    return _take_out(
        tx=tx,
        now=now or timezone.now(),
        status=PeriodStatus.REMOVED,
        reason="refunded",
        statuses=(PeriodStatus.ACTIVE, PeriodStatus.SUSPENDED),
    )


@transaction.atomic
def subscription_suspend_payment(*, tx: PaymentTransaction, now: datetime | None = None) -> Subscription | None:
    """A reorg removed the payment: its periods are suspended (the plan in force falls back to what remains
    paid) until the payment is seen on chain again (`subscription_restore_payment`) or refunded."""
    return _take_out(
        tx=tx,
        now=now or timezone.now(),
        status=PeriodStatus.SUSPENDED,
        reason="suspended",
        statuses=(PeriodStatus.ACTIVE,),
    )


@transaction.atomic
def subscription_restore_payment(*, tx: PaymentTransaction, now: datetime | None = None) -> Subscription | None:
    """The payment is on chain again: the time its suspended periods had not yet given is placed again, like
    a payment confirmed now (the part used before the suspension stays where it was)."""
    now = now or timezone.now()
    suspended = list(
        SubscriptionPeriod.objects.select_related("plan", "subscription")
        .filter(transaction=tx, status=PeriodStatus.SUSPENDED)
        .order_by("starts_at", "id")
    )
    if not suspended or tx.user_id is None:
        return None
    sub = _lock_live(tx.user_id)
    previous = sub.plan if sub is not None else None
    if sub is None:
        sub = _reopen(suspended[0].subscription, tx=tx, now=now)
    placed = False
    for period in suspended:
        cut = period.suspended_at or now
        remaining = period.ends_at - max(period.starts_at, cut)
        used = period.starts_at < cut
        if used:
            # The part before the suspension was in force then: it is history again.
            period.status = PeriodStatus.ACTIVE
            period.ends_at = min(period.ends_at, cut)
            period.suspended_at = None
            period.save(update_fields=["status", "ends_at", "suspended_at", "updated_at"])
        if remaining <= timedelta(0):
            continue
        _place(
            sub,
            plan=period.plan,
            length=remaining,
            now=now,
            transaction=period.transaction,
            credit_for=period.credit_for,
            kind=period.kind,
            row=None if used else period,  # a period that never started moves as it is
            restoring=True,
        )
        placed = True
    if not placed:
        return None
    return _settle(sub, now=now, previous=previous, reason="restored", transaction_id=tx.pk)


def _reopen(sub: Subscription, *, tx: PaymentTransaction, now: datetime) -> Subscription:
    """The user has no live subscription: the one the suspended payment belonged to comes back if it is the
    user's latest, else a new one starts."""
    latest = Subscription.objects.select_for_update().filter(user_id=sub.user_id).order_by("-created_at", "-id")[0]
    if latest.pk == sub.pk:
        _activate(latest)
        latest.save()
        return latest
    return Subscription.objects.create(
        user_id=sub.user_id,
        plan=sub.plan,
        status=SubscriptionStatus.ACTIVE,
        current_period_start=now,
        current_period_end=now + ONE_SECOND,
        last_transaction=tx,
    )


@transaction.atomic
def subscription_cancel(*, subscription: Subscription, actor: str) -> Subscription:
    """Cancel at the end of all paid time: access stays until then."""
    sub = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if sub.status not in LIVE_SUBSCRIPTION_STATUSES:
        raise ValueError("Only a live subscription can be canceled.")
    if not sub.cancel_at_period_end:
        sub.cancel_at_period_end = True
        sub.canceled_at = timezone.now()
        sub.save()
        log.info("subscription.cancel_scheduled", user_id=sub.user_id, subscription_id=sub.pk, actor=actor)
    return sub


@transaction.atomic
def subscription_advance(*, subscription_id: int, now: datetime | None = None) -> Subscription | None:
    """Move one subscription through period ends. Idempotent: does nothing before its time."""
    now = now or timezone.now()
    sub = (
        Subscription.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("plan", "last_transaction")
        .filter(pk=subscription_id, status__in=LIVE_SUBSCRIPTION_STATUSES)
        .first()
    )
    if sub is None:
        return None
    _ensure_periods(sub)
    if sub.status == SubscriptionStatus.ACTIVE and sub.current_period_end <= now:
        previous = sub.plan
        periods = _timeline(sub)
        in_force = _derive(sub, periods, now)
        changed = sub.plan_id != previous.pk
        sub.save()
        if changed:
            # The next paid period (queued by a payment) is in force now, or was before the paid time ran out.
            current = covering(periods, now) or periods[-1]
            _emit_for(
                sub,
                previous=previous,
                reason="downgraded" if sub.plan.tier < previous.tier else "upgraded",
                transaction_id=current.transaction_id or current.credit_for_id,
                periods=periods,
            )
        if in_force:
            return sub
        if sub.cancel_at_period_end:
            return _end(sub, status=SubscriptionStatus.CANCELED, reason="canceled", now=now)
        sub.status = SubscriptionStatus.PAST_DUE
        sub.grace_until = sub.current_period_end + timedelta(days=sub.plan.grace_period_days)
        sub.debt_amount = sub.plan.price_amount
        sub.debt_token = sub.plan.price_token
        sub.save()
        log.info("subscription.past_due", user_id=sub.user_id, subscription_id=sub.pk)
        outbox_emit(
            topic="subscription.past_due.v1",
            aggregate_type="user",
            aggregate_id=str(sub.user_id),
            payload={
                "user_id": sub.user_id,
                "plan": sub.plan.slug,
                "grace_until": sub.grace_until.isoformat(),
                "debt_amount": str(sub.debt_amount),
                "debt_token": sub.plan.price_token.symbol,
            },
        )
        if sub.grace_until > now:
            return sub
    if sub.status == SubscriptionStatus.PAST_DUE and sub.grace_until and sub.grace_until <= now:
        return _end(sub, status=SubscriptionStatus.EXPIRED, reason="expired", now=now)
    return sub


def subscriptions_due_ids(*, now: datetime | None = None, limit: int = 1000) -> list[int]:
    now = now or timezone.now()
    return list(
        Subscription.objects.filter(
            Q(status=SubscriptionStatus.ACTIVE, current_period_end__lte=now)
            | Q(status=SubscriptionStatus.PAST_DUE, grace_until__lte=now)
        ).values_list("pk", flat=True)[:limit]
    )
