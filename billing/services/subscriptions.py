"""Subscription rules (docs/subscriptions.md):

- A confirmed payment activates the plan, or extends the same plan from the current period end.
- An upgrade (higher tier) starts at once: a new period starts now on the new plan.
- A downgrade (lower tier) starts at the period end: the paid period is appended after it.
- A cancel takes effect at the period end.
- Past the period end unpaid (and not canceled): past due for the plan's grace period, the renewal price
  recorded as debt; after the grace period: expired.
- A refund of the payment behind the current subscription ends it at once.
Each change of what the user may do writes a plan.changed.v1 outbox event in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.db import transaction
from django.utils import timezone

from billing.models import LIVE_SUBSCRIPTION_STATUSES, PaymentTransaction, Plan, Subscription, SubscriptionStatus
from billing.services.outbox import outbox_emit

log = structlog.get_logger(__name__)


def _emit_plan_changed(
    *,
    user_id: int,
    previous_plan: Plan | None,
    plan: Plan | None,
    reason: str,
    transaction_id: int | None,
    period_end: datetime | None,
) -> None:
    outbox_emit(
        topic="plan.changed.v1",
        aggregate_type="user",
        aggregate_id=str(user_id),
        payload={
            "occurred_at": timezone.now().isoformat(),
            "user_id": user_id,
            "previous_plan": previous_plan.slug if previous_plan else None,
            "plan": plan.slug if plan else None,
            "limits": dict(plan.limits) if plan else {},
            "reason": reason,
            "transaction_id": str(transaction_id) if transaction_id else None,
            "period_end": period_end.isoformat() if period_end else None,
        },
    )


def _live_subscription(user_id: int) -> Subscription | None:
    return (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("plan")
        .filter(user_id=user_id, status__in=LIVE_SUBSCRIPTION_STATUSES)
        .first()
    )


@transaction.atomic
def subscription_apply_payment(*, tx: PaymentTransaction, now: datetime | None = None) -> Subscription | None:
    """Called once per confirmed ledger row (the caller guarantees once)."""
    if tx.user_id is None or tx.plan_id is None:
        return None
    now = now or timezone.now()
    plan = tx.plan
    paid = plan.period * max(tx.periods, 1)
    sub = _live_subscription(tx.user_id)
    if sub is None:
        sub = Subscription.objects.create(
            user_id=tx.user_id,
            plan=plan,
            status=SubscriptionStatus.ACTIVE,
            current_period_start=now,
            current_period_end=now + paid,
            last_transaction=tx,
        )
        _emit_plan_changed(
            user_id=tx.user_id,
            previous_plan=None,
            plan=plan,
            reason="payment_confirmed",
            transaction_id=tx.pk,
            period_end=sub.current_period_end,
        )
        return sub

    previous = sub.plan
    sub.last_transaction = tx
    sub.debt_amount = 0
    sub.debt_token = None
    sub.grace_until = None
    sub.cancel_at_period_end = False
    sub.canceled_at = None
    if plan.pk == previous.pk:
        # Extend from the period end: a late (past due) payment pays for the grace days it used.
        start = sub.current_period_end if sub.current_period_end > now - paid else now
        sub.current_period_end = start + paid
        sub.status = SubscriptionStatus.ACTIVE
    elif plan.tier >= previous.tier or sub.status == SubscriptionStatus.PAST_DUE:
        # Upgrade (or a new plan bought while past due): starts now.
        sub.plan = plan
        sub.current_period_start = now
        sub.current_period_end = now + paid
        sub.pending_plan = None
        sub.pending_period_end = None
        sub.status = SubscriptionStatus.ACTIVE
    else:
        # Downgrade: the current plan runs to its end, the paid period follows on the new plan.
        sub.pending_plan = plan
        sub.pending_period_end = sub.current_period_end + paid
        sub.save()
        log.info("subscription.downgrade_scheduled", user_id=tx.user_id, plan=plan.slug, transaction_id=tx.pk)
        return sub
    sub.save()
    _emit_plan_changed(
        user_id=tx.user_id,
        previous_plan=previous,
        plan=plan,
        reason="payment_confirmed",
        transaction_id=tx.pk,
        period_end=sub.current_period_end,
    )
    return sub


@transaction.atomic
def subscription_apply_refund(*, tx: PaymentTransaction, now: datetime | None = None) -> Subscription | None:
    """A refund ends the subscription it paid for, at once."""
    if tx.user_id is None:
        return None
    now = now or timezone.now()
    sub = _live_subscription(tx.user_id)
    if sub is None or (sub.last_transaction_id != tx.pk and sub.plan_id != tx.plan_id):
        return None
    previous = sub.plan
    sub.status = SubscriptionStatus.EXPIRED
    sub.ended_at = now
    sub.current_period_end = min(sub.current_period_end, max(now, sub.current_period_start + timedelta(seconds=1)))
    sub.pending_plan = None
    sub.pending_period_end = None
    sub.save()
    _emit_plan_changed(
        user_id=tx.user_id, previous_plan=previous, plan=None, reason="refunded", transaction_id=tx.pk, period_end=now
    )
    return sub


@transaction.atomic
def subscription_cancel(*, subscription: Subscription, actor: str) -> Subscription:
    """Cancel at period end: access stays until then."""
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
    """Move one subscription through period-end rules. Idempotent: does nothing before its time."""
    now = now or timezone.now()
    sub = (
        Subscription.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("plan", "pending_plan")
        .filter(pk=subscription_id, status__in=LIVE_SUBSCRIPTION_STATUSES)
        .first()
    )
    if sub is None:
        return None
    previous = sub.plan
    if sub.status == SubscriptionStatus.ACTIVE and sub.current_period_end <= now:
        if sub.pending_plan_id and sub.pending_period_end:
            sub.plan = sub.pending_plan
            sub.current_period_start = sub.current_period_end
            sub.current_period_end = sub.pending_period_end
            sub.pending_plan = None
            sub.pending_period_end = None
            sub.save()
            _emit_plan_changed(
                user_id=sub.user_id,
                previous_plan=previous,
                plan=sub.plan,
                reason="downgraded",
                transaction_id=sub.last_transaction_id,
                period_end=sub.current_period_end,
            )
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
        return sub
    if sub.status == SubscriptionStatus.PAST_DUE and sub.grace_until and sub.grace_until <= now:
        return _end(sub, status=SubscriptionStatus.EXPIRED, reason="expired", now=now)
    return sub


def _end(sub: Subscription, *, status: str, reason: str, now: datetime) -> Subscription:
    """The period is over and nothing follows: no plan from now on."""
    sub.status = status
    sub.ended_at = now
    sub.save()
    _emit_plan_changed(
        user_id=sub.user_id,
        previous_plan=sub.plan,
        plan=None,
        reason=reason,
        transaction_id=None,
        period_end=sub.current_period_end,
    )
    return sub


def subscriptions_due_ids(*, now: datetime | None = None, limit: int = 1000) -> list[int]:
    from django.db.models import Q

    now = now or timezone.now()
    return list(
        Subscription.objects.filter(
            Q(status=SubscriptionStatus.ACTIVE, current_period_end__lte=now)
            | Q(status=SubscriptionStatus.PAST_DUE, grace_until__lte=now)
        ).values_list("pk", flat=True)[:limit]
    )
