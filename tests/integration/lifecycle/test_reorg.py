"""Reorg acceptance (issue 4): a payment the webhook reported in block N, removed by `anvil_reorg` before
it reached the network's depth, confirms nothing however long the chain grows; the very same signed
transaction mined again later (at a new log index) confirms exactly once, whichever path sees it first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.models import (
    ChainEvent,
    InboundEvent,
    PaymentTransaction,
    SubscriptionPeriod,
    TransactionStatusChange,
    TxStatus,
)
from billing.services.chain_sync import contract_sync
from billing.services.webhooks import inbound_event_process, inbound_events_process_due
from tests.integration.lifecycle.conftest import (
    OWNER,
    PAYERS,
    create_checkout,
    follower_from_head,
    plan_changed_for,
    post_webhook,
    send_raw,
    sign_step,
    webhook_body,
)

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def paid_log(chain, tx_hash: str) -> tuple[int, int]:
    """(block number, log index) of the contract's Paid log in the transaction's receipt."""
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    paid_topic = chain.pass_.events.Paid().topic
    log = next(lg for lg in receipt["logs"] if lg["topics"][0].to_0x_hex() == paid_topic)
    return receipt["blockNumber"], log["logIndex"]


def token_transfer_raw(chain, account, to: str, amount: int) -> bytes:
    """An ERC-20 transfer with a higher tip than the payment, so anvil orders it first in the block."""
    tx = chain.token.functions.transfer(to, amount).build_transaction(
        {
            "from": account.address,
            "nonce": chain.w3.eth.get_transaction_count(account.address, "pending"),
            "gas": 100_000,
            "maxPriorityFeePerGas": 5 * 10**9,
            "maxFeePerGas": 4 * chain.w3.eth.get_block("latest")["baseFeePerGas"] + 5 * 10**9,
            "chainId": 31337,
        }
    )
    return bytes(account.sign_transaction(tx).raw_transaction)


@pytest.mark.parametrize("first", ["webhook", "follower"])
def test_payment_removed_by_reorg_confirms_nothing_then_once_when_mined_again(
    chain, world, user_api, api_client, first
):
    payer = PAYERS[2] if first == "webhook" else PAYERS[3]
    depth = world.network.confirmation_depth
    follower_from_head(world, chain)
    body = create_checkout(user_api, "eth-pro", payer)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    raw = sign_step(chain, payer, body["payment"]["steps"][0])  # kept: the same bytes go out again later

    tx_hash = send_raw(chain, raw)
    block_n, old_index = paid_log(chain, tx_hash)
    assert chain.anvil.block_number() == block_n
    hint = post_webhook(api_client, world, webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-reorg-1"))
    assert hint.status_code == 202 and hint.json() == {"status": "accepted"}  # stored, not deep enough
    stored = InboundEvent.objects.get(delivery_id="dlv-reorg-1")
    contract_sync(contract_id=world.contract.pk)  # the follower stops below the depth: N is not read yet

    # Block N replaced by one without the payment: anvil does not put it back in the pool.
    chain.anvil.call("anvil_reorg", [1, []])
    assert chain.anvil.call("eth_getTransactionReceipt", [tx_hash]) is None
    chain.anvil.mine(depth + 2)

    assert inbound_event_process(event_id=stored.pk) == "retry"
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.PENDING
    assert not TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").exists()
    assert not ChainEvent.objects.filter(tx_hash=tx_hash).exists()
    assert not plan_changed_for(tx.pk).exists()
    stored.refresh_from_db()
    assert stored.status == InboundEvent.Status.RECEIVED and "no receipt" in stored.error

    # The same signed bytes mined again, after another log in the same block: a new log index.
    chain.anvil.call("evm_setAutomine", [False])
    try:
        send_raw(chain, token_transfer_raw(chain, PAYERS[0], OWNER.address, 1), wait=False)
        assert send_raw(chain, raw, wait=False) == tx_hash
        chain.anvil.mine(1)
    finally:
        chain.anvil.call("evm_setAutomine", [True])
    block_m, new_index = paid_log(chain, tx_hash)
    assert block_m > block_n and new_index == old_index + 1
    chain.anvil.mine(depth)

    if first == "webhook":
        assert inbound_event_process(event_id=stored.pk) == "processed"
        contract_sync(contract_id=world.contract.pk)
    else:
        contract_sync(contract_id=world.contract.pk)
        assert inbound_event_process(event_id=stored.pk) == "processed"
    # The indexer reports the new position too: a new delivery, applied as a duplicate.
    again = post_webhook(api_client, world, webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-reorg-2"))
    assert again.status_code == 202 and again.json() == {"status": "accepted"}
    assert inbound_events_process_due().outcomes == {"processed": 1}

    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED
    assert (tx.tx_hash, tx.block_number, tx.log_index) == (tx_hash, block_m, new_index)
    assert tx.block_hash == chain.w3.eth.get_block(block_m)["hash"].to_0x_hex()
    confirmations = TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed")
    assert confirmations.count() == 1
    assert confirmations.get().actor.startswith("webhook:" if first == "webhook" else "chain:follower")
    assert plan_changed_for(tx.pk).count() == 1
    event = ChainEvent.objects.get(tx_hash=tx_hash)
    assert (event.block_number, event.log_index, event.removed) == (block_m, new_index, False)


def test_confirmed_payment_removed_by_a_deeper_reorg_needs_review_then_confirms_again(chain, world, user_api):
    payer = PAYERS[1]
    depth = world.network.confirmation_depth
    follower_from_head(world, chain)
    body = create_checkout(user_api, "eth-pro", payer)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    raw = sign_step(chain, payer, body["payment"]["steps"][0])
    tx_hash = send_raw(chain, raw)
    block_n, _ = paid_log(chain, tx_hash)
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.block_number == block_n

    # Deeper than the depth: block N and everything after it replaced.
    chain.anvil.call("anvil_reorg", [chain.anvil.block_number() - block_n + 1, []])
    assert chain.anvil.call("eth_getTransactionReceipt", [tx_hash]) is None
    chain.anvil.mine(1)
    result = contract_sync(contract_id=world.contract.pk)
    assert result.reorgs == 1
    tx.refresh_from_db()
    assert tx.status == TxStatus.NEEDS_REVIEW
    assert "reorg" in tx.status_history.last().reason
    assert ChainEvent.objects.get(tx_hash=tx_hash).removed

    send_raw(chain, raw)  # the wallet's transaction comes back
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    block_m, _ = paid_log(chain, tx_hash)
    assert tx.status == TxStatus.CONFIRMED and tx.block_number == block_m
    assert [h.to_status for h in tx.status_history.all()] == ["pending", "confirmed", "needs_review", "confirmed"]
    assert not ChainEvent.objects.get(tx_hash=tx_hash).removed
    # The paid time was granted once: suspended while under review, given back (not granted again) after.
    reasons = [e.payload["reason"] for e in plan_changed_for(tx.pk).order_by("pk")]
    assert reasons == ["payment_confirmed", "suspended", "restored"]
    periods = SubscriptionPeriod.objects.filter(transaction=tx, status="active").order_by("starts_at")
    assert sum((p.ends_at - p.starts_at for p in periods), timedelta(0)) == timedelta(days=30)
