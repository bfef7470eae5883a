"""A plan priced in a 6-decimal token, offered through a fallback network in an 18-decimal one: the plans
endpoint and checkout agree on the converted amount, and a price that does not fit a uint256 there is
refused with 400 `amount_overflow` (nothing written) instead of an exception."""

from __future__ import annotations

import pytest

from billing.models import PaymentTransaction
from tests import factories as f

UINT256_MAX = 2**256 - 1


def plan_with_18_decimal_fallback(price: int):
    contract = f.PaymentContractFactory()
    provider = f.PaymentProviderFactory(contract=contract)
    own = f.TokenFactory(network=contract.network, symbol="dUSD", decimals=6)
    plan = f.PlanFactory(provider=provider, price_token=own, price_amount=price)
    backup_contract = f.PaymentContractFactory()
    backup = backup_contract.network
    wide = f.TokenFactory(network=backup, symbol="dUSD", decimals=18)
    plan.provider.networks.add(backup)
    plan.provider.supported_tokens.set([plan.price_token, wide])
    return plan, backup


@pytest.mark.django_db
def test_the_18_decimal_option_is_exact(api_client):
    plan, backup = plan_with_18_decimal_fallback(15_000_001)
    options = next(p for p in api_client.get("/v1/billing/plans").json() if p["slug"] == plan.slug)
    amounts = {o["network"]: o["tokens"][0]["amount"] for o in options["payment_options"]}
    assert amounts[backup.slug] == str(15_000_001 * 10**12)


@pytest.mark.django_db
def test_overflowing_conversion_is_refused_with_a_clear_error(api_client, user_api, plain_user):
    plan, backup = plan_with_18_decimal_fallback(UINT256_MAX // 10**12 + 1)
    wallet = f.WalletFactory(user=plain_user, chain_id=backup.chain_id)
    listing = api_client.get("/v1/billing/plans")
    assert listing.status_code == 200
    options = next(p for p in listing.json() if p["slug"] == plan.slug)["payment_options"]
    assert [o["network"] for o in options] == [plan.contract.network.slug]  # the one that does not fit is left out
    response = user_api.post(
        "/v1/billing/checkout",
        {"plan": plan.slug, "wallet": wallet.address, "network": backup.slug},
        format="json",
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "amount_overflow" and "uint256" in error["message"] and "network" in error["fields"]
    assert not PaymentTransaction.objects.exists()


@pytest.mark.django_db
def test_periods_times_price_over_uint256_is_refused(user_api, plain_user):
    plan = f.PlanFactory(price_amount=UINT256_MAX // 2 + 1)
    f.RpcEndpointFactory(network=plan.contract.network, healthy=True)
    wallet = f.WalletFactory(user=plain_user, chain_id=plan.contract.network.chain_id)
    response = user_api.post(
        "/v1/billing/checkout", {"plan": plan.slug, "wallet": wallet.address, "periods": 2}, format="json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "amount_overflow"
    assert response.json()["error"]["fields"] == {"periods": [response.json()["error"]["message"]]}
    assert not PaymentTransaction.objects.exists()
