"""The outbox sweep claims due deliveries (issue 8 §5): SELECT ... FOR UPDATE SKIP LOCKED, next_attempt_at
moved forward in the same transaction, one message per claimed row carrying its claim; an attempt honours
next_attempt_at, so a duplicate or stale message never makes a second attempt and a failed one backs off
with billing.retry.backoff_seconds. Before: every beat tick queued another message for every due row."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from billing import tasks
from billing.models import DeliveryAttempt, OutboxDelivery
from billing.services.outbox import outbox_claim_due, outbox_delivery_attempt
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def queued(monkeypatch):
    """The broker, replaced by a list: what the sweep would have queued."""
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.outbox_deliver, "delay", lambda *args: sent.append(args))
    return sent


@pytest.fixture
def crm(settings):
    settings.BILLING_EXTERNAL_SUBSCRIBERS = [
        {"name": "crm", "url": f"http://127.0.0.1:{closed_port()}/hook", "secret": "s", "topics": ["plan.changed.v1"]}
    ]
    settings.BILLING_OUTBOX_BACKOFF_BASE_SECONDS = 60


def test_three_sweeps_queue_one_message_and_make_one_attempt(crm, queued):
    delivery = f.OutboxDeliveryFactory(subscriber="crm", next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert [tasks.outbox_sweep() for _ in range(3)] == [1, 0, 0]
    [(pk, claim)] = queued
    assert pk == delivery.pk
    delivery.refresh_from_db()
    assert delivery.next_attempt_at.isoformat() == claim and delivery.next_attempt_at > timezone.now()

    # A message without the claim (a duplicate of the emit-time kick) finds the row claimed: no attempt.
    outbox_delivery_attempt(delivery_id=pk)
    assert not DeliveryAttempt.objects.exists()

    tasks.outbox_deliver(pk, claim)  # the claimed message: one attempt, refused (closed port), backs off
    tasks.outbox_deliver(pk, claim)  # the same message delivered twice by the broker: nothing more
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and DeliveryAttempt.objects.count() == 1
    waited = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 25 < waited <= 60  # backoff_seconds(1, base=60, ...): in [30, 60]
    assert tasks.outbox_sweep() == 0 and len(queued) == 1  # not due again yet


def test_a_new_delivery_is_left_to_its_own_message_for_a_while(crm, queued):
    fresh = f.OutboxDeliveryFactory(subscriber="crm", next_attempt_at=timezone.now())
    assert tasks.outbox_sweep() == 0 and queued == []
    OutboxDelivery.objects.filter(pk=fresh.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    assert tasks.outbox_sweep() == 1


def test_concurrent_claims_take_different_rows_and_skip_an_attempt_in_progress(crm):
    old = timezone.now() - timedelta(minutes=5)
    rows = [f.OutboxDeliveryFactory(subscriber="crm", next_attempt_at=old) for _ in range(3)]
    held, release = threading.Event(), threading.Event()

    def attempt_in_progress():  # holds one row's lock, as a running attempt does
        try:
            with transaction.atomic():
                OutboxDelivery.objects.select_for_update().get(pk=rows[0].pk)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=attempt_in_progress)
    thread.start()
    try:
        assert held.wait(10)
        first = [pk for pk, _ in outbox_claim_due(limit=1)]
        second = [pk for pk, _ in outbox_claim_due()]
        assert len(first) == 1 and rows[0].pk not in first + second
        assert sorted(first + second) == sorted(r.pk for r in rows[1:])
    finally:
        release.set()
        thread.join()
