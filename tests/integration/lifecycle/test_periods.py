"""Paid periods as records (issue 8, sections 1 and 2): stacked payments, refunds of one payment among
several, upgrade credit. Ledger rows come from factories; the rules need no chain."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from billing.models import OutboxEvent, Subscription, SubscriptionStatus
from billing.services.subscriptions import (
    subscription_advance,
    subscription_apply_payment,
    subscription_apply_refund,
    subscriptions_due_ids,
)
from tests.factories import (
    ConfirmedTransactionFactory,
    PlanFactory,
    SubscriptionFactory,
    TokenFactory,
    UserFactory,
)
from tests.integration.lifecycle.conftest import pay  # with the plans and t0 fixtures there

pytestmark = pytest.mark.django_db
MONTH = timedelta(days=30)
# Names added by issue 8 are imported inside the tests, so this file also runs against the code before it:
# there, each test fails on the defect it describes, not on an import.


def events(user) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="plan.changed.v1", aggregate_id=str(user.pk)).order_by("pk")
    return [e.payload for e in rows]


def sweep(now) -> None:
    """What the beat task does, at a chosen time: every due subscription, one by one."""
    for pk in subscriptions_due_ids(now=now):
        subscription_advance(subscription_id=pk, now=now)


def live(user) -> Subscription:
    return Subscription.objects.get(user=user, status__in=["active", "past_due"])


def test_pro_starter_pro_then_the_period_ends(plans, t0):
    """Pay Pro, then Starter (a downgrade, queued), then Pro again (a renewal, queued after the Starter
    time): each payment's time is kept and used in order, and the sweep never raises."""
    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    pay(user, plans["starter"], now=t0 + timedelta(days=1))
    pay(user, plans["pro"], now=t0 + timedelta(days=2))
    other = UserFactory()  # a due subscription swept after the stacked one still moves on
    _, other_sub = pay(other, plans["starter"], now=t0 + MONTH)

    sweep(t0 + MONTH - timedelta(seconds=1))
    assert live(user).plan == plans["pro"]
    sweep(t0 + MONTH)
    sub = live(user)
    assert (sub.plan, sub.current_period_start, sub.current_period_end) == (
        plans["starter"],
        t0 + MONTH,
        t0 + 2 * MONTH,
    )
    assert events(user)[-1]["reason"] == "downgraded" and events(user)[-1]["plan"] == "starter"

    sweep(t0 + 2 * MONTH)
    sub = live(user)
    assert (sub.plan, sub.current_period_start, sub.current_period_end) == (
        plans["pro"],
        t0 + 2 * MONTH,
        t0 + 3 * MONTH,
    )
    assert events(user)[-1]["plan"] == "pro"
    other_sub.refresh_from_db()
    assert other_sub.status == SubscriptionStatus.PAST_DUE

    sweep(t0 + 3 * MONTH)
    sub = live(user)
    assert sub.status == SubscriptionStatus.PAST_DUE and sub.grace_until == t0 + 3 * MONTH + timedelta(days=3)
    sweep(t0 + 3 * MONTH + timedelta(days=3))
    sub.refresh_from_db()
    assert sub.status == SubscriptionStatus.EXPIRED
    assert events(user)[-1]["reason"] == "expired"


def test_refund_of_the_older_of_two_payments_keeps_the_later_one(plans, t0):
    """January paid, February paid; refunding January takes back January only: February's time moves up."""
    user = UserFactory()
    january, _ = pay(user, plans["pro"], now=t0)
    pay(user, plans["pro"], now=t0 + timedelta(days=5))
    refunded_at = t0 + timedelta(days=10)
    sub = subscription_apply_refund(tx=january, now=refunded_at)
    assert sub.status == SubscriptionStatus.ACTIVE and sub.plan == plans["pro"]
    assert sub.current_period_end == refunded_at + MONTH  # February's 30 days, from now
    event = events(user)[-1]
    assert (event["reason"], event["plan"], event["transaction_id"]) == ("refunded", "pro", str(january.pk))
    assert datetime.fromisoformat(event["period_end"]) == refunded_at + MONTH


