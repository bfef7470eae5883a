"""The operator admin against PostgreSQL: every page renders for both roles, support cannot write, the ledger
cannot be written by anyone, and no secret (webhook secret, RPC key, API token key) reaches a page."""

from __future__ import annotations

import pytest
from django import forms
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token as ApiToken
from rest_framework.authtoken.models import TokenProxy

from billing import models as m
from notifications.models import Notification
from profiles.models import ProcessedQuotaEvent, QuotaGrant, SiweNonce, Wallet
from tests import factories as f

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("billing", "profiles", "notifications")
SECRET_CANARY = "canary-whsec-123"
PREVIOUS_CANARY = "canary-prev-secret-789"
RPC_KEY_CANARY = "KEYCANARY456"
FALLBACK_KEY_CANARY = "FALLBACKCANARY321"
RPC_ERROR_CANARY = "ERRKEYCANARY654"
CANARIES = (SECRET_CANARY, PREVIOUS_CANARY, RPC_KEY_CANARY, FALLBACK_KEY_CANARY, RPC_ERROR_CANARY)

LEDGER_MODELS = (
    m.PaymentTransaction,
    m.TransactionStatusChange,
    m.ChainEvent,
    m.ChainBlock,
    m.ChainCursor,
    m.InboundEvent,
    m.OutboxEvent,
    m.OutboxDelivery,
    m.DeliveryAttempt,
    m.IdempotencyKey,
    ProcessedQuotaEvent,
)
BIG_TABLES = (
    m.PaymentTransaction,
    m.TransactionStatusChange,
    m.InboundEvent,
    m.ChainEvent,
    m.OutboxEvent,
    m.OutboxDelivery,
    Notification,
)


def _confirmed_tx_with_history():
    tx = f.ConfirmedTransactionFactory()
    f.TransactionStatusChangeFactory(transaction=tx, from_status="", to_status="pending", actor="system:checkout")
    f.TransactionStatusChangeFactory(
        transaction=tx, from_status="pending", to_status="confirmed", actor="webhook:dlv-1", reason="paid on chain"
    )
    return tx


# One way to make a row of each model; a registered model without an entry fails the walk below.
FACTORIES = {
    m.Network: f.NetworkFactory,
    m.RpcEndpoint: f.RpcEndpointFactory,
    m.Token: f.TokenFactory,
    m.CryptoConfig: f.CryptoConfigFactory,
    m.NetworkFallback: f.NetworkFallbackFactory,
    m.PaymentContract: f.PaymentContractFactory,
    m.PaymentProvider: f.PaymentProviderFactory,
    m.Plan: f.PlanFactory,
    m.Subscription: f.SubscriptionFactory,
    m.SubscriptionPeriod: f.SubscriptionPeriodFactory,
    m.PaymentTransaction: _confirmed_tx_with_history,
    # Written by the ledger's triggers only: a confirmed payment makes one.
    m.RevenueRollup: lambda: (f.ConfirmedTransactionFactory(), m.RevenueRollup.objects.latest("pk"))[1],
    m.TransactionStatusChange: f.TransactionStatusChangeFactory,
    m.IdempotencyKey: f.IdempotencyKeyFactory,
    m.InboundEvent: f.InboundEventFactory,
    m.ChainCursor: lambda: f.ChainCursorFactory(last_error="timeout"),
    m.ChainBlock: f.ChainBlockFactory,
    m.ChainEvent: f.ChainEventFactory,
    m.OutboxEvent: f.OutboxEventFactory,
    m.OutboxDelivery: f.OutboxDeliveryFactory,
    m.DeliveryAttempt: f.DeliveryAttemptFactory,
    m.OperatorTransaction: f.OperatorTransactionFactory,
    Wallet: f.WalletFactory,
    SiweNonce: f.SiweNonceFactory,
    QuotaGrant: f.QuotaGrantFactory,
    ProcessedQuotaEvent: f.ProcessedQuotaEventFactory,
    Notification: f.NotificationFactory,
}


def project_admins():
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in PROJECT_APPS
    ]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def change_url(obj) -> str:
    return url(type(obj), "change", quote(obj.pk))


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_no_canary(response, where: str) -> None:
    html = response.content.decode()
    for canary in CANARIES:
        assert canary not in html, f"{canary} rendered on {where}"


