"""Reorgs shallower than the confirmation policy, the combinations tests/integration/lifecycle/test_reorg.py
and test_reorg_review.py leave open (issue 14):

- after a payment is confirmed by each path (webhook, receipt, follower), a reorg shallower than the depth
  (only blocks newer than the payment's) changes nothing: still confirmed in the same block, one
  confirmation, one plan.changed.v1, no review, no notice, whatever the follower and the re-verification
  sweep read afterwards;
- a payment reported by the receipt path and removed by a shallow reorg before it reached the depth is never
  confirmed; the same signed transaction mined again confirms once.

(Deeper reorgs on each path: test_reorg.py (follower), test_reorg_review.py (webhook, receipt); a shallow
reorg before confirmation with the webhook or the follower first: test_reorg.py.)"""

from __future__ import annotations

import pytest

from billing.models import ChainEvent, InboundEvent, PaymentTransaction, TransactionStatusChange, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.receipts import transaction_check_receipt, transaction_submit
from billing.services.reverify import payments_reverify_run
from billing.services.webhooks import inbound_event_process
from tests.integration.lifecycle.conftest import PAYERS, follower_from_head, post_webhook, send_raw, webhook_body
from tests.integration.lifecycle.test_reorg_review import notices, pay, reasons

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def confirm_by(path: str, chain, world, api_client, tx, tx_hash: str) -> None:
    if path == "webhook":
        body = webhook_body(chain, tx, tx_hash=tx_hash, delivery_id=f"dlv-shallow-{tx.pk}")
        assert post_webhook(api_client, world, body).status_code in (200, 202)
        assert inbound_event_process(event_id=InboundEvent.objects.get(delivery_id=f"dlv-shallow-{tx.pk}").pk) == (
            "processed"
        )
    elif path == "receipt":
        transaction_submit(tx=tx, tx_hash=tx_hash, actor="test")
        assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"
    else:
        contract_sync(contract_id=world.contract.pk)


@pytest.mark.parametrize("path", ["webhook", "receipt", "follower"])
def test_a_shallow_reorg_after_confirmation_changes_nothing(chain, world, user_api, api_client, path):
    depth = world.network.confirmation_depth
    assert depth >= 2
    follower_from_head(world, chain)
    tx, _, tx_hash, block_n = pay(chain, user_api, PAYERS[{"webhook": 0, "receipt": 1, "follower": 2}[path]])
    chain.anvil.mine(depth)
    if path != "follower":
        # The other paths confirm first, while the follower has not read the block yet.
        assert PaymentTransaction.objects.get(pk=tx.pk).status == TxStatus.PENDING
    confirm_by(path, chain, world, api_client, tx, tx_hash)
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.block_number == block_n
    block_hash = tx.block_hash

    # Shallower than the depth: the newest depth-1 blocks replaced, the payment's block kept.
    head = chain.anvil.block_number()
    old_head_hash = chain.w3.eth.get_block(head)["hash"].to_0x_hex()
    # The replacement blocks carry a transaction the old ones did not (a 0-value self-transfer of anvil
    # account 9): empty blocks re-mined could hash the same and the "reorg" would change nothing (seen once).
    filler = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
    chain.anvil.call("anvil_reorg", [depth - 1, [[{"from": filler, "to": filler, "value": "0x0"}, 0]]])
    assert chain.w3.eth.get_block(head)["hash"].to_0x_hex() != old_head_hash  # the reorg really happened
    assert chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"] == block_n
    chain.anvil.mine(depth + 1)
    contract_sync(contract_id=world.contract.pk)
    payments_reverify_run()
    contract_sync(contract_id=world.contract.pk)

    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and (tx.block_number, tx.block_hash) == (block_n, block_hash)
    before = ["pending", "submitted"] if path == "receipt" else ["pending"]
    assert [h.to_status for h in tx.status_history.all()] == [*before, "confirmed"]
    assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
    assert reasons(tx) == ["payment_confirmed"]
    assert notices("needs_review") == [] and notices("deep_reorg") == []
    event = ChainEvent.objects.get(tx_hash=tx_hash)  # the follower read it, whichever path confirmed
    assert (event.block_number, event.removed) == (block_n, False)


def test_a_receipt_reported_payment_removed_by_a_shallow_reorg_confirms_once_when_mined_again(chain, world, user_api):
    depth = world.network.confirmation_depth
    follower_from_head(world, chain)
    tx, raw, tx_hash, block_n = pay(chain, user_api, PAYERS[3])
    transaction_submit(tx=tx, tx_hash=tx_hash, actor="test")
    assert transaction_check_receipt(transaction_id=tx.pk) == "waiting"  # mined, not deep enough

    chain.anvil.call("anvil_reorg", [1, []])  # the payment's block (the head) replaced: shallower than depth
    assert chain.anvil.call("eth_getTransactionReceipt", [tx_hash]) is None
    chain.anvil.mine(depth + 2)
    assert transaction_check_receipt(transaction_id=tx.pk) == "waiting"
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == "submitted"  # still only reported
    assert not TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").exists()
    assert reasons(tx) == []

    assert send_raw(chain, raw) == tx_hash  # the wallet's very same transaction, mined again
    block_m = chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]
    assert block_m > block_n
    assert transaction_check_receipt(transaction_id=tx.pk) == "waiting"
    chain.anvil.mine(depth)
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.block_number == block_m
    assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
    assert reasons(tx) == ["payment_confirmed"]