def active_periods(user) -> list[tuple]:
    from billing.models import SubscriptionPeriod

    return [
        (p.plan.slug, p.starts_at, p.ends_at, p.kind, p.transaction_id)
        for p in SubscriptionPeriod.objects.filter(subscription__user=user, status="active").order_by("starts_at")
    ]


def test_a_second_downgrade_queues_after_the_first(plans, t0):
    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    first, _ = pay(user, plans["starter"], now=t0 + timedelta(days=1))
    second, sub = pay(user, plans["starter"], now=t0 + timedelta(days=2))
    assert (sub.plan, sub.pending_plan, sub.pending_period_end) == (plans["pro"], plans["starter"], t0 + 3 * MONTH)
    sweep(t0 + MONTH)
    assert (live(user).plan, live(user).current_period_end) == (plans["starter"], t0 + 3 * MONTH)  # both months
    assert [p[:3] for p in active_periods(user)] == [
        ("pro", t0, t0 + MONTH),
        ("starter", t0 + MONTH, t0 + 2 * MONTH),
        ("starter", t0 + 2 * MONTH, t0 + 3 * MONTH),
    ]
    assert [p[4] for p in active_periods(user)][1:] == [first.pk, second.pk]
    assert datetime.fromisoformat(events(user)[-2]["paid_until"]) == t0 + 3 * MONTH


@pytest.fixture
def enterprise(plans):
    pro = plans["pro"]
    return PlanFactory(
        slug="enterprise",
        tier=3,
        price_amount=30_000_000,
        limits={"api_calls": 100000},
        provider=pro.provider,
        contract=pro.contract,
        price_token=pro.price_token,
    )


def test_upgrade_converts_the_unused_time_and_queued_periods_follow(plans, enterprise, t0):
    user = UserFactory()
    pro_tx, _ = pay(user, plans["pro"], now=t0)
    starter_tx, _ = pay(user, plans["starter"], now=t0 + timedelta(days=1))
    at = t0 + timedelta(days=10)
    ent_tx, sub = pay(user, enterprise, now=at)
    # 20 unused Pro days at $15 / 30 days = 10 Enterprise days at $30 / 30 days; the queued Starter follows.
    credit_end = at + MONTH + timedelta(days=10)
    assert (sub.plan, sub.current_period_start, sub.current_period_end) == (enterprise, at, credit_end)
    assert (sub.pending_plan, sub.pending_period_end) == (plans["starter"], credit_end + MONTH)
    from billing.models import SubscriptionPeriod

    assert active_periods(user) == [
        ("pro", t0, at, "payment", pro_tx.pk),
        ("enterprise", at, at + MONTH, "payment", ent_tx.pk),
        ("enterprise", at + MONTH, credit_end, "upgrade_credit", pro_tx.pk),
        ("starter", credit_end, credit_end + MONTH, "payment", starter_tx.pk),
    ]
    credit = SubscriptionPeriod.objects.get(kind="upgrade_credit")
    assert credit.credit_for_id == ent_tx.pk
    event = events(user)[-1]
    assert (event["reason"], event["previous_plan"], event["plan"]) == ("upgraded", "pro", "enterprise")
    assert datetime.fromisoformat(event["period_end"]) == credit_end
    assert datetime.fromisoformat(event["paid_until"]) == credit_end + MONTH


