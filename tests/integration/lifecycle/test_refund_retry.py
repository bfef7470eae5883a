"""A refund that reverted (the contract was drained) or that is stuck at the gas cap is marked failed on its
operator transaction and on the payment, ops are told once, and a billing admin retries it: a new operator
transaction, audited, that lands once (issue 8, section 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.utils import timezone

from billing.models import CryptoConfig, OperatorTransaction, OutboxEvent, RefundStatus, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.operator_txs import operator_tx_watch
from tests.integration.lifecycle.conftest import PAYERS
from tests.integration.lifecycle.test_operator_tx_recovery import paid_eth

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

REFUND = "/v1/billing/admin/transactions/{}/refund"


def refund(admin_api, tx, reason="customer asked"):
    return admin_api.post(REFUND.format(tx.public_id), {"reason": reason}, format="json")


def notices(kind: str) -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.filter(topic="ops.notice.v1") if e.payload["kind"] == kind]


class automine_off:
    def __init__(self, chain):
        self.chain = chain

    def __enter__(self):
        self.chain.anvil.call("evm_setAutomine", [False])

    def __exit__(self, *exc):
        self.chain.anvil.call("evm_setAutomine", [True])


def test_a_refund_reverted_by_a_drained_contract_is_reported_and_retried_after_funding(
    chain, world, user_api, admin_api, billing_admin_user
):
    tx = paid_eth(chain, world, user_api, PAYERS[2])
    payer_before = chain.w3.eth.get_balance(tx.payer_address)
    contract = world.contract.address
    funds = chain.w3.eth.get_balance(contract)
    assert funds >= tx.amount

    with automine_off(chain):
        assert refund(admin_api, tx).status_code == 200
        chain.anvil.call("anvil_setBalance", [contract, "0x0"])  # drained before the refund is mined
        chain.anvil.call("evm_mine")
    first = OperatorTransaction.objects.get(payment=tx)
    assert operator_tx_watch(row_id=first.pk) == "reverted"
    first.refresh_from_db()
    tx.refresh_from_db()
    assert first.status == OperatorTransaction.Status.REVERTED and "Reverted on chain" in first.error
    assert chain.w3.eth.get_transaction_receipt(first.mined_tx_hash)["status"] == 0
    assert tx.status == TxStatus.CONFIRMED and tx.refund_status == RefundStatus.FAILED
    (notice,) = notices("refund_failed")
    assert notice["key"] == f"refund_failed:operator_tx:{first.pk}:reverted"
    assert notice["data"]["payment_id"] == tx.pk
    assert operator_tx_watch(row_id=first.pk) == "skipped"  # settled: the sweep leaves it

    # Still drained: the retry is refused at estimation, nothing is sent, and it can be tried again.
    refused = refund(admin_api, tx, "retry while drained")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "refund_failed"
    assert chain.w3.eth.get_balance(tx.payer_address) == payer_before

    chain.anvil.call("anvil_setBalance", [contract, hex(funds)])
    response = refund(admin_api, tx, "funded again")
    assert response.status_code == 200, response.content
    assert response.json()["result"] == "refund_retried"
    retry = OperatorTransaction.objects.filter(payment=tx).order_by("-pk").first()
    assert retry.retry_of_id is not None and retry.status == OperatorTransaction.Status.PENDING
    assert retry.nonce != first.nonce  # a reverted transaction used its nonce: a new one
    # Both attempts are audited with the actor, the reason and what they retried.
    audits = LogEntry.objects.filter(object_pk=str(tx.pk), changes__operator_action__1="refund_retry")
    assert [(a.actor_id, a.additional_data["reason"], a.additional_data["retry_of_status"]) for a in audits] == [
        (billing_admin_user.pk, "funded again", "failed"),  # the refused retry before it
        (billing_admin_user.pk, "retry while drained", "reverted"),
    ]

    # A second click while the retry is in flight sends nothing.
    again = refund(admin_api, tx)
    assert again.status_code == 409 and again.json()["error"]["code"] == "refund_in_flight"

    assert operator_tx_watch(row_id=retry.pk) == "mined"
    assert chain.w3.eth.get_balance(tx.payer_address) == payer_before + int(tx.amount)
    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    retry.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED and tx.refund_status == RefundStatus.MINED
    assert tx.refund_tx_hash == retry.mined_tx_hash
    assert len(notices("refund_failed")) == 1


def test_a_refund_stuck_at_the_gas_cap_is_reported_then_replaced_by_a_retry_on_the_same_nonce(
    chain, world, user_api, admin_api
):
    tx = paid_eth(chain, world, user_api, PAYERS[3])
    payer_before = chain.w3.eth.get_balance(tx.payer_address)
    config = CryptoConfig.load()
    with automine_off(chain):
        assert refund(admin_api, tx).status_code == 200
        stuck = OperatorTransaction.objects.get(payment=tx)
        config.gas_cap_wei = stuck.max_fee_per_gas  # no room for a higher fee
        config.save()
        later = timezone.now() + timedelta(hours=1)
        assert operator_tx_watch(row_id=stuck.pk, now=later) == "stuck"
        stuck.refresh_from_db()
        tx.refresh_from_db()
        assert stuck.status == OperatorTransaction.Status.STUCK and "gas cap" in stuck.error
        assert tx.refund_status == RefundStatus.FAILED
        (notice,) = notices("refund_failed")
        assert notice["key"] == f"refund_failed:operator_tx:{stuck.pk}:stuck"

        # The cap still leaves no room: refused with the way out, the stuck one untouched.
        refused = refund(admin_api, tx, "retry under the same cap")
        assert refused.status_code == 409 and "gas_cap_wei" in refused.json()["error"]["message"]
        stuck.refresh_from_db()
        assert stuck.status == OperatorTransaction.Status.STUCK

        config.gas_cap_wei = stuck.max_fee_per_gas * 10
        config.save()
        response = refund(admin_api, tx, "cap raised")
        assert response.status_code == 200, response.content
        assert response.json()["result"] == "refund_retried"
        stuck.refresh_from_db()
        retry = OperatorTransaction.objects.get(payment=tx, status=OperatorTransaction.Status.PENDING)
        assert stuck.status == OperatorTransaction.Status.REPLACED and retry.retry_of_id == stuck.pk
        assert retry.nonce == stuck.nonce and retry.tx_hashes[:-1] == stuck.tx_hashes
        assert retry.max_fee_per_gas >= stuck.max_fee_per_gas * 110 // 100
        chain.anvil.call("evm_mine")

    assert operator_tx_watch(row_id=retry.pk) == "mined"
    retry.refresh_from_db()
    assert retry.mined_tx_hash == retry.tx_hashes[-1]
    assert chain.w3.eth.get_balance(tx.payer_address) == payer_before + int(tx.amount)
    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED and tx.refund_status == RefundStatus.MINED


def test_only_a_failed_refund_can_be_retried(chain, world, user_api, billing_admin_user):
    from billing.services.operator import OperatorActionError, transaction_refund_retry

    tx = paid_eth(chain, world, user_api, PAYERS[0])
    with pytest.raises(OperatorActionError) as err:
        transaction_refund_retry(tx=tx, actor=billing_admin_user, reason="nothing failed")
    assert err.value.code == "refund_not_failed"
    assert not OperatorTransaction.objects.filter(payment=tx).exists()
