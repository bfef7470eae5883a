"""The outbox relay killed mid-delivery (issue 14): a real `celery worker` (Redis db 15) delivers
plan.changed.v1 events to an external HTTP subscriber (a slow local server that records every request and
applies each event_id once) and to the in-project quota consumer. The worker is SIGKILLed while the server
holds one delivery's request open. Started again, and after the sweep's grace (the rows' due time moved back
by it, as the clock would), every event reaches the subscriber at least once and is applied once, and every
quota grant is applied once."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery import Celery
from django.db.models import F

from billing.models import OutboxDelivery, OutboxEvent
from billing.services.outbox import SWEEP_GRACE
from billing.services.subscriptions import subscription_apply_payment
from profiles.models import ProcessedQuotaEvent, QuotaGrant
from tests.factories import ConfirmedTransactionFactory, PlanFactory, UserFactory
from tests.processes import CeleryWorker, redis_broker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(180)]

EVENTS = 6
SECRET = "whsec_relay_kill"


class SlowSubscriber:
    """Applies each event_id once (a repeat is counted as a duplicate, not applied) and answers 200 after
    `delay` seconds; the first request is applied and then held, unanswered, until `release` is set (the
    subscriber did its work, the answer never reached the relay)."""

    def __init__(self, delay: float = 0.2):
        self.requests: list[str] = []
        self.applied: list[str] = []
        self.duplicates: list[str] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self.held_event_id: str | None = None
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                event_id = event["event_id"]
                with outer.lock:
                    outer.requests.append(event_id)
                    (outer.duplicates if event_id in outer.applied else outer.applied).append(event_id)
                    first = outer.held_event_id is None
                    if first:
                        outer.held_event_id = event_id
                if first:
                    outer.held.set()
                    outer.release.wait(30)
                    return  # the worker that sent it is dead: nobody reads the answer
                time.sleep(delay)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_relay_killed_mid_delivery_delivers_every_event_at_least_once_and_applies_it_once(settings):
    consumer = SlowSubscriber()
    subscribers = [{"name": "crm", "url": consumer.url, "secret": SECRET, "topics": ["plan.changed.v1"]}]
    settings.BILLING_EXTERNAL_SUBSCRIBERS = subscribers  # read at emit time: each event gets a crm delivery
    try:
        plan = PlanFactory(slug="pro-relay", limits={"api_calls": 700})
        for _ in range(EVENTS):
            subscription_apply_payment(tx=ConfirmedTransactionFactory(user=UserFactory(), plan=plan))
        events = list(OutboxEvent.objects.filter(topic="plan.changed.v1"))
        assert len(events) == EVENTS
        crm = OutboxDelivery.objects.filter(subscriber="crm")
        assert crm.count() == EVENTS and OutboxDelivery.objects.filter(subscriber="quota").count() == EVENTS

        broker = redis_broker(15)
        sender = Celery("billing-relay-kill-test", broker=broker)
        env = {"BILLING_EXTERNAL_SUBSCRIBERS": json.dumps(subscribers), "BILLING_OUTBOX_HTTP_TIMEOUT": "20"}
        pending = OutboxDelivery.Status.PENDING
        with CeleryWorker("relay-1", broker=broker, env=env) as worker:
            # The emit-time triggers (the test process has no broker of its own).
            for pk in OutboxDelivery.objects.order_by("pk").values_list("pk", flat=True):
                sender.send_task("billing.tasks.outbox_deliver", args=[pk])
            wait_until(consumer.held.is_set, timeout=60, what="a delivery in flight", alive=worker.alive)
            worker.kill()
            worker.proc.wait(10)
        # Killed mid-delivery: the subscriber got the request, the attempt was never recorded.
        in_flight = crm.get(event__event_id=consumer.held_event_id)
        assert in_flight.status == pending and in_flight.attempts == 0
        assert consumer.applied == [consumer.held_event_id]
        consumer.release.set()
        assert crm.exclude(status=pending).count() < EVENTS

        with CeleryWorker("relay-2", broker=broker, env=env) as worker:
            # The sweep claims rows due for longer than its grace: move their due time back by it, as the clock
            # would, and let the real sweep send the triggers.
            OutboxDelivery.objects.filter(status=pending).update(
                next_attempt_at=F("next_attempt_at") - SWEEP_GRACE - timedelta(seconds=1)
            )
            sender.send_task("billing.tasks.outbox_sweep")
            wait_until(
                lambda: not OutboxDelivery.objects.filter(status=pending).exists(),
                timeout=90,
                what="every delivery delivered",
                alive=worker.alive,
            )
        sender.close()
    finally:
        consumer.close()

    ids = sorted(str(e.event_id) for e in events)
    assert set(OutboxDelivery.objects.values_list("status", flat=True)) == {OutboxDelivery.Status.DELIVERED}
    # At least once: every event reached the subscriber; the one in flight at the kill twice.
    assert sorted(set(consumer.requests)) == ids
    assert consumer.requests.count(consumer.held_event_id) == 2
    # Applied once: the repeat of the one in flight was the subscriber's only duplicate (its dedupe on
    # event_id kept it from applying twice); the quota consumer applied each event once.
    assert sorted(consumer.applied) == ids and consumer.duplicates == [consumer.held_event_id]
    assert sorted(str(e) for e in ProcessedQuotaEvent.objects.values_list("event_id", flat=True)) == ids
    grants = QuotaGrant.objects.all()
    assert grants.count() == EVENTS and all(g.limits == {"api_calls": 700} for g in grants)
    assert sorted(str(g.last_event_id) for g in grants) == ids
