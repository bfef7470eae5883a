"""Concurrency acceptance (issue 4): 30 simultaneous deliveries of one webhook, and the webhook's worker racing
the chain follower, each give exactly one ledger effect and one plan.changed.v1. The requests only store the
delivery (202 once, 200 duplicate for the rest); the worker's claim applies it.

These run with real commits (transaction=True): every thread has its own PostgreSQL connection, so the
database constraints and row locks are what keep the ledger exact, not a test transaction."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client

from billing.models import (
    ChainEvent,
    InboundEvent,
    OutboxDelivery,
    OutboxEvent,
    PaymentTransaction,
    Subscription,
    TransactionStatusChange,
    TxStatus,
)
from billing.services.chain_sync import contract_sync
from billing.services.webhooks import inbound_events_process_due
from tests.conftest import link_wallet, token_client
from tests.integration.lifecycle.conftest import (
    PAYERS,
    create_checkout,
    follower_from_head,
    plan_changed_for,
    post_webhook,
    send_steps,
    webhook_body,
)

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]
THREADS = 30


def run_together(n: int, fn) -> list:
    """Run fn(0..n-1) in n threads released at the same instant; each closes its own DB connection."""
    barrier = threading.Barrier(n)

    def worker(i: int):
        try:
            barrier.wait(timeout=20)
            return fn(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(worker, range(n)))


def paid_at_depth(chain, world, user, payer) -> tuple[PaymentTransaction, str]:
    """A native checkout paid with its wallet step, mined past the network's depth."""
    link_wallet(user, payer.address)  # checkout takes only SIWE-verified payers
    body = create_checkout(token_client(user), "eth-pro", payer)
    (tx_hash,) = send_steps(chain, payer, body["payment"])
    chain.anvil.mine(world.network.confirmation_depth)
    return PaymentTransaction.objects.get(public_id=body["id"]), tx_hash


def assert_one_effect(tx: PaymentTransaction, tx_hash: str) -> None:
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.tx_hash == tx_hash
    assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
    assert ChainEvent.objects.filter(tx_hash=tx_hash, name="Paid").count() == 1
    events = list(plan_changed_for(tx.pk))
    assert len(events) == 1 and events[0].payload["reason"] == "payment_confirmed"
    # One delivery per subscriber of the one event, not one per webhook.
    assert OutboxDelivery.objects.filter(event=events[0]).count() == 2
    subs = Subscription.objects.filter(user_id=tx.user_id)
    assert subs.count() == 1
    sub = subs.get()
    assert sub.current_period_end - sub.current_period_start == timedelta(days=30)  # one period, not two


def test_30_concurrent_deliveries_of_one_webhook_apply_once(chain, world, plain_user):
    tx, tx_hash = paid_at_depth(chain, world, plain_user, PAYERS[0])
    body = webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-storm")

    responses = run_together(THREADS, lambda i: post_webhook(Client(), world, body))

    answers = Counter((r.status_code, r.json().get("status")) for r in responses)
    assert answers == {(202, "accepted"): 1, (200, "duplicate"): THREADS - 1}, answers
    assert InboundEvent.objects.filter(delivery_id="dlv-storm").count() == 1
    assert inbound_events_process_due().outcomes == {"processed": 1}
    assert_one_effect(tx, tx_hash)
    assert OutboxEvent.objects.filter(topic="plan.changed.v1").count() == 1


def test_30_deliveries_with_different_ids_of_one_log_apply_once(chain, world, plain_user):
    tx, tx_hash = paid_at_depth(chain, world, plain_user, PAYERS[1])
    base = webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="unused")

    responses = run_together(THREADS, lambda i: post_webhook(Client(), world, {**base, "id": f"dlv-{i}"}))

    answers = Counter((r.status_code, r.json().get("status")) for r in responses)
    assert answers == {(202, "accepted"): 1, (200, "duplicate"): THREADS - 1}, answers
    assert inbound_events_process_due().outcomes == {"processed": 1}
    # (chain_id, tx_hash, log_index) is unique in the database: one stored delivery.
    assert InboundEvent.objects.filter(tx_hash=tx_hash.lower()).count() == 1
    assert_one_effect(tx, tx_hash)


def test_webhook_and_follower_racing_on_one_payment_apply_once(chain, world, django_user_model):
    follower_from_head(world, chain)
    winners = Counter()
    for round_no in range(3):
        user = django_user_model.objects.create_user(username=f"racer{round_no}", password="pw")
        tx, tx_hash = paid_at_depth(chain, world, user, PAYERS[round_no % len(PAYERS)])
        body = webhook_body(chain, tx, tx_hash=tx_hash, delivery_id=f"dlv-race-{round_no}")

        response = post_webhook(Client(), world, body)
        assert response.status_code == 202 and response.json() == {"status": "accepted"}, response.content

        def contender(i: int):  # the follower and a webhook worker's claim, released together
            if i == 0:
                return contract_sync(contract_id=world.contract.pk)
            return inbound_events_process_due()

        sync_result, claim = run_together(2, contender)

        assert claim.claimed == 1 and claim.outcomes == {"processed": 1}, claim
        assert InboundEvent.objects.get(delivery_id=f"dlv-race-{round_no}").status == InboundEvent.Status.PROCESSED
        assert not sync_result.busy
        assert_one_effect(tx, tx_hash)
        confirmation = TransactionStatusChange.objects.get(transaction=tx, to_status="confirmed")
        winners[confirmation.actor.split(":")[0]] += 1
    assert OutboxEvent.objects.filter(topic="plan.changed.v1").count() == 3
    # Whoever lost the race found the ledger row confirmed and changed nothing.
    assert sum(winners.values()) == 3
