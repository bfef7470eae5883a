"""A `payment.failed` webhook fails an order only when the reverted transaction is a call to this
contract's pay method for that order (issue 8 §6): the worker reads the transaction from the chain and
checks its `to`, its input's selector and the order id in the decoded quote. Any other reverted transaction
(another order's pay call, a call to another contract) is recorded as ignored and the order stays as it was."""

from __future__ import annotations

import pytest

from billing.models import InboundEvent, PaymentTransaction, TxStatus
from billing.services.webhooks import inbound_event_process
from tests.integration.lifecycle.conftest import PAYERS, create_checkout, post_webhook, send_raw, sign_step

pytestmark = [pytest.mark.chain, pytest.mark.django_db]
REVERTING_GAS = 300_000


def failed_hint(chain, delivery_id: str, tx_hash: str, order: PaymentTransaction) -> dict:
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 0
    return {
        "id": delivery_id,
        "type": "payment.failed",
        "chain_id": 31337,
        "contract_address": chain.pass_.address,
        "method": "pay",
        "tx_hash": tx_hash,
        "block_number": receipt["blockNumber"],
        "block_hash": receipt["blockHash"].to_0x_hex(),
        "order_id": order.order_id,
        "payer": order.payer_address,
        "token": None,
        "amount": str(order.amount),
        "failure_reason": "WrongValue",
    }


def process(chain, world, api_client, body: dict) -> InboundEvent:
    assert post_webhook(api_client, world, body).status_code == 202
    chain.anvil.mine(world.network.confirmation_depth)
    event = world.contract.inbound_events.get(delivery_id=body["id"])
    assert inbound_event_process(event_id=event.pk) == "processed"
    event.refresh_from_db()
    return event


def test_failed_webhook_for_another_orders_reverted_pay_call_changes_nothing(chain, world, user_api, api_client):
    victim = create_checkout(user_api, "eth-pro", PAYERS[0])
    other = create_checkout(user_api, "eth-pro", PAYERS[0])
    step = other["payment"]["steps"][0]
    other_revert = send_raw(chain, sign_step(chain, PAYERS[0], step, value=int(step["value"]) - 1, gas=REVERTING_GAS))
    order = PaymentTransaction.objects.get(public_id=victim["id"])

    event = process(chain, world, api_client, failed_hint(chain, "dlv-other-order", other_revert, order))
    assert event.status == InboundEvent.Status.IGNORED and "another order" in event.error
    order.refresh_from_db()
    assert order.status == TxStatus.PENDING and order.failure_reason == ""
    assert [h.to_status for h in order.status_history.all()] == ["pending"]

    # The real thing, for contrast: this order's own reverted pay call does fail it.
    own = victim["payment"]["steps"][0]
    own_revert = send_raw(chain, sign_step(chain, PAYERS[0], own, value=int(own["value"]) - 1, gas=REVERTING_GAS))
    event = process(chain, world, api_client, failed_hint(chain, "dlv-own-order", own_revert, order))
    assert event.status == InboundEvent.Status.PROCESSED
    order.refresh_from_db()
    assert order.status == TxStatus.FAILED and order.failure_reason == "WrongValue"


def test_failed_webhook_for_a_reverted_call_to_another_contract_changes_nothing(chain, world, user_api, api_client):
    victim = create_checkout(user_api, "eth-pro", PAYERS[1])
    order = PaymentTransaction.objects.get(public_id=victim["id"])
    # A token transfer of more than the sender holds: reverted, on another contract, naming nothing.
    too_much = chain.token.functions.transfer(PAYERS[2].address, 10**30)._encode_transaction_data()
    stray = send_raw(
        chain, sign_step(chain, PAYERS[1], {"to": chain.token.address, "data": too_much, "value": "0"}, gas=100_000)
    )
    event = process(chain, world, api_client, failed_hint(chain, "dlv-stray", stray, order))
    assert event.status == InboundEvent.Status.IGNORED and "not a call to this contract" in event.error
    order.refresh_from_db()
    assert order.status == TxStatus.PENDING
