"""The webhook is a hint, the chain is the truth: a validly signed delivery that the chain does not back
moves nothing, and checkout falls back to another network when the preferred one has no healthy RPC."""

from __future__ import annotations

import secrets
from decimal import Decimal

import pytest

from billing.models import (
    CryptoConfig,
    InboundEvent,
    Network,
    NetworkFallback,
    PaymentContract,
    PaymentTransaction,
    RpcEndpoint,
    Subscription,
    Token,
    TxStatus,
)
from billing.services.webhooks import inbound_event_process, inbound_events_process_due
from tests.integration.lifecycle.conftest import PAYERS, send_steps, signed_webhook, webhook_body

pytestmark = [pytest.mark.chain, pytest.mark.django_db]
URL = "/v1/billing/webhooks/contracts/{}"


def _checkout(user_api, plan="eth-pro", payer=PAYERS[3], **extra):
    response = user_api.post("/v1/billing/checkout", {"plan": plan, "wallet": payer.address, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_leaked_secret_cannot_confirm_a_payment_that_is_not_on_chain(chain, world, user_api, api_client, plain_user):
    body = _checkout(user_api)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    forged = {
        "id": "forged-1",
        "type": "payment.confirmed",
        "chain_id": 31337,
        "contract_address": chain.pass_.address,
        "method": "pay",
        "tx_hash": "0x" + secrets.token_hex(32),
        "log_index": 0,
        "block_number": 1,
        "block_hash": "0x" + secrets.token_hex(32),
        "order_id": tx.order_id,
        "payer": tx.payer_address,
        "token": None,
        "amount": str(tx.amount),
    }
    raw, signature = signed_webhook(forged)
    response = api_client.post(
        URL.format(world.contract.slug), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=signature
    )
    assert response.status_code == 202  # stored, to be checked against the chain again later
    chain.anvil.mine(3)
    event = InboundEvent.objects.get(delivery_id="forged-1")
    assert inbound_event_process(event_id=event.pk) == "retry"
    tx.refresh_from_db()
    assert tx.status == TxStatus.PENDING
    assert not Subscription.objects.filter(user=plain_user).exists()


def test_signed_webhook_pointing_at_another_orders_payment_is_refused(chain, world, user_api, api_client):
    paid = _checkout(user_api)
    (tx_hash,) = send_steps(chain, PAYERS[3], paid["payment"])
    other = _checkout(user_api)  # a second checkout, never paid
    other_tx = PaymentTransaction.objects.get(public_id=other["id"])
    claim = webhook_body(chain, other_tx, tx_hash=tx_hash, delivery_id="wrong-order")
    raw, signature = signed_webhook(claim)
    chain.anvil.mine(2)
    response = api_client.post(
        URL.format(world.contract.slug), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=signature
    )
    assert response.status_code == 202 and response.json() == {"status": "accepted"}
    assert inbound_events_process_due().outcomes == {"failed": 1}
    event = InboundEvent.objects.get(delivery_id="wrong-order")
    assert event.status == InboundEvent.Status.FAILED and "no payment for this order" in event.error
    other_tx.refresh_from_db()
    assert other_tx.status == TxStatus.PENDING


def test_method_not_in_abi_is_422_and_malformed_is_400(world, api_client):
    raw, signature = signed_webhook(
        {
            "id": "m1",
            "type": "payment.confirmed",
            "chain_id": 31337,
            "method": "mintFree",
            "tx_hash": "0x" + "1" * 64,
            "order_id": "0x" + "2" * 64,
            "log_index": 0,
        }
    )
    response = api_client.post(
        URL.format(world.contract.slug), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=signature
    )
    assert response.status_code == 422 and response.json()["error"]["fields"] == {"method": "Not in the ABI."}
    raw, signature = signed_webhook({"id": "m2", "type": "payment.maybe"})
    response = api_client.post(
        URL.format(world.contract.slug), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=signature
    )
    assert response.status_code == 400
    assert {"type", "chain_id", "tx_hash", "order_id", "method"} <= set(response.json()["error"]["fields"])


def test_checkout_falls_back_to_the_next_network_when_the_preferred_has_no_healthy_rpc(
    chain, world, user_api, settings
):
    # Health is cached per process (issue 9); the UPDATEs below stand for the RPC client in another process.
    settings.BILLING_CHECKOUT_HEALTH_CACHE_SECONDS = 0
    # A second network with the same asset and its own contract row, next in the fallback order.
    backup = Network.objects.create(slug="backup", name="Backup", chain_id=31338, confirmation_depth=2)
    RpcEndpoint.objects.create(network=backup, position=0, url="http://127.0.0.1:9", healthy=True)
    dusd2 = Token.objects.create(
        network=backup, symbol="dUSD", address=chain.token.address, decimals=6, usd_estimate=Decimal("1")
    )
    PaymentContract.objects.create(
        slug="pass-backup",
        network=backup,
        address=chain.pass_.address,
        abi=chain.abi,
        mint_method="pay",
        burn_method="refund",
        withdraw_method="withdraw",
        webhook_secret="x" * 20,
    )
    world.provider.networks.add(backup)
    world.provider.supported_tokens.add(dusd2)
    config = CryptoConfig.load()
    NetworkFallback.objects.create(config=config, network=world.network, position=0)
    NetworkFallback.objects.create(config=config, network=backup, position=1)

    assert _checkout(user_api, plan="pro", payer=PAYERS[0])["network"] == world.network.slug
    RpcEndpoint.objects.filter(network=world.network).update(healthy=False)
    body = _checkout(user_api, plan="pro", payer=PAYERS[0])
    assert body["network"] == "backup" and body["chain_id"] == 31338
    assert body["payment"]["network_fallback"] == {
        "from": world.network.slug,
        "to": "backup",
        "reason": "no healthy RPC endpoint",
    }
    assert body["payment"]["chain_id"] == 31338
    RpcEndpoint.objects.filter(network=backup).update(healthy=False)
    response = user_api.post("/v1/billing/checkout", {"plan": "pro", "wallet": PAYERS[0].address}, format="json")
    assert response.status_code == 503 and response.json()["error"]["code"] == "network_unavailable"
