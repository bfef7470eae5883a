"""A refund whose log a reorg removed (deeper than the confirmation policy) does not leave the payment stuck
with a refund "in flight" that is no longer anywhere:

- our own refund (an operator transaction) is pending again: the sweep sends the same nonce again and the
  payment ends refunded once;
- if the nonce went to another transaction meanwhile, the operator transaction fails and a billing admin
  retries the refund, which lands once;
- a refund sent from outside the system leaves nothing of ours in flight: a billing admin can refund.

The reorg replaces the refund's block with empty ones (the refund transaction is gone from the chain)."""

from __future__ import annotations

import pytest
from web3 import Web3

from billing.chain.artifacts import send_transaction, transact
from billing.models import OperatorTransaction, RefundStatus, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.operator_txs import operator_tx_watch
from tests.integration.lifecycle.conftest import OWNER, PAYERS
from tests.integration.lifecycle.test_operator_tx_recovery import paid_eth, sweep_later
from tests.integration.lifecycle.test_reorg_review import reorg_from

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

REFUND = "/v1/billing/admin/transactions/{}/refund"


def refund(admin_api, tx, reason: str = "customer asked"):
    return admin_api.post(REFUND.format(tx.public_id), {"reason": reason}, format="json")


def refunded_then_reorged(chain, world, tx, refund_block: int) -> None:
    """The follower applies the refund at depth, then a reorg from `refund_block` removes it."""
    depth = world.network.confirmation_depth
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED
    reorg_from(chain, refund_block)
    chain.anvil.mine(depth + 1)
    assert contract_sync(contract_id=world.contract.pk).reorgs == 1
    tx.refresh_from_db()
    assert tx.status == TxStatus.NEEDS_REVIEW
    assert tx.status_history.last().reason.startswith("refund log gone")


def our_refund(chain, admin_api, tx) -> tuple[OperatorTransaction, int]:
    response = refund(admin_api, tx)
    assert response.status_code == 200, response.content
    row = OperatorTransaction.objects.get(payment=tx)
    assert operator_tx_watch(row_id=row.pk) == "mined"
    row.refresh_from_db()
    return row, row.block_number


def applied_once(chain, world, tx, balance_before: int) -> None:
    chain.anvil.mine(world.network.confirmation_depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED and tx.refund_status == RefundStatus.MINED
    assert chain.w3.eth.get_balance(tx.payer_address) == balance_before + int(tx.amount)


def test_our_refund_removed_by_a_reorg_is_sent_again_and_lands_once(chain, world, user_api, admin_api):
    tx = paid_eth(chain, world, user_api, PAYERS[0])
    before = chain.w3.eth.get_balance(tx.payer_address)
    row, refund_block = our_refund(chain, admin_api, tx)
    assert chain.w3.eth.get_balance(tx.payer_address) == before + int(tx.amount)

    refunded_then_reorged(chain, world, tx, refund_block)
    assert chain.w3.eth.get_balance(tx.payer_address) == before  # the refund is gone from the chain
    row.refresh_from_db()
    assert row.status == OperatorTransaction.Status.PENDING and row.mined_tx_hash == "" and row.fee is None
    assert "removed by a reorg" in row.error
    assert tx.refund_status == RefundStatus.IN_FLIGHT  # ours again, not "mined"
    # In flight again: a second refund is refused while the sweep takes care of this one.
    again = refund(admin_api, tx, "asked twice")
    assert again.status_code == 409 and again.json()["error"]["code"] == "refund_in_flight"

    # Waited past stuck_tx_seconds: the same nonce is signed again (a higher fee) and mined.
    assert sweep_later() == {row.pk: "replaced"}
    assert sweep_later() == {row.pk: "mined"}
    row.refresh_from_db()
    assert row.status == OperatorTransaction.Status.MINED and row.replacements == 1
    applied_once(chain, world, tx, before)
    assert OperatorTransaction.objects.filter(payment=tx).count() == 1


def test_our_refund_whose_nonce_went_elsewhere_fails_and_is_retried_once(chain, world, user_api, admin_api):
    tx = paid_eth(chain, world, user_api, PAYERS[1])
    before = chain.w3.eth.get_balance(tx.payer_address)
    row, refund_block = our_refund(chain, admin_api, tx)
    refunded_then_reorged(chain, world, tx, refund_block)
    # The operator's key sends something else with the same nonce (the reorg gave it back).
    nonce = chain.w3.eth.get_transaction_count(OWNER.address, "pending")
    assert nonce == row.nonce
    send_transaction(chain.w3, OWNER, {"to": OWNER.address, "value": 0, "nonce": nonce})

    assert sweep_later() == {row.pk: "failed"}
    row.refresh_from_db()
    tx.refresh_from_db()
    assert row.status == OperatorTransaction.Status.FAILED and f"Nonce {row.nonce}" in row.error
    assert tx.refund_status == RefundStatus.FAILED
    retried = refund(admin_api, tx, "retry after the reorg")
    assert retried.status_code == 200, retried.content
    assert retried.json()["result"] == "refund_retried"
    retry = OperatorTransaction.objects.filter(payment=tx).order_by("-pk").first()
    assert retry.retry_of_id == row.pk and retry.nonce != row.nonce
    assert operator_tx_watch(row_id=retry.pk) == "mined"
    applied_once(chain, world, tx, before)


def test_a_refund_from_outside_removed_by_a_reorg_leaves_nothing_in_flight(chain, world, user_api, admin_api):
    tx = paid_eth(chain, world, user_api, PAYERS[2])
    before = chain.w3.eth.get_balance(tx.payer_address)
    receipt = transact(chain.w3, OWNER, chain.pass_.functions.refund(bytes.fromhex(tx.order_id[2:])))
    refunded_then_reorged(chain, world, tx, receipt["blockNumber"])
    # The gone refund's hash stays on the payment under review (what ops look at); none of ours is in flight.
    assert (tx.refund_status, tx.refund_tx_hash.lower()) == ("", Web3.to_hex(receipt["transactionHash"]).lower())
    assert not OperatorTransaction.objects.filter(payment=tx).exists()

    response = refund(admin_api, tx, "refund again, ours this time")
    assert response.status_code == 200, response.content
    row = OperatorTransaction.objects.get(payment=tx)
    assert operator_tx_watch(row_id=row.pk) == "mined"
    applied_once(chain, world, tx, before)
