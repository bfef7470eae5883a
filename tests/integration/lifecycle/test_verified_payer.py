"""BILLING_REQUIRE_VERIFIED_PAYER (on by default, and in tests): checkout refuses a payer address that is not
one of the user's SIWE-verified wallets with 409 `payer_not_verified` and writes nothing. This closes the
"pay this link" phish: an attacker creates a checkout naming the victim's wallet, the victim pays, and the
attacker's account gets the plan. Linking the wallet by SIWE (the real nonce/verify endpoints, signed with
the wallet's key) makes the same checkout pass."""

from __future__ import annotations

import pytest
from eth_account import Account

from billing.models import IdempotencyKey, PaymentTransaction, TransactionStatusChange
from tests.conftest import link_wallet, token_client
from tests.integration.test_siwe import build_message, fresh_nonce, sign, verify

pytestmark = [pytest.mark.chain]
URL = "/v1/billing/checkout"


def nothing_written() -> bool:
    return not PaymentTransaction.objects.exists() and not TransactionStatusChange.objects.exists()


@pytest.mark.django_db
def test_unverified_payer_is_409_and_siwe_link_lets_it_through(world, user_api):
    wallet = Account.create()
    body = {"plan": "pro", "wallet": wallet.address}
    refused = user_api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert refused.status_code == 409, refused.content
    error = refused.json()["error"]
    assert error["code"] == "payer_not_verified" and "siwe" in error["message"]
    assert set(error["fields"]) == {"wallet"}
    assert nothing_written()
    assert not IdempotencyKey.objects.filter(key="k-1").exists()  # released: retry the same key after linking

    message = build_message(wallet.address, fresh_nonce(user_api))
    assert verify(user_api, message, sign(message, wallet.key.hex())).status_code == 200
    created = user_api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert created.status_code == 201, created.content
    assert "Idempotent-Replayed" not in created.headers
    assert created.json()["payer_address"] == wallet.address
    # lower case is the same wallet
    assert user_api.post(URL, {**body, "wallet": wallet.address.lower()}, format="json").status_code == 201


@pytest.mark.django_db
def test_the_pay_this_link_phish_is_refused(world, django_user_model):
    victim = django_user_model.objects.create_user(username="victim", password="pw")
    attacker = django_user_model.objects.create_user(username="attacker", password="pw")
    victims_wallet = link_wallet(victim, Account.create().address)
    phish = token_client(attacker).post(URL, {"plan": "pro", "wallet": victims_wallet.address}, format="json")
    assert phish.status_code == 409 and phish.json()["error"]["code"] == "payer_not_verified"
    assert nothing_written()
    own = token_client(victim).post(URL, {"plan": "pro", "wallet": victims_wallet.address}, format="json")
    assert own.status_code == 201


@pytest.mark.django_db
def test_the_flag_off_takes_any_address(world, user_api, settings):
    settings.BILLING_REQUIRE_VERIFIED_PAYER = False
    response = user_api.post(URL, {"plan": "pro", "wallet": Account.create().address}, format="json")
    assert response.status_code == 201, response.content
