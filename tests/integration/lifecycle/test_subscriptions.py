"""Subscription rules (docs/subscriptions.md) and the plan.changed.v1 payload each change writes
(docs/reference/api/contract.md "Events"). Ledger rows come from factories: no chain is needed for the rules
themselves."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from billing.models import OutboxEvent, Subscription, SubscriptionStatus
from billing.services.subscriptions import (
    subscription_advance,
    subscription_apply_refund,
    subscription_cancel,
    subscriptions_due_ids,
)
from tests.conftest import token_client
from tests.factories import UserFactory
from tests.integration.lifecycle.conftest import pay  # with the plans and t0 fixtures there

pytestmark = pytest.mark.django_db
MONTH = timedelta(days=30)
EVENT_FIELDS = {
    "event_id",
    "occurred_at",
    "user_id",
    "previous_plan",
    "plan",
    "limits",
    "reason",
    "transaction_id",
    "period_end",
    "paid_until",
}


def plan_events(user) -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.filter(topic="plan.changed.v1", aggregate_id=str(user.pk))]


def last_event(user) -> dict:
    payload = OutboxEvent.objects.filter(topic="plan.changed.v1", aggregate_id=str(user.pk)).latest("pk").payload
    assert set(payload) == EVENT_FIELDS
    assert payload["user_id"] == user.pk
    return payload


def test_first_payment_activates(plans, t0):
    user = UserFactory()
    tx, sub = pay(user, plans["pro"], now=t0, periods=2)
    assert (sub.status, sub.plan, sub.current_period_start, sub.current_period_end) == (
        SubscriptionStatus.ACTIVE,
        plans["pro"],
        t0,
        t0 + 2 * MONTH,
    )
    event = last_event(user)
    assert event["previous_plan"] is None and event["plan"] == "pro" and event["limits"] == {"api_calls": 10000}
    assert event["reason"] == "payment_confirmed" and event["transaction_id"] == str(tx.pk)
    assert datetime.fromisoformat(event["period_end"]) == t0 + 2 * MONTH


def test_renewal_of_the_same_plan_extends_from_the_period_end(plans, t0):
    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    tx, sub = pay(user, plans["pro"], now=t0 + timedelta(days=10))
    assert sub.current_period_start == t0 and sub.current_period_end == t0 + 2 * MONTH  # not day 10 + 30
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["reason"]) == ("pro", "pro", "payment_confirmed")
    assert datetime.fromisoformat(event["period_end"]) == t0 + 2 * MONTH
    assert Subscription.objects.filter(user=user).count() == 1


def test_upgrade_starts_now(plans, t0):
    user = UserFactory()
    pay(user, plans["starter"], now=t0)
    upgrade_at = t0 + timedelta(days=10)
    tx, sub = pay(user, plans["pro"], now=upgrade_at)
    # 20 unused Starter days ($5 a month) are worth 20 x 5 / 15 = 6 2/3 Pro days ($15 a month).
    credit = timedelta(days=6, hours=16)
    assert (sub.plan, sub.current_period_start, sub.current_period_end) == (
        plans["pro"],
        upgrade_at,
        upgrade_at + MONTH + credit,
    )
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["limits"]) == ("starter", "pro", {"api_calls": 10000})
    assert event["reason"] == "upgraded" and event["transaction_id"] == str(tx.pk)


def test_downgrade_is_scheduled_for_the_period_end(plans, t0):
    user = UserFactory()
    pay(user, plans["pro"], now=t0)
    before = len(plan_events(user))
    tx, sub = pay(user, plans["starter"], now=t0 + timedelta(days=10))
    assert sub.plan == plans["pro"] and sub.current_period_end == t0 + MONTH  # pro runs to its end
    assert (sub.pending_plan, sub.pending_period_end) == (plans["starter"], t0 + 2 * MONTH)
    # The payment is confirmed and paid time grew; the plan in force did not change yet.
    assert len(plan_events(user)) == before + 1
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["reason"]) == ("pro", "pro", "payment_confirmed")
    assert datetime.fromisoformat(event["period_end"]) == t0 + MONTH
    assert datetime.fromisoformat(event["paid_until"]) == t0 + 2 * MONTH

    assert subscription_advance(subscription_id=sub.pk, now=t0 + MONTH - timedelta(seconds=1)).plan == plans["pro"]
    sub = subscription_advance(subscription_id=sub.pk, now=t0 + MONTH)
    assert (sub.status, sub.plan, sub.current_period_start, sub.current_period_end) == (
        SubscriptionStatus.ACTIVE,
        plans["starter"],
        t0 + MONTH,
        t0 + 2 * MONTH,
    )
    assert sub.pending_plan is None
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["reason"]) == ("pro", "starter", "downgraded")
    assert event["limits"] == {"api_calls": 1000} and event["transaction_id"] == str(tx.pk)
    assert datetime.fromisoformat(event["period_end"]) == t0 + 2 * MONTH


def test_cancel_takes_effect_at_the_period_end(plans, t0):
    user = UserFactory()
    _, sub = pay(user, plans["pro"], now=t0)
    response = token_client(user).post("/v1/billing/me/subscription/cancel")
    assert response.status_code == 200, response.content
    sub.refresh_from_db()
    assert sub.status == SubscriptionStatus.ACTIVE and sub.cancel_at_period_end  # access stays until the end
    subscription_cancel(subscription=sub, actor="user")  # a second cancel changes nothing
    assert sub.pk not in subscriptions_due_ids(now=t0 + MONTH - timedelta(seconds=1))
    assert sub.pk in subscriptions_due_ids(now=t0 + MONTH)

    sub = subscription_advance(subscription_id=sub.pk, now=t0 + MONTH)
    assert sub.status == SubscriptionStatus.CANCELED and sub.ended_at == t0 + MONTH
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["limits"], event["reason"]) == ("pro", None, {}, "canceled")
    assert subscription_advance(subscription_id=sub.pk, now=t0 + 2 * MONTH) is None  # no longer live


def test_unpaid_period_end_is_past_due_with_debt_then_expires_after_grace(plans, t0):
    user = UserFactory()
    _, sub = pay(user, plans["pro"], now=t0)
    end = t0 + MONTH
    events_before = len(plan_events(user))
    sub = subscription_advance(subscription_id=sub.pk, now=end)
    assert sub.status == SubscriptionStatus.PAST_DUE
    assert (sub.debt_amount, sub.debt_token) == (plans["pro"].price_amount, plans["pro"].price_token)
    assert sub.grace_until == end + timedelta(days=3)
    assert len(plan_events(user)) == events_before  # still has access: no plan change
    past_due = OutboxEvent.objects.get(topic="subscription.past_due.v1", aggregate_id=str(user.pk))
    assert past_due.payload["debt_amount"] == "15000000"

    assert subscription_advance(subscription_id=sub.pk, now=sub.grace_until - timedelta(seconds=1)).status == (
        SubscriptionStatus.PAST_DUE
    )
    sub = subscription_advance(subscription_id=sub.pk, now=end + timedelta(days=3))
    assert sub.status == SubscriptionStatus.EXPIRED
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["reason"]) == ("pro", None, "expired")


def test_late_payment_while_past_due_pays_for_the_grace_days_and_clears_the_debt(plans, t0):
    user = UserFactory()
    _, sub = pay(user, plans["pro"], now=t0)
    subscription_advance(subscription_id=sub.pk, now=t0 + MONTH)
    _, sub = pay(user, plans["pro"], now=t0 + MONTH + timedelta(days=2))
    assert sub.status == SubscriptionStatus.ACTIVE and sub.current_period_end == t0 + 2 * MONTH
    assert (sub.debt_amount, sub.debt_token, sub.grace_until) == (0, None, None)


def test_refund_ends_the_subscription_at_once(plans, t0):
    user = UserFactory()
    tx, sub = pay(user, plans["pro"], now=t0)
    refunded_at = t0 + timedelta(days=3)
    sub = subscription_apply_refund(tx=tx, now=refunded_at)
    assert sub.status == SubscriptionStatus.EXPIRED and sub.ended_at == refunded_at
    assert sub.current_period_end == refunded_at
    event = last_event(user)
    assert (event["previous_plan"], event["plan"], event["limits"]) == ("pro", None, {})
    assert event["reason"] == "refunded" and event["transaction_id"] == str(tx.pk)
    # A new payment afterwards starts a new subscription.
    _, again = pay(user, plans["pro"], now=refunded_at + timedelta(days=1))
    assert again.pk != sub.pk and again.status == SubscriptionStatus.ACTIVE
