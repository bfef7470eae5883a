"""Catalog deletes go through billing.services.catalog.catalog_delete, from the admin API and the admin:
a token a provider listed disappears from that provider's config in the same request, and a row other
rows refer to is refused (409 in the API) with nothing deleted."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from billing import models as m
from tests import factories as f
from tests.integration.test_admin import login

pytestmark = pytest.mark.django_db


def provider_with_two_tokens():
    network = f.NetworkFactory()
    keep = f.TokenFactory(network=network, symbol="USDC")
    drop = f.TokenFactory(network=network, symbol="DAI")
    contract = f.PaymentContractFactory(network=network)
    provider = f.PaymentProviderFactory(contract=contract, supported_tokens=[keep, drop])
    symbols = [t["symbol"] for t in provider.config["networks"][0]["tokens"]]
    assert symbols == ["DAI", "USDC"]
    return provider, keep, drop


def config_symbols(provider) -> list[str]:
    provider.refresh_from_db()
    return [t["symbol"] for net in provider.config["networks"] for t in net["tokens"]]


def test_api_delete_of_a_listed_token_rebuilds_the_provider_config(admin_api):
    provider, _, drop = provider_with_two_tokens()
    response = admin_api.delete(f"/v1/billing/admin/tokens/{drop.pk}")
    assert response.status_code == 204, response.content
    assert not m.Token.objects.filter(pk=drop.pk).exists()
    assert config_symbols(provider) == ["USDC"]


def test_admin_delete_of_a_listed_token_rebuilds_the_provider_config(billing_admin_user):
    provider, _, drop = provider_with_two_tokens()
    url = reverse("admin:billing_token_delete", args=(quote(drop.pk),))
    response = login(billing_admin_user).post(url, {"post": "yes"})
    assert response.status_code == 302, response.content[:500]
    assert not m.Token.objects.filter(pk=drop.pk).exists()
    assert config_symbols(provider) == ["USDC"]


def test_api_delete_of_a_referenced_contract_is_409_and_deletes_nothing(admin_api):
    provider, _, _ = provider_with_two_tokens()
    response = admin_api.delete(f"/v1/billing/admin/contracts/{provider.contract.slug}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "in_use"
    assert m.PaymentContract.objects.filter(pk=provider.contract_id).exists()
    assert config_symbols(provider) == ["DAI", "USDC"]
