"""The Payments workspace against PostgreSQL, through Django's test client: every tab for both roles, the
read-only contract for support (no control rendered, forged POSTs 403), provider writes through the API
serializer with its field errors, the transactions filters and keyset pages, operator actions audited with
the acting user, and the crypto tab's writes and probe."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import models as m
from tests import factories as f

pytestmark = pytest.mark.django_db

TABS = ("providers", "contracts", "transactions", "crypto", "operations")
WRITE_MARKERS = (
    'data-action="new-provider"',
    'data-action="edit-provider"',
    'data-action="save"',
    'data-action="refund"',
    'data-action="reprocess"',
    'data-action="retry-refund"',
    'data-action="test-connection"',
    'data-action="save-network"',
    'data-action="save-config"',
    'data-action="replay"',
    'data-action="reprocess-inbound"',
    'data-action="withdraw"',
)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def u(name: str, *args) -> str:
    return reverse(f"admin:console-payments-{name}", args=args)


def htmx(client: Client, method: str, url: str, target: str = "workspace", **kwargs):
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": target}
    return getattr(client, method)(url, **kwargs, **headers)


@pytest.fixture
def world():
    """A provider, contract, a confirmed payment with history and a chain event, a dead letter, a failed
    inbound event."""
    tx = f.ConfirmedTransactionFactory()
    f.TransactionStatusChangeFactory(transaction=tx, from_status="", to_status="pending", actor="system:checkout")
    f.TransactionStatusChangeFactory(
        transaction=tx, from_status="pending", to_status="confirmed", actor="webhook:dlv-1", reason="paid on chain"
    )
    f.ChainEventFactory(contract=tx.contract, transaction=tx, tx_hash=tx.tx_hash, name="Paid", chain_id=tx.chain_id)
    f.ChainCursorFactory(contract=tx.contract, last_block=1234)
    dead = f.OutboxDeliveryFactory(status=m.OutboxDelivery.Status.DEAD, attempts=8, last_error="HTTP 500")
    inbound = f.InboundEventFactory(contract=tx.contract, status=m.InboundEvent.Status.FAILED, error="no receipt")
    return {"tx": tx, "provider": tx.provider, "contract": tx.contract, "dead": dead, "inbound": inbound}


# --- pages, roles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["billing_admin_user", "support_user"])
def test_every_tab_renders_as_a_page_and_as_a_fragment(request, role, world):
    client = login(request.getfixturevalue(role))
    for tab in TABS:
        page = client.get(u(tab))
        assert page.status_code == 200, tab
        html = page.content.decode()
        assert "<html" in html and 'id="workspace"' in html and f'data-tab-panel="{tab}"' in html
        assert f'data-tab="{tab}"' in html and 'aria-selected="true" data-tab="' + tab + '"' in html
        part = htmx(client, "get", u(tab))
        assert part.status_code == 200
        fragment = part.content.decode()
        # Only the workspace (and the drawer out of band), never a second page inside the page.
        assert "<html" not in fragment and f'data-tab-panel="{tab}"' in fragment
        assert 'id="console-drawer"' in fragment and 'hx-swap-oob="true"' in fragment
    # A history restore (back button after htmx's cache is gone) gets the whole page.
    restore = client.get(u("transactions"), HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in restore.content.decode()


def test_support_sees_every_page_with_no_control(support_user, billing_admin_user, world):
    tx, provider = world["tx"], world["provider"]
    pages = [
        u("providers"),
        u("providers") + f"?open={provider.slug}",
        u("contracts"),
        u("transactions"),
        u("transactions") + f"?open={tx.public_id}",
        u("crypto"),
        u("operations"),
    ]
    admin_html = "".join(login(billing_admin_user).get(p).content.decode() for p in pages)
    support_html = "".join(login(support_user).get(p).content.decode() for p in pages)
    for marker in WRITE_MARKERS:
        assert marker not in support_html, marker
    # The same pages do render the controls for billing_admin (so the check above can fail).
    for marker in ('data-action="new-provider"', 'data-action="refund"', 'data-action="test-connection"'):
        assert marker in admin_html, marker
    assert 'data-testid="read-only"' in support_html and 'data-testid="read-only"' not in admin_html
    # An edit URL typed by hand shows support the table, not a form.
    assert 'data-form="provider"' not in login(support_user).get(u("providers") + "?edit=new").content.decode()


def test_forged_posts_by_support_are_403_and_change_nothing(support_user, world):
    tx, provider = world["tx"], world["provider"]
    client = login(support_user)
    network = tx.network
    posts = [
        (u("provider-create"), {"slug": "forged", "type": "evm"}),
        (u("provider-save", provider.slug), {"slug": provider.slug, "type": "evm", "priority": "1"}),
        (u("provider-preview"), {"slug": "x"}),
        (u("transaction-refund", tx.public_id), {"reason": "forged"}),
        (u("transaction-reprocess", tx.public_id), {"reason": "forged"}),
        (u("transaction-retry-refund", tx.public_id), {"reason": "forged"}),
        (u("crypto-config"), {"max_retries": "9"}),
        (u("network-save", network.slug), {f"{network.slug}-new_urls": "http://forged.example/"}),
        (u("test-connection"), {}),
        (u("outbox-replay", world["dead"].pk), {}),
        (u("inbound-reprocess", world["inbound"].pk), {"reason": "forged"}),
        (u("contract-withdraw", tx.contract.slug), {"amount": "1"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
        assert htmx(client, "post", url, target="console-drawer", data=data).status_code == 403, url
    assert not m.PaymentProvider.objects.filter(slug="forged").exists()
    assert m.PaymentProvider.objects.get(pk=provider.pk).priority == provider.priority
    assert m.CryptoConfig.load().max_retries != 9
    assert not network.rpc_endpoints.filter(url__contains="forged").exists()
    assert m.OutboxDelivery.objects.get(pk=world["dead"].pk).status == "dead"
    tx.refresh_from_db()
    assert tx.status == "confirmed" and not tx.refund_tx_hash


def test_plain_staff_without_a_role_gets_403(django_user_model, world):
    user = django_user_model.objects.create_user("staff-only", password="x", is_staff=True)
    assert login(user).get(u("providers")).status_code == 403


# --- providers -----------------------------------------------------------------------------------------------


def _provider_body(**overrides) -> dict:
    body = {"slug": "gw-console", "title": "Console gateway", "type": "evm", "enabled": "on", "priority": "20"}
    body.update(overrides)
    return body


def test_provider_create_goes_through_the_serializer_and_reads_back(billing_admin_user):
    network = f.NetworkFactory()
    token = f.TokenFactory(network=network, symbol="USDX")
    contract = f.PaymentContractFactory(network=network)
    client = login(billing_admin_user)
    body = _provider_body(
        networks=[network.slug],
        supported_tokens=[f"USDX@{network.slug}"],
        default_network=network.slug,
        contract_slug=contract.slug,
    )
    response = htmx(client, "post", u("provider-create"), target="console-drawer", data=body)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#workspace"
    assert response["HX-Push-Url"].endswith("?open=gw-console")
    provider = m.PaymentProvider.objects.get(slug="gw-console")
    assert provider.priority == 20 and [n.slug for n in provider.networks.all()] == [network.slug]
    assert list(provider.supported_tokens.all()) == [token]
    assert provider.config == provider.build_config()
    # Audited with the acting user.
    assert LogEntry.objects.get_for_object(provider).filter(actor=billing_admin_user).exists()
    # The drawer the response opens reads the same values back.
    html = response.content.decode()
    assert f'data-field="networks">{network.slug}<' in html
    assert f'data-field="supported_tokens">USDX@{network.slug}<' in html


def test_invalid_provider_form_shows_the_backend_errors_at_the_fields(billing_admin_user):
    network, elsewhere = f.NetworkFactory(), f.NetworkFactory()
    f.TokenFactory(network=elsewhere, symbol="STRAY")
    client = login(billing_admin_user)
    body = _provider_body(
        slug="", networks=[network.slug], supported_tokens=[f"STRAY@{elsewhere.slug}"], default_network=elsewhere.slug
    )
    response = htmx(client, "post", u("provider-create"), target="console-drawer", data=body)
    assert response.status_code == 422
    form = response.context["form"]
    assert "This field may not be blank." in form.errors["slug"]
    body["slug"] = "gw-bad"
    response = htmx(client, "post", u("provider-create"), target="console-drawer", data=body)
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert "The default network must be one of the provider's networks." in errors["default_network"]
    assert f"STRAY@{elsewhere.slug}" in " ".join(errors["supported_tokens"])
    html = response.content.decode()
    assert 'data-field-errors="default_network"' in html and 'data-field-errors="supported_tokens"' in html
    assert not m.PaymentProvider.objects.filter(slug="gw-bad").exists()


def test_provider_preview_shows_payload_and_built_config_and_writes_nothing(billing_admin_user, world):
    provider = world["provider"]
    network = provider.networks.get()
    extra = f.TokenFactory(network=network, symbol="NEWT")
    before_log = LogEntry.objects.count()
    body = _provider_body(
        slug=provider.slug,
        networks=[network.slug],
        supported_tokens=[f"NEWT@{network.slug}"],
        default_network=network.slug,
        contract_slug=provider.contract.slug,
    )
    client = login(billing_admin_user)
    response = htmx(
        client, "post", u("provider-preview") + f"?slug={provider.slug}", target="provider-preview", data=body
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert '"supported_tokens": [\n    &quot;' not in html  # escaped JSON, not raw
    assert "NEWT@" in html and "data-preview-config" in html
    assert f"&quot;address&quot;: &quot;{extra.address}&quot;" in html  # the config the backend builds
    provider.refresh_from_db()
    assert not provider.supported_tokens.filter(pk=extra.pk).exists()
    assert "NEWT" not in json.dumps(provider.config)
    assert LogEntry.objects.count() == before_log
    # An invalid preview lists what the backend would refuse.
    body["default_network"] = f.NetworkFactory().slug
    html = htmx(client, "post", u("provider-preview"), target="provider-preview", data=body).content.decode()
    assert "data-preview-errors" in html and "default_network" in html


def test_provider_drawer_has_sections_and_config_json(support_user, world):
    provider = world["provider"]
    html = htmx(login(support_user), "get", u("provider", provider.slug), target="console-drawer").content.decode()
    for section in ("General", "Links", "Plans sold through it", "Configuration built by the backend"):
        assert f"<h3>{section}</h3>" in html
    assert "&quot;networks&quot;" in html and provider.contract.slug in html


# --- transactions --------------------------------------------------------------------------------------------


def _rows(response) -> list:
    return [row["obj"] for row in response.context["rows"]]


def test_transaction_filters_each_narrow_the_table(support_user):
    base = f.ConfirmedTransactionFactory(amount=5_000_000)
    other_plan = f.PlanFactory()
    pending = f.PaymentTransactionFactory(plan=other_plan, amount=20_000_000)
    old = f.ConfirmedTransactionFactory(plan=base.plan)
    m.PaymentTransaction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    client = login(support_user)
    url = u("transactions")
    assert set(_rows(client.get(url))) == {base, pending, old}
    cases = {
        "status": ({"status": "pending"}, {pending}),
        "provider": ({"provider": pending.provider.slug}, {pending}),
        "contract": ({"contract": base.contract.slug}, {base, old}),
        "network": ({"network": pending.network.slug}, {pending}),
        "token": ({"token": pending.token.symbol}, {pending}),
        "date": ({"date_from": (timezone.now() - timedelta(days=2)).date().isoformat()}, {base, pending}),
        "date_to": ({"date_to": (timezone.now() - timedelta(days=30)).date().isoformat()}, {old}),
        "amount units": ({"token": base.token.symbol, "amount_max": "5"}, {base}),
        "amount raw": ({"amount_min": "15000000"}, {pending}),
        "wallet": ({"wallet": base.payer_address.lower()}, {base}),
        "tx hash": ({"tx_hash": base.tx_hash.upper().replace("0X", "0x")}, {base}),
    }
    for name, (params, expected) in cases.items():
        assert set(_rows(client.get(url, params))) == expected, name
    bad = client.get(url, {"wallet": "not-an-address", "tx_hash": "0x12"})
    assert bad.status_code == 200 and _rows(bad) == []
    assert "wallet" in bad.context["form"].errors and "tx_hash" in bad.context["form"].errors


def test_transactions_keyset_pages_and_capped_count(support_user, monkeypatch):
    from billing.console import views

    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    monkeypatch.setattr(views, "COUNT_CAP", 5)
    plan = f.PlanFactory()
    txs = [f.PaymentTransactionFactory(plan=plan) for _ in range(7)]
    client = login(support_user)
    first = client.get(u("transactions"), {"sort": "newest"})
    assert first.context["count_text"] == "5+"
    seen = _rows(first)
    next_url = first.context["next_url"]
    while next_url:
        assert "sort=newest" in next_url  # the state stays in the URL
        page = client.get(next_url)
        seen += _rows(page)
        next_url = page.context["next_url"]
    assert seen == sorted(txs, key=lambda t: (t.created_at, t.pk), reverse=True)
    oldest = _rows(client.get(u("transactions"), {"sort": "oldest"}))
    assert oldest == sorted(txs, key=lambda t: (t.created_at, t.pk))[:3]
    assert client.get(u("transactions"), {"cursor": "!!garbage"}).status_code == 404


def test_transaction_drawer_shows_history_fee_and_chain_events(support_user, world):
    tx = world["tx"]
    html = htmx(login(support_user), "get", u("transaction", tx.public_id), target="console-drawer").content.decode()
    assert 'data-to="pending"' in html and 'data-to="confirmed"' in html and "paid on chain" in html
    assert "120000 × 2000000000 wei" in html and "0.00024 ETH" in html
    assert "<strong>Paid</strong>" in html
    assert f'href="https://explorer.test/tx/{tx.tx_hash}"' in html


def test_live_rows_poll_and_settled_rows_do_not(support_user):
    pending = f.PaymentTransactionFactory()
    confirmed = f.ConfirmedTransactionFactory()
    client = login(support_user)
    html = client.get(u("transactions")).content.decode()
    row_url = u("transaction-row", pending.public_id)
    assert f'hx-get="{row_url}" hx-trigger="every 5s"' in html
    assert u("transaction-row", confirmed.public_id) not in html
    # The polled row follows the ledger: once confirmed it stops polling.
    m.PaymentTransaction.objects.filter(pk=pending.pk).update(
        status="confirmed", tx_hash=f.random_hash(), confirmed_at=timezone.now()
    )
    row = htmx(client, "get", row_url, target=f"tr-{pending.pk}").content.decode()
    assert 'data-status="confirmed"' in row and "every 5s" not in row


def test_refund_without_operator_key_is_recorded_and_audited_with_the_actor(billing_admin_user, world, settings):
    settings.BILLING_OPERATOR_KEY = ""
    settings.BILLING_OPERATOR_KEY_FILE = ""
    tx = world["tx"]
    client = login(billing_admin_user)
    missing = htmx(client, "post", u("transaction-refund", tx.public_id), target="console-drawer", data={})
    assert missing.status_code == 400 and "reason" in missing["X-Console-Error"]
    response = htmx(
        client,
        "post",
        u("transaction-refund", tx.public_id),
        target="console-drawer",
        data={"reason": "customer asked"},
    )
    assert response.status_code == 200
    assert 'data-action-result="refund_requested"' in response.content.decode()
    entry = LogEntry.objects.get_for_object(tx).filter(actor=billing_admin_user).latest("timestamp")
    assert entry.additional_data["reason"] == "customer asked"
    # The action is refused (409, reason in a header) when the ledger does not allow it.
    pending = f.PaymentTransactionFactory()
    refused = htmx(
        client, "post", u("transaction-refund", pending.public_id), target="console-drawer", data={"reason": "x"}
    )
    assert refused.status_code == 409 and "cannot be refunded" in refused["X-Console-Error"]


def test_retry_refund_is_offered_only_for_a_failed_refund_and_runs_the_real_service(
    billing_admin_user, world, settings
):
    settings.BILLING_OPERATOR_KEY = ""  # the real service validates and audits, sends nothing
    tx = world["tx"]
    client = login(billing_admin_user)

    def menu():
        html = client.get(u("transactions")).content.decode()
        row = html[html.index(f'data-menu="{tx.public_id}"') :]
        return row[: row.index("</details>")]

    m.PaymentTransaction.objects.filter(pk=tx.pk).update(refund_tx_hash=f.random_hash(), refund_status="in_flight")
    assert 'data-action="retry-refund"' not in menu() and 'data-action="refund"' not in menu()
    refused = htmx(
        client, "post", u("transaction-retry-refund", tx.public_id), target="console-drawer", data={"reason": "x"}
    )
    assert refused.status_code == 409 and "Only a refund that failed" in refused["X-Console-Error"]

    m.PaymentTransaction.objects.filter(pk=tx.pk).update(refund_status="failed")
    assert 'data-action="retry-refund"' in menu() and 'data-action="refund"' not in menu()
    response = htmx(
        client, "post", u("transaction-retry-refund", tx.public_id), target="console-drawer", data={"reason": "stuck"}
    )
    assert response.status_code == 200 and 'data-action-result="refund_requested"' in response.content.decode()
    entry = LogEntry.objects.get_for_object(tx).get(changes__operator_action__1="refund_requested")
    assert entry.actor == billing_admin_user and entry.additional_data["reason"] == "stuck"


# --- operations ----------------------------------------------------------------------------------------------


def test_dead_letter_replay_is_audited(billing_admin_user, world):
    dead = world["dead"]
    response = htmx(login(billing_admin_user), "post", u("outbox-replay", dead.pk), target=f"d{dead.pk}")
    assert response.status_code == 200 and "Queued for delivery again." in response.content.decode()
    dead.refresh_from_db()
    assert dead.status == "pending" and dead.max_attempts > dead.attempts


def test_inbound_reprocess_runs_the_service_with_the_actor(billing_admin_user, world, monkeypatch):
    from billing.services import operator

    seen = []
    # operator imports the service by name (no lookup at call time): patch the name it calls.
    monkeypatch.setattr(
        operator, "inbound_event_process", lambda *, event_id, force: seen.append((event_id, force)) or "failed"
    )
    event = world["inbound"]
    response = htmx(
        login(billing_admin_user), "post", u("inbound-reprocess", event.pk), target="x", data={"reason": "rpc back"}
    )
    assert response.status_code == 200 and "Reprocessed: failed." in response.content.decode()
    assert seen == [(event.pk, True)]
    entry = LogEntry.objects.get_for_object(event).get()
    assert entry.actor == billing_admin_user and entry.additional_data["reason"] == "rpc back"


def test_the_withdraw_form_is_live_for_billing_admins_only(billing_admin_user, support_user, world):
    admin_html = login(billing_admin_user).get(u("operations")).content.decode()
    assert "data-withdraw-disabled" not in admin_html
    assert u("contract-withdraw", world["tx"].contract.slug) in admin_html
    assert 'data-action="withdraw"' in admin_html
    support_html = login(support_user).get(u("operations")).content.decode()
    assert 'data-action="withdraw"' not in support_html


# --- crypto --------------------------------------------------------------------------------------------------


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_crypto_tab_masks_urls_and_saves_endpoints_through_the_serializer(billing_admin_user, support_user):
    network = f.NetworkFactory(slug="net-crypto")
    kept = f.RpcEndpointFactory(network=network, position=0, url="https://rpc.example/KEEPKEY123")
    dropped = f.RpcEndpointFactory(network=network, position=1, url="https://rpc2.example/DROPKEY456")
    for user in (billing_admin_user, support_user):
        html = login(user).get(u("crypto")).content.decode()
        assert "https://rpc.example/****" in html and "KEEPKEY123" not in html and "DROPKEY456" not in html
    client = login(billing_admin_user)
    body = {
        f"{network.slug}-keep": [str(kept.pk)],
        f"{network.slug}-enabled-{kept.pk}": "on",
        f"{network.slug}-new_urls": "https://rpc3.example/NEWKEY789",
        f"{network.slug}-confirmation_depth": "6",
    }
    response = htmx(client, "post", u("network-save", network.slug), target=f"network-{network.slug}", data=body)
    assert response.status_code == 200, response.content
    assert "NEWKEY789" not in response.content.decode()
    network.refresh_from_db()
    assert network.confirmation_depth == 6
    assert [e.url for e in network.rpc_endpoints.order_by("position")] == [kept.url, "https://rpc3.example/NEWKEY789"]
    assert not m.RpcEndpoint.objects.filter(pk=dropped.pk).exists()
    body[f"{network.slug}-new_urls"] = "ftp://nope.example/SECRETFTP"
    bad = htmx(client, "post", u("network-save", network.slug), target=f"network-{network.slug}", data=body)
    assert bad.status_code == 422
    assert "http(s):// or ws(s)://" in bad.content.decode() and "SECRETFTP" not in bad.content.decode()


def test_crypto_config_errors_show_at_the_fields(billing_admin_user):
    f.CryptoConfigFactory()
    client = login(billing_admin_user)
    body = {"backoff_base_ms": "500", "backoff_max_ms": "100", "fee_bump_percent": "5", "fallback_networks": "nowhere"}
    response = htmx(client, "post", u("crypto-config"), target="crypto-config", data=body)
    assert response.status_code == 422
    assert response.context["config_form"].errors == {"fallback_networks": ["Unknown network(s): nowhere."]}
    # Past the serializer, the service's own rules answer at their fields too.
    body["fallback_networks"] = ""
    response = htmx(client, "post", u("crypto-config"), target="crypto-config", data=body)
    assert response.status_code == 422
    errors = response.context["config_form"].errors
    assert errors["fee_bump_percent"] == ["Nodes refuse a replacement below a 10% bump."]
    assert errors["backoff_max_ms"] == ["Must be at least backoff_base_ms."]
    assert 'data-field-errors="fee_bump_percent"' in response.content.decode()
    good = htmx(client, "post", u("crypto-config"), target="crypto-config", data={"max_retries": "4"})
    assert good.status_code == 200 and m.CryptoConfig.load().max_retries == 4
    changelog = login(billing_admin_user).get(u("crypto-changelog")).content.decode()
    assert "max_retries" in changelog and billing_admin_user.username in changelog


def test_test_connection_reports_a_dead_endpoint_with_its_error(billing_admin_user):
    network = f.NetworkFactory(slug="net-dead")
    f.RpcEndpointFactory(network=network, url=f"http://127.0.0.1:{_dead_port()}/KEYDEAD", timeout_seconds="1")
    response = htmx(login(billing_admin_user), "post", u("test-connection"), target="probe-results")
    html = response.content.decode()
    assert response.status_code == 200 and 'data-probe-network="net-dead"' in html
    assert 'data-probe="error"' in html and "KEYDEAD" not in html
