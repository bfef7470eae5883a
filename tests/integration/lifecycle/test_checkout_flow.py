"""Checkout -> wallet steps on anvil -> tx report / webhook -> one confirmation -> subscription -> quota."""

from __future__ import annotations

import pytest

from billing.models import OutboxEvent, PaymentTransaction, Subscription, TransactionStatusChange, TxStatus
from billing.services.outbox import outbox_delivery_attempt
from billing.services.receipts import transaction_check_receipt
from billing.services.webhooks import inbound_event_process
from profiles.models import QuotaGrant
from tests.integration.lifecycle.conftest import PAYERS, send_steps, signed_webhook, webhook_body

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def checkout(user_api, plan: str, payer, **extra):
    response = user_api.post(
        "/v1/billing/checkout",
        {"plan": plan, "wallet": payer.address, **extra},
        format="json",
        HTTP_IDEMPOTENCY_KEY=f"k-{plan}-{payer.address}-{extra}",
    )
    assert response.status_code == 201, response.content
    return response.json()


def deliver_all():
    from billing.models import OutboxDelivery

    for delivery in OutboxDelivery.objects.filter(status="pending"):
        outbox_delivery_attempt(delivery_id=delivery.pk, force=True)


def test_erc20_checkout_paid_with_steps_confirms_via_receipt(chain, world, user_api, plain_user):
    body = checkout(user_api, "pro", PAYERS[0])
    assert body["status"] == "pending"
    assert body["amount"] == str(15 * 10**6)
    assert [s["kind"] for s in body["payment"]["steps"]] == ["approve", "pay"]

    hashes = send_steps(chain, PAYERS[0], body["payment"])
    report = user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": hashes[-1]}, format="json")
    assert report.status_code == 200, report.content
    assert report.json()["status"] == "submitted"

    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert transaction_check_receipt(transaction_id=tx.pk) == "waiting"  # not deep enough yet
    chain.anvil.mine(2)
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED
    assert tx.gas_used and tx.effective_gas_price and tx.fee == tx.gas_used * tx.effective_gas_price
    assert [h.to_status for h in tx.status_history.all()] == ["pending", "submitted", "confirmed"]

    sub = Subscription.objects.get(user=plain_user)
    assert sub.status == "active" and sub.plan.slug == "pro"
    event = OutboxEvent.objects.get(topic="plan.changed.v1")
    assert event.payload["reason"] == "payment_confirmed" and event.payload["plan"] == "pro"
    deliver_all()
    grant = QuotaGrant.objects.get(user=plain_user)
    assert grant.plan_slug == "pro" and grant.limits == {"api_calls": 10000, "seats": 5}

    # The owner sees it; the payload never changes on a second read.
    again = user_api.get(f"/v1/billing/checkout/{body['id']}")
    assert again.status_code == 200 and again.json()["status"] == "confirmed"


def test_native_payment_confirmed_by_signed_webhook_once(chain, world, user_api, api_client, plain_user):
    body = checkout(user_api, "eth-pro", PAYERS[1])
    assert [s["kind"] for s in body["payment"]["steps"]] == ["pay"]
    (tx_hash,) = send_steps(chain, PAYERS[1], body["payment"])
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    raw, signature = signed_webhook(webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="dlv-native-1"))
    url = f"/v1/billing/webhooks/contracts/{world.contract.slug}"

    first = api_client.post(url, raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=signature)
    assert first.status_code == 202 and first.json() == {"status": "accepted"}  # stored, waiting for depth
    tx.refresh_from_db()
    assert tx.status == TxStatus.PENDING

    chain.anvil.mine(2)
    event_id = tx.contract.inbound_events.get(delivery_id="dlv-native-1").pk
    assert inbound_event_process(event_id=event_id) == "processed"
    tx.refresh_from_db()
    assert tx.status == TxStatus.CONFIRMED and tx.external_id == "dlv-native-1"

    repeat = api_client.post(url, raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=signature)
    assert repeat.status_code == 200 and repeat.json() == {"status": "duplicate"}
    assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
    assert OutboxEvent.objects.filter(topic="plan.changed.v1").count() == 1


def test_bad_signature_is_refused_and_nothing_stored(chain, world, api_client):
    raw, _ = signed_webhook({"id": "x"})
    _, wrong = signed_webhook({"id": "x"}, secret="not-the-secret")
    url = f"/v1/billing/webhooks/contracts/{world.contract.slug}"
    response = api_client.post(url, raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=wrong)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not world.contract.inbound_events.exists()
    assert (
        api_client.post(
            "/v1/billing/webhooks/contracts/nope", raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=wrong
        ).status_code
        == 404
    )
