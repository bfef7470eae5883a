"""Delivering notification rows: a user's by email, ops' to the ops webhook (or the log when none is set).
A row is written first (receivers.py); delivery is retried by a beat sweep until it is sent or has used
its attempts, when it is marked failed for an operator to see."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import requests
import structlog
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.attempts import Attempts
from billing_project.logging import error_text
from notifications.models import Notification

log = structlog.get_logger(__name__)
# The delivery-attempt state machine (billing.attempts) over notification rows.
ATTEMPTS = Attempts(
    model=Notification,
    pending=Notification.Status.PENDING,
    done=Notification.Status.SENT,
    dead=Notification.Status.FAILED,
    done_at="sent_at",
)


def _send(notification: Notification) -> None:
    if notification.audience == Notification.Audience.USER:
        email = getattr(notification.user, "email", "") if notification.user_id else ""
        if not email:
            return  # nothing to send to: the in-app list (GET /v1/notifications) is the channel
        send_mail(notification.title, notification.body, settings.DEFAULT_FROM_EMAIL, [email], fail_silently=False)
        return
    url = settings.NOTIFICATIONS_OPS_WEBHOOK_URL
    if not url:
        log.warning("ops.notification", kind=notification.kind, title=notification.title, data=notification.data)
        return
    # Delivery is at least once (a worker killed after the POST and before its commit sends it again):
    # the receiver dedupes on the notification's key, sent in the body and as Idempotency-Key.
    body = {
        "id": notification.pk,
        "dedupe_key": notification.dedupe_key,
        "kind": notification.kind,
        "title": notification.title,
        "body": notification.body,
        "data": notification.data,
        "created_at": notification.created_at.isoformat(),
    }
    response = requests.post(
        url,
        data=json.dumps(body),
        headers={"Content-Type": "application/json", "Idempotency-Key": notification.dedupe_key},
        timeout=settings.NOTIFICATIONS_HTTP_TIMEOUT,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"HTTP {response.status_code}")


CLAIM_LEASE = timedelta(minutes=2)  # longer than one send can take (NOTIFICATIONS_HTTP_TIMEOUT, SMTP)


def notification_deliver(*, notification_id: int, force: bool = False, claim: datetime | None = None) -> str:
    """sent | retry | failed | skipped (taken elsewhere, already final, or not due yet).

    Safe to run twice at once (skip_locked). Honours `next_attempt_at` (the backoff after a failure, or a
    sweep's claim): a call with no `claim` only sends a due row; a sweep passes the `claim` it wrote and sends
    only while that claim is still the row's (a stale or duplicate call is skipped); `force` ignores both."""
    with transaction.atomic():
        notification = ATTEMPTS.lock(notification_id, related=("user",))
        if notification is None:
            return "skipped"
        now = timezone.now()
        if not ATTEMPTS.is_turn(notification, claim=claim, now=now, force=force):
            return "skipped"
        notification.attempts += 1
        try:
            _send(notification)
        except Exception as exc:  # any failure is a retry, recorded with its reason
            # The ops webhook URL's path is a token (Slack and the like); requests puts it in its errors.
            dead = ATTEMPTS.failed(
                notification,
                error=error_text(exc),
                now=now,
                max_attempts=settings.NOTIFICATIONS_MAX_ATTEMPTS,
                base=settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS,
                cap=settings.NOTIFICATIONS_BACKOFF_MAX_SECONDS,
            )
            notification.save(update_fields=["attempts", "last_error", "status", "next_attempt_at"])
            log.warning(
                "notification.delivery_failed",
                notification_id=notification.pk,
                kind=notification.kind,
                attempts=notification.attempts,
                error=notification.last_error,
            )
            return "failed" if dead else "retry"
        notification.save(update_fields=["attempts", *ATTEMPTS.succeeded(notification, now=now)])
    return "sent"


def _due_rows(now):
    return Notification.objects.filter(status=Notification.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def notifications_due_ids(*, limit: int = 500) -> list[int]:
    """Pending rows whose backoff is over (a read; the sweep claims them with notifications_claim_due)."""
    return list(_due_rows(timezone.now()).order_by("created_at").values_list("pk", flat=True)[:limit])


def notifications_claim_due(*, limit: int = 500, lease: timedelta = CLAIM_LEASE) -> list[tuple[int, datetime]]:
    """Claim due rows for this sweep: locked with SKIP LOCKED (a concurrent sweep takes others) and made
    not-due until the lease ends, in the same transaction. -> [(id, claim)] to pass to notification_deliver."""
    now = timezone.now()
    claim = now + lease
    ids = ATTEMPTS.claim_due(_due_rows(now), claim=claim, order_by=("created_at",), limit=limit)
    return [(pk, claim) for pk in ids]


# --- renewal due in N days (beat) ---------------------------------------------------------------------------


def renewal_due_key(subscription_id: int, period_end: datetime) -> str:
    return f"renewal_due:{subscription_id}:{period_end.isoformat()}"


def renewal_due_notify(*, now: datetime, days: int) -> int:
    """A reminder row per subscription whose paid time ends within `days` with nothing paid after it, once
    per period end (the dedupe key): running again, or in two workers at once, adds nothing."""
    from billing.selectors import subscriptions_renewal_due
    from notifications.receivers import display_amount, notify

    due = subscriptions_renewal_due(now=now, within=timedelta(days=days))
    known = set(
        Notification.objects.filter(
            dedupe_key__in=[renewal_due_key(d["subscription_id"], d["period_end"]) for d in due]
        ).values_list("dedupe_key", flat=True)
    )
    created = 0
    for item in due:
        key = renewal_due_key(item["subscription_id"], item["period_end"])
        if key in known:
            continue
        price = display_amount(
            {"amount": item["price_amount"], "decimals": item["price_decimals"], "token": item["price_token"]}
        )
        left = max(0, math.ceil((item["period_end"] - now).total_seconds() / 86400))
        created += notify(
            audience=Notification.Audience.USER,
            user_id=item["user_id"],
            kind="renewal_due",
            title=f"Your {item['plan_title']} plan renews in {left} day{'s' if left != 1 else ''}"
            if left
            else f"Your {item['plan_title']} plan ends today",
            body=f"Your paid time ends {item['period_end']:%Y-%m-%d %H:%M} UTC. Pay {price} before then to keep it.",
            data={
                "subscription_id": item["subscription_id"],
                "plan": item["plan"],
                "period_end": item["period_end"].isoformat(),
                "price_amount": str(item["price_amount"]),
                "price_token": item["price_token"],
            },
            dedupe_key=key,
        )
    return created
