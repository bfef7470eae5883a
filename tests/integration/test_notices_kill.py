"""A notice survives a killed worker and is not doubled (issue 13): a real Celery worker (Redis broker, the test
database) delivers an ops notice's outbox row, creates the notification and starts posting it to the ops
webhook, which holds the request; the worker is killed with SIGKILL mid-send. The sweep sends it again (the
services a new worker runs), the outbox row delivered again creates nothing: one notification row, sent,
and both POSTs carry the same Idempotency-Key, so the receiver keeps one."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from celery import Celery
from django.db import transaction

from billing.models import OutboxDelivery
from notifications.models import Notification
from tests.processes import CeleryWorker, redis_broker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def holding_ops_webhook():
    """The first POST is held (no answer) until the test lets go; later ones answer 200 at once."""
    received: list[tuple[str, dict]] = []
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.headers.get("Idempotency-Key", ""), body))
            if len(received) == 1:
                release.wait(60)
            try:
                self.send_response(200)
                self.end_headers()
            except OSError:
                pass  # the killed worker's socket is gone

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ops", received
    release.set()
    server.shutdown()


def test_notice_is_kept_once_when_its_worker_is_killed_mid_send(holding_ops_webhook):
    from billing.services.notices import ops_notice

    url, received = holding_ops_webhook
    broker = redis_broker(11)
    sender = Celery(broker=broker)
    env = {"NOTIFICATIONS_OPS_WEBHOOK_URL": url, "NOTIFICATIONS_HTTP_TIMEOUT": "60"}
    with transaction.atomic():
        ops_notice(kind="dead_letter", key="kill:1", title="Killed worker test")
    delivery = OutboxDelivery.objects.get(event__topic="ops.notice.v1")

    with CeleryWorker("notices-a", broker=broker, env=env) as first:
        sender.send_task("billing.tasks.outbox_deliver", args=[delivery.pk])
        wait_until(
            lambda: len(received) == 1, timeout=180, what="the held POST", alive=first.alive
        )  # a loaded CI box starts a worker slowly
        first.kill()  # SIGKILL mid-send: its transaction (attempt count, status) dies with it
        first.proc.wait(timeout=10)

    note = Notification.objects.get(dedupe_key="ops:kill:1")
    assert note.status == "pending" and note.attempts == 0  # nothing recorded for the killed send
    delivery.refresh_from_db()
    assert delivery.status == "delivered"  # the notification row was committed before the send

    # What the next worker does (same services as its tasks): the outbox row delivered again (a retried
    # task), then the beat sweep that finds the pending notice.
    from django.test import override_settings

    from billing.services.outbox import outbox_delivery_attempt
    from notifications.tasks import notifications_sweep

    OutboxDelivery.objects.filter(pk=delivery.pk).update(status="pending")
    assert outbox_delivery_attempt(delivery_id=delivery.pk, force=True).status == "delivered"
    with override_settings(NOTIFICATIONS_OPS_WEBHOOK_URL=url):
        assert notifications_sweep() == 1
    note.refresh_from_db()
    assert note.status == "sent" and note.attempts == 1

    assert Notification.objects.filter(kind="dead_letter").count() == 1
    assert len(received) == 2  # at least once over HTTP...
    assert {key for key, _ in received} == {"ops:kill:1"}  # ...with one key: the receiver keeps one
    assert {body["id"] for _, body in received} == {note.pk}
