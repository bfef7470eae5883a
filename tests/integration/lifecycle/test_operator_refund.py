"""An operator refund through the admin API: a row first, replaced with a higher fee while stuck, lands
once, and the ledger follows the chain's Refunded log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import OperatorTransaction, PaymentTransaction, Subscription, TransactionStatusChange, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.operator_txs import operator_tx_watch
from billing.services.receipts import transaction_check_receipt
from tests.integration.lifecycle.conftest import PAYERS, send_steps

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def test_stuck_refund_is_replaced_with_a_higher_fee_and_lands_once(chain, world, user_api, admin_api, plain_user):
    payer = PAYERS[1]
    body = user_api.post("/v1/billing/checkout", {"plan": "eth-pro", "wallet": payer.address}, format="json").json()
    (tx_hash,) = send_steps(chain, payer, body["payment"])
    user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": tx_hash}, format="json")
    chain.anvil.mine(2)
    assert transaction_check_receipt(transaction_id=PaymentTransaction.objects.get(public_id=body["id"]).pk) == (
        "confirmed"
    )
    contract_sync(contract_id=world.contract.pk)  # the follower is at the head before the refund
    balance_before = chain.w3.eth.get_balance(payer.address)

    chain.anvil.call("evm_setAutomine", [False])
    try:
        response = admin_api.post(
            f"/v1/billing/admin/transactions/{body['id']}/refund", {"reason": "test"}, format="json"
        )
        assert response.status_code in (200, 202), response.content
        row = OperatorTransaction.objects.get(payment__public_id=body["id"])
        assert row.status == OperatorTransaction.Status.PENDING and len(row.tx_hashes) == 1
        first_fee = row.max_fee_per_gas

        assert operator_tx_watch(row_id=row.pk) == "waiting"  # not stuck yet
        later = timezone.now() + timedelta(hours=1)
        assert operator_tx_watch(row_id=row.pk, now=later) == "replaced"
        row.refresh_from_db()
        assert len(row.tx_hashes) == 2 and row.replacements == 1
        assert row.max_fee_per_gas >= first_fee * 110 // 100
        chain.anvil.call("evm_mine")
    finally:
        chain.anvil.call("evm_setAutomine", [True])

    assert operator_tx_watch(row_id=row.pk) == "mined"
    row.refresh_from_db()
    assert row.mined_tx_hash == row.tx_hashes[-1]
    receipt = chain.w3.eth.get_transaction_receipt(row.tx_hashes[-1])
    assert receipt["status"] == 1
    # The network fee the operator paid, from the mined receipt (net revenue subtracts it).
    assert (row.gas_used, row.effective_gas_price) == (receipt["gasUsed"], receipt["effectiveGasPrice"])
    assert row.fee == receipt["gasUsed"] * receipt["effectiveGasPrice"] > 0
    with pytest.raises(Exception):  # the first version never landed
        chain.w3.eth.get_transaction_receipt(row.tx_hashes[0])
    amount = int(body["amount"])
    assert chain.w3.eth.get_balance(payer.address) == balance_before + amount

    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    contract_sync(contract_id=world.contract.pk)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert tx.status == TxStatus.REFUNDED and tx.refund_tx_hash == row.mined_tx_hash
    assert TransactionStatusChange.objects.filter(transaction=tx, to_status="refunded").count() == 1
    assert Subscription.objects.get(user=plain_user).status == "expired"
