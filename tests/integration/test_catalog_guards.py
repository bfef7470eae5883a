"""The four catalog changes that would rewrite payment history are refused the same way everywhere: by the
catalog service, through the admin's change forms (the service's message at the field) and through the
admin API (400 with the same message under the API's field name). Nothing changes in either case."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from billing import models as m
from tests import factories as f
from tests.integration.test_admin import form_data, login

pytestmark = pytest.mark.django_db

CHAIN_ID_MSG = "Contracts are deployed on this network; its chain id cannot change."
CONTRACT_MSG = "The contract has plans or transactions; its network cannot change."
TOKEN_MSG = "The token has transactions; its network cannot change."
PROVIDER_MSG = "Payments were made through this provider on {slug}; its networks cannot drop them."


def change_url(obj) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=(quote(obj.pk),))


@pytest.fixture
def paid():
    """A confirmed payment: its network, contract, token and provider all carry history now."""
    return f.ConfirmedTransactionFactory()


def admin_post(client, obj, **changes):
    data = form_data(client.get(change_url(obj)))
    data.update(changes)
    return client.post(change_url(obj), data)


def field_errors(response, field: str) -> str:
    assert response.status_code == 200, "the admin saved a change the service refuses"
    return " ".join(response.context["adminform"].form.errors.get(field, []))


def test_network_chain_id_is_refused_in_admin_and_api(billing_admin_user, admin_api, paid):
    network = paid.network
    response = admin_post(login(billing_admin_user), network, chain_id=str(network.chain_id + 1))
    assert CHAIN_ID_MSG in field_errors(response, "chain_id")

    api = admin_api.patch(f"/v1/billing/admin/networks/{network.slug}", {"chain_id": network.chain_id + 1})
    assert api.status_code == 400
    assert api.json()["error"]["fields"]["chain_id"] == [CHAIN_ID_MSG]
    assert m.Network.objects.get(pk=network.pk).chain_id == paid.chain_id


def test_contract_network_is_refused_in_admin_and_api(billing_admin_user, admin_api, paid):
    contract, elsewhere = paid.contract, f.NetworkFactory()
    response = admin_post(login(billing_admin_user), contract, network=str(elsewhere.pk))
    assert CONTRACT_MSG in field_errors(response, "network")

    api = admin_api.patch(f"/v1/billing/admin/contracts/{contract.slug}", {"network": elsewhere.slug}, format="json")
    assert api.status_code == 400
    assert api.json()["error"]["fields"]["network"] == [CONTRACT_MSG]
    assert m.PaymentContract.objects.get(pk=contract.pk).network_id == paid.network_id


def test_token_network_is_refused_in_admin_and_api(billing_admin_user, admin_api, paid):
    token, elsewhere = paid.token, f.NetworkFactory()
    response = admin_post(login(billing_admin_user), token, network=str(elsewhere.pk))
    assert TOKEN_MSG in field_errors(response, "network")

    api = admin_api.patch(f"/v1/billing/admin/tokens/{token.pk}", {"network": elsewhere.slug}, format="json")
    assert api.status_code == 400
    assert api.json()["error"]["fields"]["network"] == [TOKEN_MSG]
    assert m.Token.objects.get(pk=token.pk).network_id == paid.network_id


def test_provider_networks_are_refused_in_admin_and_api(billing_admin_user, admin_api):
    home, second = f.NetworkFactory(), f.NetworkFactory()
    contract = f.PaymentContractFactory(network=home)
    provider = f.PaymentProviderFactory(contract=contract, networks=[home, second])
    plan = f.PlanFactory(provider=provider)  # priced on `home`: dropping `second` strands no plan
    second_contract = f.PaymentContractFactory(network=second)
    f.ConfirmedTransactionFactory(
        plan=plan, contract=second_contract, network=second, token=f.TokenFactory(network=second)
    )
    message = PROVIDER_MSG.format(slug=second.slug)

    response = admin_post(login(billing_admin_user), provider, networks=[str(home.pk)], supported_tokens=[])
    assert message in field_errors(response, "networks")

    api = admin_api.patch(f"/v1/billing/admin/providers/{provider.slug}", {"networks": [home.slug]}, format="json")
    assert api.status_code == 400
    assert message in api.json()["error"]["fields"]["networks"]
    assert set(provider.networks.values_list("slug", flat=True)) == {home.slug, second.slug}


def test_the_same_changes_pass_without_history(billing_admin_user):
    """The guards are about history: with no payment yet, each of the four changes saves (through the service)."""
    client = login(billing_admin_user)
    network, other = f.NetworkFactory(), f.NetworkFactory()
    assert admin_post(client, network, chain_id=str(network.chain_id + 1000)).status_code == 302
    assert m.Network.objects.get(pk=network.pk).chain_id == network.chain_id + 1000

    token = f.TokenFactory(network=network)
    assert admin_post(client, token, network=str(other.pk)).status_code == 302
    assert m.Token.objects.get(pk=token.pk).network_id == other.pk

    contract = f.PaymentContractFactory(network=network)
    assert admin_post(client, contract, network=str(other.pk)).status_code == 302
    assert m.PaymentContract.objects.get(pk=contract.pk).network_id == other.pk

    provider = f.PaymentProviderFactory(contract=contract, networks=[network, other])
    response = admin_post(client, provider, networks=[str(other.pk)], default_network=str(other.pk))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    provider.refresh_from_db()
    assert [n.slug for n in provider.networks.all()] == [other.slug]
    assert provider.config == provider.build_config()  # the service rebuilt the derived config
