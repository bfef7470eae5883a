"""Receipt tracking of reported hashes is claimed like every other sweep (issue 8 §5): the beat claims due
rows (SKIP LOCKED, the next check moved forward in the same transaction) and queues one message per row with
its claim; a check runs only while its claim is the row's; "nothing final yet" waits
billing.retry.backoff_seconds. Before: every tick queued another check of every submitted transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import tasks
from billing.models import PaymentTransaction, TxStatus
from billing.services.receipts import transaction_check_receipt, transaction_submit
from tests import factories as f

pytestmark = pytest.mark.django_db


class NotMinedYet:
    def __init__(self):
        self.calls = 0

    def get_transaction_receipt(self, tx_hash):
        self.calls += 1
        return None


@pytest.fixture
def queued(monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.transaction_track_receipt, "delay", lambda *args: sent.append(args))
    return sent


def test_three_sweeps_queue_one_check_and_waiting_backs_off(queued):
    tx = f.PaymentTransactionFactory(status=TxStatus.SUBMITTED, tx_hash=f.random_hash())
    assert [tasks.receipts_sweep() for _ in range(3)] == [1, 0, 0]
    [(pk, claim)] = queued
    chain = NotMinedYet()
    assert transaction_check_receipt(transaction_id=pk, claim=claim, force=False, client=chain) == "waiting"
    # the same message again (a broker redelivery), and a claimless kick: neither checks again
    assert transaction_check_receipt(transaction_id=pk, claim=claim, force=False, client=chain) == "skipped"
    assert transaction_check_receipt(transaction_id=pk, force=False, client=chain) == "skipped"
    assert chain.calls == 1
    tx.refresh_from_db()
    assert tx.receipt_checks == 1
    waited = (tx.receipt_next_check_at - timezone.now()).total_seconds()
    assert 1.5 < waited <= 4  # backoff_seconds(1, base=4, cap=120): in [2, 4]
    assert tasks.receipts_sweep() == 0 and len(queued) == 1

    PaymentTransaction.objects.filter(pk=pk).update(receipt_next_check_at=timezone.now() - timedelta(seconds=1))
    assert tasks.receipts_sweep() == 1  # due again after its backoff


def test_a_reported_hash_is_checked_by_its_own_message_first(queued, django_capture_on_commit_callbacks):
    tx = f.PaymentTransactionFactory(status=TxStatus.PENDING)
    with django_capture_on_commit_callbacks(execute=False):
        transaction_submit(tx=tx, tx_hash=f.random_hash(), actor="user:1")
    tx.refresh_from_db()
    assert tx.status == TxStatus.SUBMITTED and tx.receipt_next_check_at > timezone.now()
    assert tasks.receipts_sweep() == 0  # claimed by the message transaction_submit queued
