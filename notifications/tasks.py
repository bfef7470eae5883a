"""Thin tasks: a kick per new notification, and a sweep for whatever a lost message left."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def notification_deliver_task(notification_id: int) -> str:
    from notifications.services import notification_deliver

    return notification_deliver(notification_id=notification_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def notifications_sweep() -> int:
    from notifications.services import notification_deliver, notifications_claim_due

    claimed = notifications_claim_due()
    for pk, claim in claimed:
        notification_deliver(notification_id=pk, claim=claim)
    return len(claimed)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def renewal_due_notify() -> int:
    """Beat: "your renewal is due in N days" rows (once per subscription and period end)."""
    from django.conf import settings
    from django.utils import timezone

    from notifications.services import renewal_due_notify as run

    return run(now=timezone.now(), days=settings.NOTIFICATIONS_RENEWAL_DUE_DAYS)