def test_upgrade_credit_is_exact_in_the_payments_usd_estimates(plans, enterprise, t0):
    """Old payment in an 18-decimal token at an odd rate, new one in a 6-decimal token below $1: the credit
    is floor(unused x old $/s / new $/s), computed here independently with 80-digit decimals."""
    from decimal import ROUND_FLOOR, Decimal, localcontext

    from billing.models import SubscriptionPeriod

    user = UserFactory()
    eth = TokenFactory(network=plans["pro"].contract.network, decimals=18, symbol="WETH")
    old = ConfirmedTransactionFactory(
        user=user,
        plan=plans["pro"],
        token=eth,
        amount=5_000_000_000_000_001,
        usd_rate_at_confirmation=Decimal("3123.45678901"),
    )
    subscription_apply_payment(tx=old, now=t0)
    new = ConfirmedTransactionFactory(
        user=user, plan=enterprise, amount=29_990_001, usd_rate_at_confirmation=Decimal("0.99980000"), periods=2
    )
    at = t0 + timedelta(days=7, hours=3, minutes=7, seconds=11, microseconds=500_000)
    subscription_apply_payment(tx=new, now=at)
    credit = SubscriptionPeriod.objects.get(kind="upgrade_credit")
    with localcontext() as ctx:
        ctx.prec = 80
        old_usd = Decimal("3123.45678901") * Decimal(5_000_000_000_000_001) / Decimal(10**18)
        new_usd = Decimal("0.99980000") * Decimal(29_990_001) / Decimal(10**6)
        unused = Decimal((t0 + MONTH - at).total_seconds())
        expected = (unused * (old_usd / Decimal(30 * 86400)) / (new_usd / Decimal(60 * 86400))).to_integral_value(
            rounding=ROUND_FLOOR
        )
    assert (credit.ends_at - credit.starts_at) == timedelta(seconds=int(expected))
    assert credit.starts_at == at + 2 * MONTH


def test_refund_of_a_queued_downgrade_keeps_the_plan_in_force(plans, t0):
    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    starter_tx, _ = pay(user, plans["starter"], now=t0 + timedelta(days=1))
    sub = subscription_apply_refund(tx=starter_tx, now=t0 + timedelta(days=2))
    assert (sub.status, sub.plan, sub.current_period_end, sub.pending_plan) == (
        "active",
        plans["pro"],
        t0 + MONTH,
        None,
    )
    event = events(user)[-1]
    assert (event["reason"], event["plan"], event["limits"]) == ("refunded", "pro", {"api_calls": 10000})
    assert datetime.fromisoformat(event["paid_until"]) == t0 + MONTH
    from billing.models import SubscriptionPeriod

    assert SubscriptionPeriod.objects.get(transaction=starter_tx).status == "removed"


def test_refund_of_a_needs_review_renewal_keeps_the_earlier_payment(plans, t0):
    """On the old rules a refund of any payment for the plan of the subscription ended it."""
    from billing.services.ledger import transaction_set_status

    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    renewal, _ = pay(user, plans["pro"], now=t0 + timedelta(days=1))
    transaction_set_status(tx=renewal, status="needs_review", actor="test", reason="chain and ledger disagree")
    sub = subscription_apply_refund(tx=renewal, now=t0 + timedelta(days=2))
    sub = live(user)
    assert (sub.status, sub.plan, sub.current_period_end) == ("active", plans["pro"], t0 + MONTH)


def test_refunding_the_upgrade_keeps_the_credit_and_refunding_the_old_payment_takes_it(plans, enterprise, t0):
    user = UserFactory()
    pro_tx, _ = pay(user, plans["pro"], now=t0)
    at = t0 + timedelta(days=10)
    ent_tx, _ = pay(user, enterprise, now=at)
    later = at + timedelta(days=1)
    sub = subscription_apply_refund(tx=ent_tx, now=later)
    # The upgrade's own month is gone; the 10 credit days (the Pro payment's money) move up and stay Enterprise.
    assert (sub.plan, sub.current_period_start, sub.current_period_end) == (
        enterprise,
        later,
        later + timedelta(days=10),
    )
    sub = subscription_apply_refund(tx=pro_tx, now=later + timedelta(days=1))
    assert sub.status == SubscriptionStatus.EXPIRED
    assert events(user)[-1]["reason"] == "refunded" and events(user)[-1]["plan"] is None


