"""plan.changed.v1 and past-due events become notification rows, delivered once: users by email, ops to
the ops webhook; failures retry and end `failed` after the last attempt."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.core import mail

from notifications.models import Notification
from notifications.receivers import handle_past_due, handle_plan_changed
from notifications.services import notification_deliver, notifications_due_ids
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def plan_changed(user, reason="refunded"):
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user.pk,
        "plan": None,
        "previous_plan": "pro",
        "reason": reason,
        "transaction_id": "7",
        "period_end": None,
        "limits": {},
    }


@pytest.fixture
def ops_server(settings):
    received: list[dict] = []
    answers = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(answers["status"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.NOTIFICATIONS_OPS_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/ops"
    yield received, answers
    server.shutdown()


def test_refund_notifies_the_user_by_email_and_ops_by_webhook_once(settings, ops_server):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    received, _ = ops_server
    user = UserFactory(email="payer@example.test")
    payload = plan_changed(user)
    handle_plan_changed(payload)
    handle_plan_changed(payload)  # at-least-once delivery: the same event again
    assert Notification.objects.count() == 2
    for pk in notifications_due_ids():
        assert notification_deliver(notification_id=pk) == "sent"
        assert notification_deliver(notification_id=pk) == "skipped"
    assert [m.to for m in mail.outbox] == [["payer@example.test"]]
    assert mail.outbox[0].subject == "Your payment was refunded"
    assert len(received) == 1 and received[0]["kind"] == "ops_refunded"
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


def test_failing_ops_webhook_retries_then_fails(settings, ops_server):
    settings.NOTIFICATIONS_MAX_ATTEMPTS = 3
    _, answers = ops_server
    answers["status"] = 500
    user = UserFactory()
    handle_past_due(
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user.pk,
            "plan": "pro",
            "grace_until": "x",
            "debt_amount": "15000000",
            "debt_token": "dUSD",
        }
    )
    ops = Notification.objects.get(audience="ops")
    # force: one attempt after the other, without waiting out the backoff between them
    assert [notification_deliver(notification_id=ops.pk, force=True) for _ in range(3)] == ["retry", "retry", "failed"]
    ops.refresh_from_db()
    assert ops.status == "failed" and ops.attempts == 3 and "HTTP 500" in ops.last_error
    user_note = Notification.objects.get(audience="user")
    assert user_note.kind == "renewal_overdue"
    assert notification_deliver(notification_id=user_note.pk) == "sent"  # no email address: the in-app list


def test_ops_notice_raised_twice_becomes_one_ops_notification(settings):
    """billing.services.notices.ops_notice -> outbox ops.notice.v1 -> one ops Notification per key."""
    from django.db import transaction

    from billing.models import OutboxDelivery
    from billing.services.notices import ops_notice
    from billing.services.outbox import outbox_delivery_attempt

    for _ in range(2):
        with transaction.atomic():
            ops_notice(kind="dead_letter", key="dead_letter:delivery:42", title="Dead letter 42", data={"id": 42})
    deliveries = OutboxDelivery.objects.filter(event__topic="ops.notice.v1", subscriber="notifications")
    assert deliveries.count() == 2
    for delivery in deliveries:
        outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
    assert set(deliveries.values_list("status", flat=True)) == {OutboxDelivery.Status.DELIVERED}
    notes = Notification.objects.filter(audience=Notification.Audience.OPS, kind="dead_letter")
    assert notes.count() == 1
    assert notes.get().dedupe_key == "ops:dead_letter:delivery:42"
    assert notes.get().data == {"key": "dead_letter:delivery:42", "id": 42}


def test_a_failed_send_backs_off_and_three_sweeps_make_one_attempt(settings, ops_server):
    """Issue 8 §5: notifications retry with billing.retry.backoff_seconds (they had no backoff: every sweep
    sent every pending row again), the sweep claims due rows (SKIP LOCKED, next_attempt_at moved forward in
    the same transaction) and honours next_attempt_at."""
    from django.utils import timezone

    from notifications.services import notifications_claim_due
    from notifications.tasks import notifications_sweep

    settings.NOTIFICATIONS_BACKOFF_BASE_SECONDS = 60
    received, answers = ops_server
    answers["status"] = 500
    handle_past_due(
        {"event_id": str(uuid.uuid4()), "user_id": UserFactory().pk, "plan": "pro", "grace_until": "x",
         "debt_amount": "1", "debt_token": "dUSD"}
    )  # fmt: skip
    Notification.objects.filter(audience="user").update(status="sent")  # only the ops row is in play
    ops = Notification.objects.get(audience="ops")
    assert [notifications_sweep() for _ in range(3)] == [1, 0, 0]
    ops.refresh_from_db()
    assert ops.attempts == 1 and ops.status == "pending" and len(received) == 1
    # backoff_seconds(1, base=60, cap=3600): between 30 and 60 s from now
    waited = (ops.next_attempt_at - timezone.now()).total_seconds()
    assert 25 < waited <= 60
    assert notification_deliver(notification_id=ops.pk) == "skipped"  # the kick task honours it too
    assert notifications_due_ids() == [] and notifications_claim_due() == []

    # Due again: one claim takes it, a second claimer finds nothing, a stale claim is refused.
    Notification.objects.filter(pk=ops.pk).update(next_attempt_at=timezone.now())
    answers["status"] = 200
    [(pk, claim)] = notifications_claim_due()
    assert notifications_claim_due() == []
    assert notification_deliver(notification_id=pk, claim=claim - timedelta(seconds=1)) == "skipped"
    assert notification_deliver(notification_id=pk, claim=claim) == "sent"
    ops.refresh_from_db()
    assert ops.status == "sent" and ops.attempts == 2 and ops.next_attempt_at is None