@pytest.fixture
def secrets_planted():
    """A contract and endpoints whose secrets are canaries: any page that renders them fails the test."""
    network = f.NetworkFactory(slug="canary-net")
    endpoint = f.RpcEndpointFactory(
        network=network,
        position=0,
        url=f"https://rpc.example/{RPC_KEY_CANARY}",
        last_error=f"HTTPSConnectionPool: Max retries exceeded with url: https://rpc.example/{RPC_ERROR_CANARY}",
    )
    contract = f.PaymentContractFactory(
        slug="canary-contract",
        network=network,
        webhook_secret=SECRET_CANARY,
        previous_webhook_secret=PREVIOUS_CANARY,
        fallback_rpc=f"https://fallback.example/v1/{FALLBACK_KEY_CANARY}",
    )
    f.ChainCursorFactory(contract=contract, last_error=f"boom at https://fallback.example/v1/{FALLBACK_KEY_CANARY}")
    return {"network": network, "endpoint": endpoint, "contract": contract}


def form_data(response) -> dict:
    """The POST body the change form would send back unchanged: main form plus every inline formset."""
    data: dict = {"_save": "Save"}

    def add_form(form):
        for name, field in form.fields.items():
            value = form[name].value()
            key = form.add_prefix(name)
            if isinstance(field, forms.BooleanField) or isinstance(value, bool):
                if value:
                    data[key] = "on"
            elif isinstance(value, (list, tuple)):
                data[key] = [str(v) for v in value]
            elif value is not None:
                data[key] = str(value)

    add_form(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, field in formset.management_form.fields.items():
            data[formset.management_form.add_prefix(name)] = formset.management_form[name].value()
        for form in formset.forms:
            add_form(form)
    return data


# --- Coverage: every model, every page, both roles ------------------------------------------------------------


def test_every_project_model_is_registered():
    registered = {model for model, _ in project_admins()}
    missing = [
        model._meta.label
        for app in PROJECT_APPS
        for model in apps.get_app_config(app).get_models()
        if model not in registered
    ]
    assert missing == []


@pytest.mark.parametrize("role", ["billing_admin_user", "support_user"])
def test_every_changelist_change_and_history_page_renders(request, role, secrets_planted):
    client = login(request.getfixturevalue(role))
    assert client.get(reverse("admin:index")).status_code == 200
    rendered = 0
    for model, _ in project_admins():
        assert model in FACTORIES, f"add a factory for {model._meta.label} to FACTORIES"
        obj = FACTORIES[model]()
        for page in (url(model, "changelist"), change_url(obj), url(model, "history", quote(obj.pk))):
            response = client.get(page)
            assert response.status_code == 200, f"{role} got {response.status_code} on {page}"
            assert_no_canary(response, page)
            rendered += 1
        # Searching runs the exact-match paths too (hash, number, uuid, text).
        for term in (f.random_hash(), "12", "0b2a0f7e-0c4c-4a47-9b36-5d8a1f1f7c1e", "abc"):
            response = client.get(url(model, "changelist"), {"q": term})
            assert response.status_code == 200, f"search {term!r} on {model._meta.label}"
    assert rendered == 3 * len(project_admins())


@pytest.mark.parametrize("role", ["billing_admin_user", "support_user"])
def test_auditlog_and_api_token_pages_render_without_secrets(request, role, secrets_planted):
    user = request.getfixturevalue(role)
    client = login(user)
    from auditlog.models import LogEntry

    entry = LogEntry.objects.get_for_object(secrets_planted["contract"]).first()
    assert entry is not None
    for page in (url(LogEntry, "changelist"), change_url(entry)):
        response = client.get(page)
        assert response.status_code == 200
        assert_no_canary(response, page)
    admin_token = ApiToken.objects.create(user=f.UserFactory(username="root-ish"))
    response = client.get(url(TokenProxy, "changelist"))
    assert response.status_code == 200
    # Only someone who may change tokens sees keys; view-only support would otherwise be able to act as anyone.
    assert (admin_token.key in response.content.decode()) is (role == "billing_admin_user")
    for page in (url(TokenProxy, "change", admin_token.user_id), url(TokenProxy, "history", admin_token.user_id)):
        response = client.get(page)
        if role == "billing_admin_user":
            assert response.status_code == 200
            assert admin_token.key in response.content.decode()
        else:  # the key titles these pages
            assert response.status_code == 403


def test_big_tables_skip_the_full_count():
    for model in BIG_TABLES:
        assert admin.site._registry[model].show_full_result_count is False, model._meta.label


@pytest.mark.parametrize("model", [model for model in FACTORIES], ids=lambda model: model._meta.label)
def test_changelist_queries_do_not_grow_with_rows(billing_admin_user, model):
    if model is m.CryptoConfig:
        pytest.skip("singleton")
    client = login(billing_admin_user)
    FACTORIES[model]()
    client.get(url(model, "changelist"))  # warm caches (content types, session)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url(model, "changelist")).status_code == 200
    for _ in range(4):
        FACTORIES[model]()
    with CaptureQueriesContext(connection) as many:
        assert client.get(url(model, "changelist")).status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


# --- Support may read, never write ----------------------------------------------------------------------------


def test_support_cannot_save_catalog_rows(support_user, billing_admin_user):
    plan = f.PlanFactory(title="Original title")
    network = plan.contract.network
    admin_client, support_client = login(billing_admin_user), login(support_user)

    for obj, field in ((plan, "title"), (network, "name")):
        data = form_data(admin_client.get(change_url(obj)))
        data[field] = "Hijacked"
        response = support_client.post(change_url(obj), data)
        assert response.status_code == 403
        obj.refresh_from_db()
        assert getattr(obj, field) != "Hijacked"
        # The page itself is view-only: no save button, no write-only inputs.
        page = support_client.get(change_url(obj)).content.decode()
        assert 'name="_save"' not in page
        assert 'name="new_url"' not in page and "rpc_endpoints-0-new_url" not in page


@pytest.mark.parametrize("model", [m.Plan, m.Network, m.Token, m.PaymentContract, m.PaymentProvider, m.CryptoConfig])
def test_support_gets_403_on_add_and_delete(support_user, model):
    obj = FACTORIES[model]()
    client = login(support_user)
    assert client.get(url(model, "add")).status_code == 403
    assert client.post(url(model, "add"), {}).status_code == 403
    assert client.post(url(model, "delete", quote(obj.pk)), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


# --- The ledger is read-only for everyone ---------------------------------------------------------------------


@pytest.mark.parametrize("model", LEDGER_MODELS, ids=lambda model: model._meta.label)
def test_ledger_is_read_only_even_for_billing_admin(billing_admin_user, model):
    obj = FACTORIES[model]()
    before = model.objects.filter(pk=obj.pk).values().get()
    client = login(billing_admin_user)

    assert client.get(url(model, "add")).status_code == 403
    assert client.post(url(model, "add"), {}).status_code == 403
    page = client.get(change_url(obj))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    tampered = {field.name: "1" for field in model._meta.concrete_fields if field.name != "id"}
    assert client.post(change_url(obj), {**tampered, "_save": "Save"}).status_code == 403
    assert client.get(url(model, "delete", quote(obj.pk))).status_code == 403
    assert client.post(url(model, "delete", quote(obj.pk)), {"post": "yes"}).status_code == 403
    changelist = client.post(
        url(model, "changelist"), {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
    )
    assert changelist.status_code in (200, 302, 403)
    assert model.objects.filter(pk=obj.pk).values().get() == before


def test_transaction_page_shows_display_amounts_explorer_link_and_history(support_user):
    tx = _confirmed_tx_with_history()
    page = login(support_user).get(change_url(tx)).content.decode()
    assert f"10 {tx.token.symbol}" in page  # 10_000_000 at 6 decimals
    assert f'href="https://explorer.test/tx/{tx.tx_hash}"' in page
    assert "0.00024 ETH" in page  # fee: 120_000 gas * 2 gwei
    assert "webhook:dlv-1" in page and "paid on chain" in page
    # The history inline is read-only too.
    assert "status_history-0-to_status" not in page
    assert "status_history-TOTAL_FORMS" in page


def test_transaction_search_matches_hash_and_address_exactly(support_user):
    tx, other = f.ConfirmedTransactionFactory(), f.ConfirmedTransactionFactory()
    client = login(support_user)
    for term in (tx.tx_hash, tx.tx_hash.upper().replace("0X", "0x"), tx.payer_address.lower(), str(tx.public_id)):
        result = list(client.get(url(m.PaymentTransaction, "changelist"), {"q": term}).context["cl"].result_list)
        assert result == [tx], term
    assert other not in result


# --- Secrets --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["billing_admin_user", "support_user"])
def test_no_secret_on_contract_network_and_endpoint_pages(request, role, secrets_planted):
    client = login(request.getfixturevalue(role))
    contract, network, endpoint = (secrets_planted[k] for k in ("contract", "network", "endpoint"))
    pages = [
        change_url(contract),
        url(m.PaymentContract, "changelist"),
        url(m.PaymentContract, "history", quote(contract.pk)),
        change_url(network),
        url(m.Network, "history", quote(network.pk)),
        change_url(endpoint),
        url(m.RpcEndpoint, "changelist"),
        url(m.RpcEndpoint, "history", quote(endpoint.pk)),
        url(m.ChainCursor, "changelist"),
        change_url(contract.cursor),
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200
        assert_no_canary(response, page)
    # The masked forms are what operators see instead.
    assert "https://rpc.example/****" in client.get(url(m.RpcEndpoint, "changelist")).content.decode()
    assert "https://fallback.example/****" in client.get(change_url(contract)).content.decode()


def test_no_secret_after_an_admin_edit_in_history_and_audit(billing_admin_user, secrets_planted):
    from auditlog.models import LogEntry

    contract, network = secrets_planted["contract"], secrets_planted["network"]
    client = login(billing_admin_user)
    for obj, field in ((contract, "title"), (network, "name")):
        data = form_data(client.get(change_url(obj)))
        data[field] = "Renamed"
        response = client.post(change_url(obj), data)
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
        obj.refresh_from_db()
        assert getattr(obj, field) == "Renamed"
    contract.refresh_from_db()
    endpoint = secrets_planted["endpoint"]
    endpoint.refresh_from_db()
    # Write-only fields left blank keep the stored values.
    assert contract.webhook_secret == SECRET_CANARY
    assert contract.fallback_rpc.endswith(FALLBACK_KEY_CANARY)
    assert endpoint.url.endswith(RPC_KEY_CANARY)
    for page in (
        url(m.PaymentContract, "history", quote(contract.pk)),
        url(m.Network, "history", quote(network.pk)),
        url(LogEntry, "changelist"),
        *(change_url(entry) for entry in LogEntry.objects.all()),
    ):
        response = client.get(page)
        assert response.status_code == 200
        assert_no_canary(response, page)


def test_new_webhook_secret_rotates_and_is_never_echoed(billing_admin_user):
    contract = f.PaymentContractFactory(webhook_secret="whsec_old_0123456789abcdef")
    client = login(billing_admin_user)
    data = form_data(client.get(change_url(contract)))
    assert "new_webhook_secret" in data or data.get("new_webhook_secret") is None

    # A too-short secret is refused, and the page that says so does not echo it.
    data["new_webhook_secret"] = "short-SECRET"
    response = client.post(change_url(contract), data)
    assert response.status_code == 200
    assert "new_webhook_secret" in response.context["adminform"].form.errors
    assert "short-SECRET" not in response.content.decode()

    data["new_webhook_secret"] = "whsec_new_fedcba9876543210"
    response = client.post(change_url(contract), data)
    assert response.status_code == 302
    contract.refresh_from_db()
    assert contract.webhook_secret == "whsec_new_fedcba9876543210"
    assert contract.previous_webhook_secret == "whsec_old_0123456789abcdef"
    assert contract.secret_rotated_at is not None
    for page in (change_url(contract), url(m.PaymentContract, "history", quote(contract.pk))):
        html = client.get(page).content.decode()
        assert "whsec_new_fedcba9876543210" not in html and "whsec_old_0123456789abcdef" not in html


def test_rpc_url_is_write_only_in_the_network_inline(billing_admin_user, secrets_planted):
    network, endpoint = secrets_planted["network"], secrets_planted["endpoint"]
    client = login(billing_admin_user)
    data = form_data(client.get(change_url(network)))
    data["rpc_endpoints-0-new_url"] = "https://rpc.other/NEWKEY999"
    assert client.post(change_url(network), data).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.url == "https://rpc.other/NEWKEY999"
    assert "NEWKEY999" not in client.get(change_url(network)).content.decode()

    data["rpc_endpoints-0-new_url"] = "ftp://rpc.other/x"
    response = client.post(change_url(network), data)
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert "new_url" in errors[0]
    endpoint.refresh_from_db()
    assert endpoint.url == "https://rpc.other/NEWKEY999"


def test_new_rpc_endpoint_needs_a_url(billing_admin_user):
    network = f.NetworkFactory()
    client = login(billing_admin_user)
    response = client.post(
        url(m.RpcEndpoint, "add"), {"network": network.pk, "position": 0, "timeout_seconds": "2", "enabled": "on"}
    )
    assert response.status_code == 200
    assert "new_url" in response.context["adminform"].form.errors
    response = client.post(
        url(m.RpcEndpoint, "add"),
        {"network": network.pk, "position": 0, "new_url": "wss://rpc.example/k", "timeout_seconds": "2"},
    )
    assert response.status_code == 302
    assert network.rpc_endpoints.get().url == "wss://rpc.example/k"


# --- Catalog validation ---------------------------------------------------------------------------------------


def test_invalid_contract_shows_field_errors(billing_admin_user):
    contract = f.PaymentContractFactory()
    client = login(billing_admin_user)
    data = form_data(client.get(change_url(contract)))
    data["mint_method"] = "mintThatDoesNotExist"
    data["address"] = contract.address.lower()
    data["new_fallback_rpc"] = "rpc.example/no-scheme"
    response = client.post(change_url(contract), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "is not a function in the ABI" in str(errors["mint_method"])
    assert "checksummed" in str(errors["address"])
    assert "new_fallback_rpc" in errors
    contract.refresh_from_db()
    assert contract.mint_method == "pay"


def test_provider_save_builds_config_and_validates_links(billing_admin_user):
    network, elsewhere = f.NetworkFactory(), f.NetworkFactory()
    token, stray = f.TokenFactory(network=network, symbol="USDX"), f.TokenFactory(network=elsewhere)
    contract = f.PaymentContractFactory(network=network)
    client = login(billing_admin_user)
    body = {
        "slug": "gw-one",
        "title": "Gateway one",
        "type": "evm",
        "enabled": "on",
        "priority": "10",
        "networks": [network.pk],
        "supported_tokens": [token.pk, stray.pk],
        "default_network": elsewhere.pk,
        "contract": contract.pk,
        "_save": "Save",
    }
    response = client.post(url(m.PaymentProvider, "add"), body)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "supported_tokens" in errors and "default_network" in errors
    assert not m.PaymentProvider.objects.filter(slug="gw-one").exists()

    body.update(supported_tokens=[token.pk], default_network=network.pk, networks=[elsewhere.pk])
    response = client.post(url(m.PaymentProvider, "add"), body)
    assert "contract" in response.context["adminform"].form.errors

    body.update(networks=[network.pk])
    assert client.post(url(m.PaymentProvider, "add"), body).status_code == 302
    provider = m.PaymentProvider.objects.get(slug="gw-one")
    assert provider.config == provider.build_config()
    assert provider.config["contract"] == contract.slug
    assert provider.config["networks"][0]["tokens"] == [{"symbol": "USDX", "address": token.address, "decimals": 6}]

    # Changing the links through the admin rebuilds the config.
    data = form_data(client.get(change_url(provider)))
    data["networks"] = [str(network.pk), str(elsewhere.pk)]
    data["supported_tokens"] = [str(token.pk), str(stray.pk)]
    assert client.post(change_url(provider), data).status_code == 302
    provider.refresh_from_db()
    assert [n["slug"] for n in provider.config["networks"]] == sorted([network.slug, elsewhere.slug])
    assert provider.config == provider.build_config()


def test_plan_admin_shows_display_fields_and_runs_model_clean(billing_admin_user):
    plan = f.PlanFactory(experiment="pricing-q3", variant="b")
    client = login(billing_admin_user)
    listing = client.get(url(m.Plan, "changelist")).content.decode()
    for text in (f"10 {plan.price_token.symbol}", "Monthly", plan.provider.slug, plan.contract.slug, "pricing-q3"):
        assert text in listing

    data = form_data(client.get(change_url(plan)))
    foreign = f.TokenFactory()  # a network the provider does not serve
    response = client.post(change_url(plan), {**data, "price_token": foreign.pk})
    assert response.status_code == 200
    assert "does not support" in str(response.context["adminform"].form.errors["price_token"])
    response = client.post(change_url(plan), {**data, "experiment": "", "variant": "b"})
    assert "variant" in response.context["adminform"].form.errors

    assert client.post(change_url(plan), {**data, "price_amount": "25000000"}).status_code == 302
    plan.refresh_from_db()
    assert plan.price_amount == 25_000_000
    assert f"25 {plan.price_token.symbol}" in client.get(change_url(plan)).content.decode()


def test_crypto_config_is_a_singleton_with_fallbacks(billing_admin_user):
    config = f.CryptoConfigFactory()
    first, second = f.NetworkFactory(), f.NetworkFactory()
    client = login(billing_admin_user)
    assert client.get(url(m.CryptoConfig, "add")).status_code == 403
    data = form_data(client.get(change_url(config)))
    data.update(
        {
            "fallbacks-TOTAL_FORMS": "2",
            "fallbacks-0-position": "0",
            "fallbacks-0-network": str(second.pk),
            "fallbacks-1-position": "1",
            "fallbacks-1-network": str(first.pk),
            "max_retries": "5",
        }
    )
    response = client.post(change_url(config), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    config.refresh_from_db()
    assert config.max_retries == 5
    assert config.fallback_order() == [second, first]
    assert client.post(url(m.CryptoConfig, "delete", 1), {"post": "yes"}).status_code == 403
