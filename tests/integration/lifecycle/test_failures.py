"""Failure paths (issue 4): a reverted payment ends `failed` with its reason and a wallet retry before the
deadline still confirms the order; a plain ERC-20 transfer to the contract ends `unmatched`; an expired
checkout ends `expired`. The HTTP endpoints around each answer without a 500."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import ChainEvent, PaymentTransaction, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.receipts import checkouts_expire, transaction_check_receipt
from billing.services.webhooks import inbound_event_process
from tests.integration.lifecycle.conftest import (
    DUSD,
    PAYERS,
    create_checkout,
    follower_from_head,
    plan_changed_for,
    post_webhook,
    send_raw,
    sign_step,
)

pytestmark = [pytest.mark.chain, pytest.mark.django_db]
REVERTING_GAS = 300_000  # explicit: no estimate, so the failing call is mined and reverts on chain


def report(user_api, checkout_id: str, tx_hash: str):
    response = user_api.post(f"/v1/billing/checkout/{checkout_id}/tx", {"tx_hash": tx_hash}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_reverted_payment_fails_with_its_reason_and_a_retry_confirms_the_order(chain, world, user_api):
    payer = PAYERS[0]
    body = create_checkout(user_api, "eth-pro", payer)
    step = body["payment"]["steps"][0]
    tx = PaymentTransaction.objects.get(public_id=body["id"])

    bad_hash = send_raw(chain, sign_step(chain, payer, step, value=int(step["value"]) - 1, gas=REVERTING_GAS))
    assert chain.w3.eth.get_transaction_receipt(bad_hash)["status"] == 0
    assert report(user_api, body["id"], bad_hash)["status"] == "submitted"
    assert transaction_check_receipt(transaction_id=tx.pk) == "failed"
    tx.refresh_from_db()
    assert tx.status == TxStatus.FAILED and tx.failure_reason == "WrongValue"  # the contract's custom error
    seen = user_api.get(f"/v1/billing/checkout/{body['id']}")
    assert seen.status_code == 200
    assert seen.json()["status"] == "failed" and seen.json()["failure_reason"] == "WrongValue"
    assert transaction_check_receipt(transaction_id=tx.pk) == "duplicate"  # the sweep sees it again

    # The wallet retries with the right value before the deadline: same order, confirmed.
    good_hash = send_raw(chain, sign_step(chain, payer, step))
    assert report(user_api, body["id"], good_hash)["status"] == "submitted"
    chain.anvil.mine(world.network.confirmation_depth)
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.tx_hash == good_hash and tx.failure_reason == ""
    history = list(tx.status_history.all())
    assert [h.to_status for h in history] == ["pending", "submitted", "failed", "submitted", "confirmed"]
    assert history[2].reason == "WrongValue" and history[2].details["tx_hash"] == bad_hash
    assert plan_changed_for(tx.pk).count() == 1
    for path in (f"/v1/billing/checkout/{body['id']}", "/v1/billing/me/history", "/v1/billing/me/settings"):
        assert user_api.get(path).status_code == 200, path


def test_erc20_payment_without_approve_fails_and_the_webhook_says_so_too(chain, world, user_api, api_client):
    payer = PAYERS[1]
    body = create_checkout(user_api, "pro", payer)
    approve, pay = body["payment"]["steps"]
    assert approve["kind"] == "approve"
    allowance = chain.token.functions.allowance(payer.address, chain.pass_.address).call()
    if allowance:  # an earlier test's approve may remain: take it back
        send_raw(chain, sign_step(chain, payer, {**approve, "data": _approve_zero(chain)}))
    bad_hash = send_raw(chain, sign_step(chain, payer, pay, gas=REVERTING_GAS))
    assert chain.w3.eth.get_transaction_receipt(bad_hash)["status"] == 0
    tx = PaymentTransaction.objects.get(public_id=body["id"])

    # The indexer reports the failed call; the chain confirms it reverted.
    receipt = chain.w3.eth.get_transaction_receipt(bad_hash)
    hint = {  # a reverted call has no log: no log_index
        "id": "dlv-failed-1",
        "type": "payment.failed",
        "chain_id": 31337,
        "contract_address": chain.pass_.address,
        "method": "pay",
        "tx_hash": bad_hash,
        "block_number": receipt["blockNumber"],
        "block_hash": receipt["blockHash"].to_0x_hex(),
        "order_id": tx.order_id,
        "payer": payer.address,
        "token": chain.token.address,
        "amount": str(tx.amount),
    }
    response = post_webhook(api_client, world, hint)
    assert response.status_code == 202 and response.json() == {"status": "accepted"}  # not deep enough yet
    chain.anvil.mine(world.network.confirmation_depth)
    event = world.contract.inbound_events.get(delivery_id="dlv-failed-1")
    assert inbound_event_process(event_id=event.pk) == "processed"
    tx.refresh_from_db()
    assert tx.status == TxStatus.FAILED
    assert tx.failure_reason == "ERC20InsufficientAllowance"  # the token's error, bubbled up by the contract
    assert user_api.get(f"/v1/billing/checkout/{body['id']}").json()["status"] == "failed"


def _approve_zero(chain) -> str:
    return chain.token.functions.approve(chain.pass_.address, 0)._encode_transaction_data()


def test_plain_erc20_transfer_to_the_contract_is_unmatched(chain, world, admin_api):
    follower_from_head(world, chain)
    payer = PAYERS[2]
    transfer = chain.token.functions.transfer(chain.pass_.address, 7 * DUSD)._encode_transaction_data()
    tx_hash = send_raw(
        chain, sign_step(chain, payer, {"to": chain.token.address, "data": transfer, "value": "0"}, gas=100_000)
    )
    chain.anvil.mine(world.network.confirmation_depth)
    contract_sync(contract_id=world.contract.pk)
    contract_sync(contract_id=world.contract.pk)  # again: nothing doubles

    tx = PaymentTransaction.objects.get(tx_hash=tx_hash)
    assert tx.status == TxStatus.UNMATCHED and tx.user_id is None and tx.order_id is None
    assert (tx.amount, tx.token, tx.payer_address) == (7 * DUSD, world.dusd, payer.address)
    assert "without a checkout" in tx.failure_reason
    assert tx.gas_used and tx.fee == tx.gas_used * tx.effective_gas_price
    assert ChainEvent.objects.get(tx_hash=tx_hash).name == "Transfer"
    listing = admin_api.get("/v1/billing/admin/transactions", {"status": "unmatched"})
    assert listing.status_code == 200, listing.content
    assert tx_hash in listing.content.decode()
    assert admin_api.get(f"/v1/billing/admin/transactions/{tx.public_id}").status_code == 200


def test_checkout_past_its_deadline_expires(chain, world, user_api):
    body = create_checkout(user_api, "pro", PAYERS[3])
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert checkouts_expire() == 0  # not yet
    assert checkouts_expire(now=tx.expires_at + timedelta(minutes=5)) == 1
    tx.refresh_from_db()
    assert tx.status == TxStatus.EXPIRED
    assert tx.status_history.last().actor == "system:expiry"
    seen = user_api.get(f"/v1/billing/checkout/{body['id']}")
    assert seen.status_code == 200 and seen.json()["status"] == "expired"
    late = user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": "0x" + "ab" * 32}, format="json")
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_state"
    malformed = user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": "0x12"}, format="json")
    assert malformed.status_code == 400 and "tx_hash" in malformed.json()["error"]["fields"]
    assert checkouts_expire(now=timezone.now() + timedelta(days=1)) == 0  # expired once
