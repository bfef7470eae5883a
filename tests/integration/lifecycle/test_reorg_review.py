"""Reorgs never leave a wrong confirmation behind (issue 8, section 3), on the session anvil:

- a payment confirmed by the webhook (or the receipt path) in a block the follower has not reached, then
  removed by a reorg deeper than the depth, goes to needs_review when the follower (or the re-verification
  sweep) gets there; its paid time is suspended and comes back when the payment is mined again;
- a block a lagging endpoint does not return yet is not a reorg;
- a reorged-out refund is flagged for review;
- an event the follower cannot apply is recorded for review and the cursor moves on;
- the confirmation policy (depth, or the node's safe / finalized block) decides when a payment counts."""

from __future__ import annotations

import pytest
from django.db import connection

from billing.chain.rpc import ChainClient, JsonRpcError
from billing.models import (
    ChainCursor,
    ChainEvent,
    InboundEvent,
    OutboxEvent,
    PaymentTransaction,
    Subscription,
    TxStatus,
)
from billing.services.chain_sync import contract_sync
from billing.services.receipts import transaction_check_receipt, transaction_submit
from billing.services.webhooks import inbound_event_process
from tests.integration.lifecycle.conftest import (
    OWNER,
    PAYERS,
    create_checkout,
    follower_from_head,
    post_webhook,
    send_raw,
    sign_step,
    webhook_body,
)

pytestmark = [pytest.mark.chain, pytest.mark.django_db]
# Names added by issue 8 are imported inside the tests, so this file also runs against the code before it:
# there, each test fails on the defect it describes, not on an import.


def pay(chain, user_api, payer, plan: str = "eth-pro") -> tuple[PaymentTransaction, bytes, str, int]:
    """A checkout paid on chain with bytes we keep (to send the very same transaction again after a reorg)."""
    body = create_checkout(user_api, plan, payer)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    raw = sign_step(chain, payer, body["payment"]["steps"][0])
    tx_hash = send_raw(chain, raw)
    return tx, raw, tx_hash, chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"]


def reorg_from(chain, block: int) -> None:
    """Replace `block` and every block after it with empty ones (deeper than any depth used here)."""
    chain.anvil.call("anvil_reorg", [chain.anvil.block_number() - block + 1, []])


def reasons(tx) -> list[str]:
    events = OutboxEvent.objects.filter(topic="plan.changed.v1", payload__transaction_id=str(tx.pk)).order_by("pk")
    return [e.payload["reason"] for e in events]


def notices(kind: str) -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.filter(topic="ops.notice.v1", payload__kind=kind).order_by("pk")]


