"""Concurrency through HTTP and processes, not threads in one process (issue 14).

1. Thirty identical webhook deliveries sent at once to real gunicorn (2x4 gthread workers): every request was in
   flight before the first answer came back (their client-side intervals overlap), one answer is 202, the other
   twenty-nine 200 `duplicate`, and a worker applies the payment once.
2. The webhook worker's claim and the chain follower race on one payment in two separate processes started at
   the same instant; their run intervals overlap (both paths really were in flight at once) and the payment is
   confirmed once, with one plan.changed.v1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from billing.models import InboundEvent, OutboxEvent
from billing.services.webhooks import inbound_events_process_due
from tests.integration.lifecycle.conftest import PAYERS, follower_from_head, signed_webhook, webhook_body
from tests.integration.lifecycle.test_concurrency import assert_one_effect, paid_at_depth
from tests.integration.lifecycle.test_concurrent_sweeps import assert_overlapped, run_at_once
from tests.processes import Gunicorn

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True), pytest.mark.slow]
CLIENTS = 30


def test_30_identical_deliveries_through_gunicorn_apply_once(chain, world, plain_user):
    tx, tx_hash = paid_at_depth(chain, world, plain_user, PAYERS[0])
    raw, signature = signed_webhook(webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-http-storm"))
    headers = {"Content-Type": "application/json", "X-Billing-Signature": signature}

    with Gunicorn(workers=2) as web:
        url = f"{web.url}/v1/billing/webhooks/contracts/{world.contract.slug}"
        requests.get(f"{web.url}/healthz", timeout=10)  # both workers up and warm
        barrier = threading.Barrier(CLIENTS)

        def deliver(_):
            session = requests.Session()
            session.get(f"{web.url}/healthz", timeout=30)  # connect before the barrier: the POSTs go together
            barrier.wait(timeout=30)
            started = time.monotonic()
            response = session.post(url, data=raw, headers=headers, timeout=60)
            return started, time.monotonic(), response

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(deliver, range(CLIENTS)))

    latest_start = max(started for started, _, _ in results)
    first_answer = min(ended for _, ended, _ in results)
    assert latest_start < first_answer, "the 30 requests were not all in flight at once"
    answers = Counter((r.status_code, r.json().get("status")) for _, _, r in results)
    assert answers == {(202, "accepted"): 1, (200, "duplicate"): CLIENTS - 1}, answers
    assert InboundEvent.objects.filter(delivery_id="dlv-http-storm").count() == 1
    assert inbound_events_process_due().outcomes == {"processed": 1}
    assert_one_effect(tx, tx_hash)


def test_webhook_worker_and_follower_in_two_processes_race_on_one_payment(chain, world, django_user_model):
    from tests.integration.lifecycle.conftest import post_webhook

    follower_from_head(world, chain)
    user = django_user_model.objects.create_user(username="http-racer")
    tx, tx_hash = paid_at_depth(chain, world, user, PAYERS[1])
    body = webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-process-race")
    from django.test import Client

    assert post_webhook(Client(), world, body).status_code == 202

    runs = run_at_once(
        [
            ("billing.services.webhooks.inbound_events_process_due", {}),
            ("billing.services.chain_sync.contract_sync", {"contract_id": world.contract.pk}),
        ]
    )

    assert_overlapped(runs)
    assert_one_effect(tx, tx_hash)
    assert OutboxEvent.objects.filter(topic="plan.changed.v1", payload__transaction_id=str(tx.pk)).count() == 1
    assert InboundEvent.objects.get(delivery_id="dlv-process-race").status != InboundEvent.Status.FAILED
