"""`outbox_emit_many` (the chain follower's bulk outbox write): what `outbox_emit` writes for each event, in one
statement: the event with a fresh event_id that its payload repeats, one pending delivery per subscriber of its
topic (internal and external), and one outbox_sweep trigger per transaction, however many calls, that a
savepoint rolled back does not take with it."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from billing import dispatch
from billing.models import OutboxDelivery, OutboxEvent
from billing.services.outbox import _subscribers_for, outbox_emit, outbox_emit_many

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Tasks the commit hooks send, by name (the broker replaced by a list)."""
    names: list[str] = []

    class Task:
        def __init__(self, name):
            self.name = name

        def apply_async(self, args, countdown=None):
            names.append(self.name)

    monkeypatch.setattr(dispatch.app, "tasks", type("Tasks", (), {"__getitem__": lambda _, n: Task(n)})())
    return names


@pytest.fixture
def external(settings):
    settings.BILLING_EXTERNAL_SUBSCRIBERS = [
        {"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": "s", "topics": ["plan.changed.v1"]}
    ]


def _written(since: int) -> list[tuple]:
    return [
        (
            e.topic,
            e.aggregate_type,
            e.aggregate_id,
            {k: v for k, v in e.payload.items() if k != "event_id"},
            sorted(OutboxDelivery.objects.filter(event=e).values_list("subscriber", "status", "attempts")),
        )
        for e in OutboxEvent.objects.filter(pk__gt=since).order_by("pk")
    ]


def test_many_writes_what_one_by_one_writes(external, sent, django_capture_on_commit_callbacks):
    events = [
        ("plan.changed.v1", {"user_id": 1, "plan": "pro", "limits": {"calls": 2}}, "user", "1"),
        ("payment.status.v1", {"transaction_id": 7, "status": "confirmed"}, "transaction", "7"),
        ("plan.changed.v1", {"user_id": 2, "plan": None, "limits": {}}, "user", "2"),
        ("no.subscriber.v1", {"x": "y"}, "thing", "k" * 80),
    ]
    since = OutboxEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    with transaction.atomic():
        for topic, payload, kind, key in events:
            outbox_emit(topic=topic, payload=payload, aggregate_type=kind, aggregate_id=key[:64])
        one_by_one = _written(since)
        transaction.set_rollback(True)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        assert outbox_emit_many(events) == 4
        assert outbox_emit_many(events[:1]) == 1  # a second call in the transaction: no second trigger
    written = OutboxEvent.objects.filter(pk__gt=since).order_by("pk")
    assert _written(since)[:4] == one_by_one
    assert len({e.event_id for e in written}) == 5
    for event in written:
        assert event.payload["event_id"] == str(event.event_id)
        assert uuid.UUID(event.payload["event_id"]).version == 4
    assert sorted(OutboxDelivery.objects.filter(event__in=written).values_list("subscriber", flat=True)) == sorted(
        name for topic, _, _, _ in [*events, events[0]] for name in _subscribers_for(topic)
    )
    assert sent == ["billing.tasks.outbox_sweep"]


def test_a_rolled_back_savepoint_does_not_take_the_trigger_with_it(sent, django_capture_on_commit_callbacks):
    event = [("plan.changed.v1", {"user_id": 1}, "user", "1")]
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        with transaction.atomic():
            outbox_emit_many(event)
            transaction.set_rollback(True)
        outbox_emit_many(event)
    assert sent == ["billing.tasks.outbox_sweep"]
    assert OutboxEvent.objects.filter(topic="plan.changed.v1", payload__user_id=1).count() == 1