def test_cancel_takes_effect_after_all_paid_time(plans, t0):
    from billing.services.subscriptions import subscription_cancel

    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    _, sub = pay(user, plans["starter"], now=t0 + timedelta(days=1))
    subscription_cancel(subscription=sub, actor="user")
    sweep(t0 + MONTH)
    assert live(user).plan == plans["starter"]  # paid for: still runs
    sweep(t0 + 2 * MONTH)
    sub.refresh_from_db()
    assert sub.status == SubscriptionStatus.CANCELED and events(user)[-1]["reason"] == "canceled"


def test_suspend_and_restore_a_renewal(plans, t0):
    from billing.services.subscriptions import subscription_restore_payment, subscription_suspend_payment

    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    renewal, _ = pay(user, plans["pro"], now=t0 + timedelta(days=1))
    sub = subscription_suspend_payment(tx=renewal, now=t0 + timedelta(days=2))
    assert (sub.plan, sub.current_period_end) == (plans["pro"], t0 + MONTH)
    event = events(user)[-1]
    assert (event["reason"], event["plan"], datetime.fromisoformat(event["paid_until"])) == (
        "suspended",
        "pro",
        t0 + MONTH,
    )
    sub = subscription_restore_payment(tx=renewal, now=t0 + timedelta(days=3))
    assert sub.current_period_end == t0 + 2 * MONTH
    assert events(user)[-1]["reason"] == "restored"


def test_suspending_the_only_payment_ends_the_plan_and_restoring_gives_back_the_unused_time(plans, t0):
    from billing.services.subscriptions import subscription_restore_payment, subscription_suspend_payment

    user = UserFactory()
    tx, first = pay(user, plans["pro"], now=t0)
    sub = subscription_suspend_payment(tx=tx, now=t0 + timedelta(days=2))
    assert sub.status == SubscriptionStatus.EXPIRED
    assert (events(user)[-1]["reason"], events(user)[-1]["plan"]) == ("suspended", None)
    back = t0 + timedelta(days=5)
    sub = subscription_restore_payment(tx=tx, now=back)
    assert sub.pk == first.pk and sub.status == SubscriptionStatus.ACTIVE
    # Used before the suspension: 2 days; given back: the other 28, from now.
    assert active_periods(user) == [
        ("pro", t0, t0 + timedelta(days=2), "payment", tx.pk),
        ("pro", back, back + timedelta(days=28), "payment", tx.pk),
    ]
    assert (events(user)[-1]["reason"], events(user)[-1]["plan"]) == ("restored", "pro")


def test_a_subscription_without_periods_gets_them_from_its_fields(plans, t0):
    """Rows written before the periods existed (the migration does the same for every subscription)."""
    user = UserFactory()
    last = ConfirmedTransactionFactory(user=user, plan=plans["starter"])
    sub = SubscriptionFactory(
        user=user,
        plan=plans["pro"],
        current_period_start=t0,
        current_period_end=t0 + MONTH,
        pending_plan=plans["starter"],
        pending_period_end=t0 + 2 * MONTH,
        last_transaction=last,
    )
    sweep(t0 + MONTH)
    sub.refresh_from_db()
    assert (sub.plan, sub.current_period_end) == (plans["starter"], t0 + 2 * MONTH)
    assert active_periods(user) == [
        ("pro", t0, t0 + MONTH, "migrated", None),
        ("starter", t0 + MONTH, t0 + 2 * MONTH, "migrated", last.pk),
    ]


def test_the_data_migration_writes_the_same_periods(plans, t0):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("billing.migrations.0007_subscription_periods")
    user = UserFactory()
    last = ConfirmedTransactionFactory(user=user, plan=plans["pro"])
    SubscriptionFactory(
        user=user, plan=plans["pro"], current_period_start=t0, current_period_end=t0 + MONTH, last_transaction=last
    )
    migration.periods_from_subscriptions(apps, None)
    assert active_periods(user) == [("pro", t0, t0 + MONTH, "migrated", last.pk)]
