"""plan.changed.v1 through the transactional outbox (issue 4): an external HTTP subscriber that fails three
times then recovers receives the event once applied, signed like the webhook, with every attempt logged;
one that never recovers leaves a dead letter that a replay delivers; the in-project Quota consumer
dedupes on event_id. The subscriber is a real HTTP server on a free local port."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from billing import signing
from billing.models import DeliveryAttempt, OutboxDelivery, OutboxEvent
from billing.services.outbox import outbox_delivery_attempt, outbox_delivery_replay
from billing.services.subscriptions import subscription_apply_payment
from profiles.models import ProcessedQuotaEvent, QuotaGrant
from profiles.quota import handle_plan_changed
from tests.factories import ConfirmedTransactionFactory, PlanFactory, UserFactory

SECRET = "whsec_external_subscriber"


class Subscriber:
    """A consumer that answers 500 `failures` times, then 200 (applying each event id once)."""

    def __init__(self):
        self.failures = 0
        self.requests: list[dict] = []
        self.applied: list[str] = []
        self.hold: threading.Event | None = None  # when set, each request waits for it
        self.received = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.set()
                if outer.hold is not None:
                    outer.hold.wait(10)
                ok, _, _ = signing.check(raw, self.headers.get(signing.SIGNATURE_HEADER, ""), [SECRET])
                event = json.loads(raw)
                with outer.lock:
                    outer.requests.append({"event_id": event["event_id"], "signature_ok": ok})
                    failing = outer.failures > 0
                    if failing:
                        outer.failures -= 1
                    elif event["event_id"] not in outer.applied:
                        outer.applied.append(event["event_id"])
                self.send_response(500 if failing or not ok else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def subscriber(settings):
    consumer = Subscriber()
    # Read at emit time: every plan.changed.v1 written from now on gets a delivery for it.
    settings.BILLING_EXTERNAL_SUBSCRIBERS = [
        {"name": "quota-ext", "url": consumer.url, "secret": SECRET, "topics": ["plan.changed.v1"]}
    ]
    settings.BILLING_OUTBOX_HTTP_TIMEOUT = 5
    yield consumer
    consumer.close()


def emit_plan_changed() -> OutboxEvent:
    """A confirmed payment through the real subscription service: it writes the outbox event."""
    plan = PlanFactory(slug="pro-ext", limits={"api_calls": 500})
    tx = ConfirmedTransactionFactory(user=UserFactory(), plan=plan)
    subscription_apply_payment(tx=tx)
    return OutboxEvent.objects.get(topic="plan.changed.v1", payload__transaction_id=str(tx.pk))


def attempts_of(delivery: OutboxDelivery) -> list[tuple[bool, int | None]]:
    return [(a.ok, a.status_code) for a in DeliveryAttempt.objects.filter(delivery=delivery).order_by("pk")]


@pytest.mark.django_db
def test_subscriber_failing_three_times_then_recovering_gets_it_once(subscriber):
    subscriber.failures = 3
    event = emit_plan_changed()
    delivery = OutboxDelivery.objects.get(event=event, subscriber="quota-ext")
    assert set(event.deliveries.values_list("subscriber", flat=True)) == {"quota", "notifications", "quota-ext"}

    for expected_attempts in (1, 2, 3):
        outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == (OutboxDelivery.Status.PENDING, expected_attempts)
        assert "500" in delivery.last_error and delivery.next_attempt_at is not None
    outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
    delivery.refresh_from_db()
    assert delivery.status == OutboxDelivery.Status.DELIVERED and delivery.delivered_at is not None
    assert outbox_delivery_attempt(delivery_id=delivery.pk, force=True) is None  # delivered: never again

    assert subscriber.applied == [str(event.event_id)]
    assert len(subscriber.requests) == 4 and all(r["signature_ok"] for r in subscriber.requests)
    assert attempts_of(delivery) == [(False, 500), (False, 500), (False, 500), (True, 200)]


@pytest.mark.django_db
def test_subscriber_that_never_recovers_is_a_dead_letter_that_a_replay_delivers(subscriber, settings, admin_api):
    settings.BILLING_OUTBOX_MAX_ATTEMPTS = 3
    subscriber.failures = 10**6
    event = emit_plan_changed()
    delivery = OutboxDelivery.objects.get(event=event, subscriber="quota-ext")
    for _ in range(3):
        outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
    delivery.refresh_from_db()
    assert delivery.status == OutboxDelivery.Status.DEAD and delivery.next_attempt_at is None
    assert outbox_delivery_attempt(delivery_id=delivery.pk, force=True) is None  # dead: the relay leaves it
    assert len(attempts_of(delivery)) == 3 and subscriber.applied == []

    # An operator replays it from the admin API while the consumer is still down: dead again, then
    # (consumer back) replayed once more and delivered.
    replayed = admin_api.post(f"/v1/billing/admin/outbox/{delivery.pk}/replay")
    assert replayed.status_code == 200, replayed.content
    delivery.refresh_from_db()
    assert delivery.status == OutboxDelivery.Status.PENDING and delivery.max_attempts == 6
    for _ in range(3):
        outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
    delivery.refresh_from_db()
    assert delivery.status == OutboxDelivery.Status.DEAD

    subscriber.failures = 0
    outbox_delivery_replay(delivery=delivery, actor="ops-admin")
    outbox_delivery_attempt(delivery_id=delivery.pk)  # due now: no force needed
    delivery.refresh_from_db()
    assert delivery.status == OutboxDelivery.Status.DELIVERED
    assert subscriber.applied == [str(event.event_id)]
    assert len(attempts_of(delivery)) == 7
    again = admin_api.post(f"/v1/billing/admin/outbox/{delivery.pk}/replay")
    assert again.status_code == 409  # delivered: nothing to replay, and no 500


@pytest.mark.django_db
def test_quota_consumer_applies_an_event_once(settings):
    event = emit_plan_changed()
    payload = dict(event.payload)
    user_id = payload["user_id"]
    quota = OutboxDelivery.objects.get(event=event, subscriber="quota")

    outbox_delivery_attempt(delivery_id=quota.pk, force=True)
    quota.refresh_from_db()
    assert quota.status == OutboxDelivery.Status.DELIVERED
    grant = QuotaGrant.objects.get(user_id=user_id)
    assert (grant.plan_slug, grant.limits, str(grant.last_event_id)) == (
        "pro-ext",
        {"api_calls": 500},
        payload["event_id"],
    )

    # At-least-once: the same event again (a lost ack, a replay) changes nothing, even if it differed.
    assert handle_plan_changed(payload) is False
    assert handle_plan_changed({**payload, "limits": {"api_calls": 1}, "plan": "other"}) is False
    grant.refresh_from_db()
    assert (grant.plan_slug, grant.limits) == ("pro-ext", {"api_calls": 500})
    assert ProcessedQuotaEvent.objects.filter(event_id=payload["event_id"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_subscribers_of_one_event_are_delivered_at_the_same_time(subscriber):
    """While the external subscriber's delivery is in flight (its row locked), the in-project one of the
    same event is delivered, not skipped as if someone else held it."""
    event = emit_plan_changed()
    external = OutboxDelivery.objects.get(event=event, subscriber="quota-ext")
    quota = OutboxDelivery.objects.get(event=event, subscriber="quota")
    subscriber.hold = threading.Event()

    def slow_external():
        try:
            return outbox_delivery_attempt(delivery_id=external.pk, force=True)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(slow_external)
        assert subscriber.received.wait(10)
        done = outbox_delivery_attempt(delivery_id=quota.pk, force=True)
        subscriber.hold.set()
        in_flight.result(timeout=20)

    assert done is not None and done.status == OutboxDelivery.Status.DELIVERED
    external.refresh_from_db()
    assert external.status == OutboxDelivery.Status.DELIVERED
    assert QuotaGrant.objects.get(user_id=event.payload["user_id"]).plan_slug == "pro-ext"
