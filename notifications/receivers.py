"""Consumers of billing's outbox events: each event becomes notification rows (one per cause and
audience, deduplicated by key), delivered by `notifications.tasks`."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from notifications.models import Notification

TITLES = {
    "payment_confirmed": "Your payment is confirmed",
    "refunded": "Your payment was refunded",
    "expired": "Your subscription has expired",
    "canceled": "Your subscription was canceled",
    "downgraded": "Your plan changed",
    "upgraded": "Your plan was upgraded",
    "suspended": "A payment is under review",
    "restored": "Your payment is confirmed again",
}


def notify(
    *, audience: str, user_id: int | None, kind: str, title: str, body: str, data: dict, dedupe_key: str
) -> bool:
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                audience=audience, user_id=user_id, kind=kind, title=title, body=body, data=data, dedupe_key=dedupe_key
            )
    except IntegrityError:
        return False

    def kick() -> None:
        from notifications.tasks import notification_deliver_task

        notification_deliver_task.delay(notification.pk)

    transaction.on_commit(kick)
    return True


def handle_plan_changed(payload: dict) -> None:
    reason = payload.get("reason", "")
    plan = payload.get("plan") or "no plan"
    notify(
        audience=Notification.Audience.USER,
        user_id=int(payload["user_id"]),
        kind=reason or "plan_changed",
        title=TITLES.get(reason, "Your plan changed"),
        body=(
            f"Plan: {plan}. Period end: {payload.get('period_end') or '-'}."
            f" Paid until: {payload.get('paid_until') or '-'}."
        ),
        data={
            k: payload.get(k) for k in ("plan", "previous_plan", "reason", "transaction_id", "period_end", "paid_until")
        },
        dedupe_key=f"plan.changed.v1:{payload['event_id']}:user",
    )
    if reason in ("refunded", "expired"):
        notify(
            audience=Notification.Audience.OPS,
            user_id=None,
            kind=f"ops_{reason}",
            title=f"Subscription {reason}: user {payload['user_id']}",
            body=f"Plan {payload.get('previous_plan')} -> {plan}; transaction {payload.get('transaction_id')}.",
            data={k: payload.get(k) for k in ("user_id", "plan", "previous_plan", "reason", "transaction_id")},
            dedupe_key=f"plan.changed.v1:{payload['event_id']}:ops",
        )


def handle_past_due(payload: dict) -> None:
    user_id = int(payload["user_id"])
    data = {k: payload.get(k) for k in ("plan", "grace_until", "debt_amount", "debt_token")}
    notify(
        audience=Notification.Audience.USER,
        user_id=user_id,
        kind="renewal_overdue",
        title="Your renewal is overdue",
        body=f"Pay {payload.get('debt_amount')} {payload.get('debt_token')} before {payload.get('grace_until')}.",
        data=data,
        dedupe_key=f"{payload['event_id']}:user",
    )
    notify(
        audience=Notification.Audience.OPS,
        user_id=None,
        kind="ops_renewal_overdue",
        title=f"Renewal overdue: user {user_id}",
        body=f"Plan {payload.get('plan')}, grace until {payload.get('grace_until')}.",
        data={"user_id": user_id, **data},
        dedupe_key=f"{payload['event_id']}:ops",
    )


def handle_ops_notice(payload: dict) -> None:
    """billing.services.notices.ops_notice: one ops notification per key, however often it is raised."""
    notify(
        audience=Notification.Audience.OPS,
        user_id=None,
        kind=payload["kind"],
        title=payload["title"],
        body=payload.get("body", ""),
        data={"key": payload["key"], **(payload.get("data") or {})},
        dedupe_key=f"ops:{payload['key']}"[:200],
    )
