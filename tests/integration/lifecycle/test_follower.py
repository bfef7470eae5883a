"""Follower acceptance (issue 4): a sync task killed between two batches and restarted neither loses nor
doubles an event. Real commits (transaction=True): the first batch must really be committed with its
cursor, the failing one really rolled back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError

from billing.chain.rpc import ChainClient
from billing.models import ChainEvent, CryptoConfig, PaymentTransaction, Subscription, TransactionStatusChange, TxStatus
from billing.services import chain_sync
from billing.tasks import contract_sync_task
from tests.integration.lifecycle.conftest import (
    PAYERS,
    create_checkout,
    follower_from_head,
    plan_changed_for,
    send_steps,
)

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]
BATCH = 3


class WorkerKilled(OperationalError):
    """The worker's database connection went away in the middle of a batch (an event that raises anything
    else is a bad event: recorded and skipped, tests/integration/lifecycle/test_reorg_review.py)."""


@pytest.mark.parametrize("fault", ["while_applying", "while_reading_logs"])
def test_sync_killed_between_batches_neither_loses_nor_doubles(chain, world, user_api, plain_user, monkeypatch, fault):
    depth = world.network.confirmation_depth
    cursor = follower_from_head(world, chain)
    start = cursor.last_block
    # One payment at the first block of each batch of BATCH blocks: start+1, start+4, start+7, start+10.
    payments: list[tuple[PaymentTransaction, str]] = []
    for i in range(4):
        body = create_checkout(user_api, "eth-pro", PAYERS[i % len(PAYERS)])
        (tx_hash,) = send_steps(chain, PAYERS[i % len(PAYERS)], body["payment"])
        assert chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"] == start + 1 + BATCH * i
        payments.append((PaymentTransaction.objects.get(public_id=body["id"]), tx_hash))
        chain.anvil.mine(BATCH - 1)
    chain.anvil.mine(depth)
    head = chain.anvil.block_number()

    if fault == "while_applying":
        real = chain_sync.payment_observe_paid
        calls = []

        def dies_on_second_payment(**kwargs):
            calls.append(kwargs["observed"].tx_hash)
            if len(calls) == 2:
                raise WorkerKilled("worker lost in the middle of batch 2")
            return real(**kwargs)

        monkeypatch.setattr(chain_sync, "payment_observe_paid", dies_on_second_payment)
    else:
        real_get_logs = ChainClient.get_logs
        calls = []

        def dies_on_batch_two(self, **kwargs):
            calls.append(kwargs["from_block"])
            if kwargs["from_block"] == start + 1 + BATCH:
                raise WorkerKilled("worker lost while reading batch 2")
            return real_get_logs(self, **kwargs)

        monkeypatch.setattr(ChainClient, "get_logs", dies_on_batch_two)

    # The beat's task, with the batch size from the crypto config: the failure is recorded on the cursor.
    config = CryptoConfig.load()
    config.get_logs_max_range = BATCH
    config.save()
    contract_sync_task(world.contract.pk)

    cursor.refresh_from_db()
    assert cursor.last_block == start + BATCH  # batch 1 committed with its cursor
    assert "WorkerKilled" in cursor.last_error
    statuses = [PaymentTransaction.objects.get(pk=tx.pk).status for tx, _ in payments]
    assert statuses == [TxStatus.CONFIRMED, TxStatus.PENDING, TxStatus.PENDING, TxStatus.PENDING]
    assert ChainEvent.objects.filter(contract=world.contract).count() == 1  # batch 2's writes rolled back
    assert plan_changed_for(payments[0][0].pk).count() == 1

    monkeypatch.undo()
    result = chain_sync.contract_sync(contract_id=world.contract.pk, batch_size=BATCH)
    assert result.batches == 3 and result.logs == 3

    cursor.refresh_from_db()
    assert cursor.last_block == head - depth and cursor.last_error == ""
    for tx, tx_hash in payments:
        tx.refresh_from_db()
        assert tx.status == TxStatus.CONFIRMED and tx.tx_hash == tx_hash
        assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
        assert ChainEvent.objects.filter(tx_hash=tx_hash).count() == 1
        assert plan_changed_for(tx.pk).count() == 1
    assert ChainEvent.objects.filter(contract=world.contract).count() == 4
    # Four paid periods of the same plan: activated once, extended three times.
    sub = Subscription.objects.get(user=plain_user)
    assert sub.current_period_end - sub.current_period_start == timedelta(days=30 * 4)

    # A third run finds nothing new.
    assert chain_sync.contract_sync(contract_id=world.contract.pk, batch_size=BATCH).batches == 0