def test_webhook_confirmation_reorged_out_before_the_follower_passes_it_needs_review(
    chain, world, user_api, api_client, plain_user
):
    depth = world.network.confirmation_depth
    follower_from_head(world, chain)  # the follower is here and then lags behind
    tx, raw, tx_hash, block_n = pay(chain, user_api, PAYERS[0])
    chain.anvil.mine(depth)
    response = post_webhook(api_client, world, webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-deep-1"))
    assert response.status_code in (200, 202)
    inbound_event_process(event_id=InboundEvent.objects.get(delivery_id="dlv-deep-1").pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED
    sub = Subscription.objects.get(user=plain_user, status="active")

    reorg_from(chain, block_n)  # deeper than the depth, before the follower read block N
    chain.anvil.mine(depth + 1)
    contract_sync(contract_id=world.contract.pk)

    tx.refresh_from_db()
    assert tx.status == TxStatus.NEEDS_REVIEW
    assert "gone" in tx.status_history.last().reason
    assert ChainEvent.objects.get(tx_hash=tx_hash).removed
    sub.refresh_from_db()
    assert sub.status == "expired"  # its only paid time is suspended
    from billing.models import SubscriptionPeriod

    assert SubscriptionPeriod.objects.get(transaction=tx).status == "suspended"
    assert reasons(tx) == ["payment_confirmed", "suspended"]
    assert [n["data"]["transaction_id"] for n in notices("needs_review")] == [tx.pk]
    assert len(notices("deep_reorg")) == 1

    # The wallet's transaction is mined again: confirmed once more, its unused time given back.
    send_raw(chain, raw)
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.block_number > block_n
    assert reasons(tx) == ["payment_confirmed", "suspended", "restored"]
    sub.refresh_from_db()
    assert sub.status == "active" and sub.plan.slug == "eth-pro"


def submit_and_confirm_by_receipt(world, tx, tx_hash: str) -> None:
    transaction_submit(tx=tx, tx_hash=tx_hash, actor="test")
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"


class LaggingClient:
    """An endpoint that is `behind` blocks behind the chain: it does not return the newest blocks yet (what a
    load-balanced public RPC does now and then). Everything else goes to the real client."""

    def __init__(self, real: ChainClient, behind: int):
        self.real = real
        self.head = real.block_number() - behind

    def __getattr__(self, name):
        return getattr(self.real, name)

    def block_number(self) -> int:
        return self.head

    def get_block(self, block, full_transactions: bool = False):
        if isinstance(block, int) and block > self.head:
            return None
        return self.real.get_block(block, full_transactions)


def test_receipt_confirmation_reorged_out_is_found_by_the_reverification_sweep(chain, world, user_api, plain_user):
    from billing.services.reverify import payment_reverify, payments_reverify_due_ids, payments_reverify_run

    depth = world.network.confirmation_depth
    tx, raw, tx_hash, block_n = pay(chain, user_api, PAYERS[1])
    chain.anvil.mine(depth)
    submit_and_confirm_by_receipt(world, tx, tx_hash)
    assert tx.pk in payments_reverify_due_ids()  # no follower has passed its block
    client = ChainClient.for_network(world.network, contract=world.contract)
    assert payment_reverify(transaction_id=tx.pk, client=client) == "ok"

    reorg_from(chain, block_n)
    chain.anvil.mine(depth + 1)
    # An endpoint that has not seen the new blocks yet is no evidence either way.
    lagging = LaggingClient(client, behind=chain.anvil.block_number() - block_n + 1)
    assert payment_reverify(transaction_id=tx.pk, client=lagging) == "lagging"
    assert PaymentTransaction.objects.get(pk=tx.pk).status == TxStatus.CONFIRMED

    assert payments_reverify_run() == {"reorged": 1}
    tx.refresh_from_db()
    assert tx.status == TxStatus.NEEDS_REVIEW
    assert tx.status_history.last().actor == "chain:reverify"
    assert reasons(tx) == ["payment_confirmed", "suspended"]
    assert len(notices("needs_review")) == 1

    send_raw(chain, raw)
    assert payments_reverify_run() == {"waiting": 1}  # mined again, not deep enough yet
    chain.anvil.mine(depth)
    assert payments_reverify_run() == {"restored": 1}
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.block_number > block_n
    assert reasons(tx) == ["payment_confirmed", "suspended", "restored"]
    assert Subscription.objects.get(user=plain_user, status="active").plan.slug == "eth-pro"


def test_a_block_the_endpoint_does_not_return_yet_is_not_a_reorg(chain, world, user_api):
    depth = world.network.confirmation_depth
    follower_from_head(world, chain)
    tx, _, _, _ = pay(chain, user_api, PAYERS[2])
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED
    cursor = ChainCursor.objects.get(contract=world.contract)
    chain.anvil.mine(3)

    real = ChainClient.for_network(world.network, contract=world.contract)
    lagging = LaggingClient(real, behind=chain.anvil.block_number() - cursor.last_block + 1)
    try:
        contract_sync(contract_id=world.contract.pk, client=lagging)
        raised = None
    except Exception as exc:  # checked below, after what matters most: nothing moved
        raised = exc
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED
    assert type(raised).__name__ == "ChainNotReady"  # recorded on the cursor by the task; retried next tick
    assert not ChainEvent.objects.filter(contract=world.contract, removed=True).exists()
    assert ChainCursor.objects.get(contract=world.contract).last_block == cursor.last_block
    assert contract_sync(contract_id=world.contract.pk).reorgs == 0  # the real endpoint: all well


def test_a_refund_removed_by_a_reorg_is_flagged_for_review(chain, world, user_api, plain_user):
    from billing.chain.artifacts import transact

    depth = world.network.confirmation_depth
    follower_from_head(world, chain)
    tx, _, _, _ = pay(chain, user_api, PAYERS[3])
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    receipt = transact(chain.w3, OWNER, chain.pass_.functions.refund(bytes.fromhex(tx.order_id[2:])))
    refund_block = receipt["blockNumber"]
    chain.anvil.mine(depth)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED
    assert not Subscription.objects.filter(user=plain_user, status="active").exists()

    reorg_from(chain, refund_block)
    chain.anvil.mine(depth + 1)
    assert contract_sync(contract_id=world.contract.pk).reorgs == 1
    tx.refresh_from_db()
    assert tx.status == TxStatus.NEEDS_REVIEW
    assert tx.status_history.last().reason.startswith("refund log gone")
    assert [n["data"]["transaction_id"] for n in notices("needs_review")] == [tx.pk]
    # The refund is in doubt, not undone: its time stays taken back until ops decide.
    from billing.models import SubscriptionPeriod

    assert SubscriptionPeriod.objects.get(transaction=tx).status == "removed"
    assert not Subscription.objects.filter(user=plain_user, status="active").exists()


def failed_events_metric(contract) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("billing_chain_events_failed_total", {"contract": contract.slug}) or 0.0


def test_an_event_that_cannot_be_applied_is_recorded_and_the_cursor_moves_on(chain, world, user_api, plain_user):
    depth = world.network.confirmation_depth
    follower_from_head(world, chain)
    bad, _, bad_hash, _ = pay(chain, user_api, PAYERS[0])
    good, _, good_hash, _ = pay(chain, user_api, PAYERS[1])
    chain.anvil.mine(depth)
    # The database refuses to confirm one ledger row (as a broken row or a constraint would).
    assert all(c in "0123456789abcdefx" for c in bad.order_id)  # safe to put in the SQL text
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_refuse_order() RETURNS trigger AS $$
            BEGIN
              IF NEW.order_id = '{bad.order_id}' AND NEW.status = 'confirmed' THEN
                RAISE EXCEPTION 'refused by the test trigger';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql"""
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_order BEFORE UPDATE ON billing_paymenttransaction "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_order()"
        )
    failed_before = failed_events_metric(world.contract)

    result = contract_sync(contract_id=world.contract.pk)

    assert PaymentTransaction.objects.get(pk=good.pk).status == TxStatus.CONFIRMED
    assert PaymentTransaction.objects.get(pk=bad.pk).status == TxStatus.PENDING
    assert result.failed_events == 1
    event = ChainEvent.objects.get(tx_hash=bad_hash)
    assert "refused by the test trigger" in event.apply_error
    assert ChainEvent.objects.get(tx_hash=good_hash).apply_error == ""
    cursor = ChainCursor.objects.get(contract=world.contract)
    assert cursor.last_block == chain.anvil.block_number() - depth  # moved on past the bad event
    assert [n["data"]["chain_event_id"] for n in notices("chain_event_failed")] == [event.pk]
    assert failed_events_metric(world.contract) == failed_before + 1
    assert contract_sync(contract_id=world.contract.pk).failed_events == 0  # not retried by the follower


class NoTagClient:
    """A node that does not know the `safe` / `finalized` tags (answers invalid params)."""

    def __init__(self, head: int):
        self.head = head

    def block_number(self) -> int:
        return self.head

    def get_block(self, block, full_transactions: bool = False):
        raise JsonRpcError(f"invalid block tag {block!r}", code=-32602)


def test_confirmation_policy_decides_when_a_payment_counts(chain, world, user_api, api_client):
    from billing.chain.confirmation import applicable_block

    network = world.network
    client = ChainClient.for_network(network, contract=world.contract)
    head = chain.anvil.block_number()
    assert applicable_block(network, client) == head - network.confirmation_depth
    network.confirmation_policy = "safe"
    network.save()
    safe = int(chain.anvil.call("eth_getBlockByNumber", ["safe", False])["number"], 16)
    assert safe < head - network.confirmation_depth
    assert applicable_block(network, client) == safe
    assert applicable_block(network, NoTagClient(head=100)) == 100 - network.confirmation_depth

    follower_from_head(world, chain)
    tx, _, tx_hash, block_n = pay(chain, user_api, PAYERS[2])
    chain.anvil.mine(network.confirmation_depth + 2)  # deep enough for the depth, not yet safe
    transaction_submit(tx=tx, tx_hash=tx_hash, actor="test")
    assert transaction_check_receipt(transaction_id=tx.pk) == "waiting"
    contract_sync(contract_id=world.contract.pk)
    post_webhook(api_client, world, webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-safe-1"))
    delivery = InboundEvent.objects.get(delivery_id="dlv-safe-1")
    assert inbound_event_process(event_id=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert "confirmation policy (safe" in delivery.error
    assert PaymentTransaction.objects.get(pk=tx.pk).status == TxStatus.SUBMITTED

    while int(chain.anvil.call("eth_getBlockByNumber", ["safe", False])["number"], 16) < block_n:
        chain.anvil.mine(8)
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"


def test_confirmation_policy_is_validated_where_it_is_saved(admin_api):
    from tests.factories import NetworkFactory

    network = NetworkFactory()
    url = f"/v1/billing/admin/networks/{network.slug}"
    response = admin_api.patch(url, {"confirmation_policy": "latest"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"confirmation_policy"}
    response = admin_api.patch(url, {"confirmation_policy": "finalized"}, format="json")
    assert response.status_code == 200 and response.json()["confirmation_policy"] == "finalized"
    network.refresh_from_db()
    assert network.confirmation_policy == "finalized"
