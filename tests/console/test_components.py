"""Component tests: the console's template fragments rendered alone with fixtures (no view, no browser),
so a change to a component shows here first. Part 2 (Overview, Tariffs, gallery) reuses these."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.http import QueryDict
from django.template.loader import render_to_string
from django.test import RequestFactory

from billing.console.views import _provider_detail_context, _tx_detail_context, _tx_row
from tests import factories as f


def render(template: str, request=None, **context) -> str:
    return render_to_string(template, context, request=request)


def squash(html: str) -> str:
    return re.sub(r"\s+", " ", html).strip()


@pytest.mark.parametrize(
    ("delta", "css", "shown"),
    [(Decimal("12.5"), "c-delta-up", "+12.5%"), (Decimal("-3"), "c-delta-down", "-3%"), (0, "c-delta-flat", "0%")],
)
def test_kpi_card_shows_value_signed_delta_and_link(delta, css, shown):
    html = squash(
        render(
            "console/components/kpi_card.html",
            label="MRR",
            value="1,250 USDC",
            delta=delta,
            delta_text=f"{delta}%",  # formatted as Python prints it; the card adds the "+" of a rise
            href="/admin/billing/paymenttransaction/?status=confirmed",
            key="mrr",
        )
    )
    assert html.startswith('<a href="/admin/billing/paymenttransaction/?status=confirmed" class="c-card c-kpi"')
    assert 'data-kpi="mrr"' in html and "1,250 USDC" in html
    assert f'class="{css}" data-delta="{delta}"' in html and shown in html


def test_kpi_card_without_delta_or_link_is_a_plain_card():
    html = squash(render("console/components/kpi_card.html", label="Failure rate", value="0.4%"))
    assert html.startswith('<div class="c-card c-kpi" data-kpi="failure-rate"')
    assert "data-delta" not in html


def test_lazy_part_has_a_loading_state_and_a_retry_trigger():
    html = render("console/components/lazy.html", url="/admin/payments/contracts/x/chain/", label="balances")
    assert 'data-console-lazy hx-get="/admin/payments/contracts/x/chain/"' in html
    assert 'hx-trigger="load, console:retry"' in html  # console.js retries through this event
    assert "data-console-loading" in html and "Loading balances…" in html


def test_empty_and_error_states():
    assert "Nothing here yet." in render("console/components/empty.html")
    error = render("console/components/error.html", message="chain unavailable", retry_url="/x/")
    assert 'role="alert"' in error and "chain unavailable" in error and 'hx-get="/x/"' in error


def test_tabs_mark_the_active_tab_and_target_the_workspace():
    tabs = [{"key": k, "title": k.title(), "icon": "", "url": f"/admin/payments/{k}/"} for k in ("providers", "crypto")]
    html = squash(render("console/components/tabs.html", tabs=tabs, active="crypto", target="workspace"))
    assert 'href="/admin/payments/crypto/" hx-get="/admin/payments/crypto/" hx-target="#workspace"' in html
    assert 'aria-selected="true" data-tab="crypto"' in html and 'aria-selected="false" data-tab="providers"' in html


@pytest.mark.django_db
def test_transaction_row_pins_key_columns_and_polls_only_while_live():
    rf = RequestFactory()
    pending = f.PaymentTransactionFactory(amount=12_500_000)
    html = squash(render("console/payments/transaction_row.html", rf.get("/"), row=_tx_row(pending), can_write=True))
    assert f'data-tx="{pending.public_id}" data-status="pending"' in html
    assert 'hx-trigger="every 5s"' in html
    assert '<td class="c-pin c-pin-0">' in html and '<td class="c-pin c-pin-1">' in html
    assert f"12.5 {pending.token.symbol}" in html
    assert 'data-action="refund"' not in html  # a pending payment cannot be refunded
    assert 'data-action="reprocess"' in html

    confirmed = f.ConfirmedTransactionFactory()
    html = squash(render("console/payments/transaction_row.html", rf.get("/"), row=_tx_row(confirmed), can_write=True))
    assert "every 5s" not in html and 'data-action="refund"' in html
    assert f'href="https://explorer.test/tx/{confirmed.tx_hash}"' in html
    readonly = squash(render("console/payments/transaction_row.html", rf.get("/"), row=_tx_row(confirmed)))
    assert "data-action=" not in readonly.replace('data-action="explorer"', "")


@pytest.mark.django_db
def test_provider_row_lists_networks_tokens_and_contract():
    network = f.NetworkFactory(slug="net-a")
    token = f.TokenFactory(network=network, symbol="USDA")
    provider = f.PaymentProviderFactory(
        slug="gw-a", contract=f.PaymentContractFactory(network=network), supported_tokens=[token]
    )
    row = {"obj": provider, "networks": ["net-a"], "tokens": ["USDA@net-a"]}
    html = squash(render("console/payments/provider_row.html", RequestFactory().get("/"), row=row))
    assert 'data-provider="gw-a"' in html and '<td data-col="networks">net-a</td>' in html
    assert '<td data-col="tokens">USDA@net-a</td>' in html and provider.contract.slug in html


@pytest.mark.django_db
def test_transaction_drawer_sections_and_role():
    tx = f.ConfirmedTransactionFactory()
    f.TransactionStatusChangeFactory(transaction=tx, from_status="pending", to_status="confirmed", actor="chain")
    context = _tx_detail_context(str(tx.public_id))
    request = RequestFactory().get("/")
    html = squash(render("console/payments/transaction_drawer.html", request, **context, can_write=False))
    for section in ("Payment", "Fee calculation", "Status history", "Chain events"):
        assert f"<h3>{section}</h3>" in html
    assert "data-console-drawer-close" in html and 'data-drawer="tx:' in html
    assert "<h3>Actions</h3>" not in html
    admin_html = render("console/payments/transaction_drawer.html", request, **context, can_write=True)
    assert "<h3>Actions</h3>" in admin_html and 'data-action="refund"' in admin_html


@pytest.mark.django_db
def test_provider_drawer_shows_the_built_config():
    provider = f.PaymentProviderFactory(slug="gw-json")
    html = render(
        "console/payments/provider_drawer.html", RequestFactory().get("/"), **_provider_detail_context(provider)
    )
    assert "Configuration built by the backend" in html
    assert "&quot;contract&quot;: &quot;" + provider.contract.slug in html
    assert 'data-action="edit-provider"' not in html  # can_write not given: read-only


# --- Tariffs components (sample plans, no database row) ----------------------------------------------------


def test_plan_card_shows_price_state_experiment_and_limits():
    from billing.console.tariffs import plan_card
    from billing_project.gallery import sample_plans

    plans = {p.slug: p for p in sample_plans()}
    html = squash(render("console/tariffs/plan_card.html", card=plan_card(plans["pro-b"])))
    assert html.startswith('<a class="c-card c-plan-card" href="/admin/tariffs/plans/pro-b/" data-plan="pro-b">')
    assert "36 USDC / month" in html and "USDC@base" in html and "price-test / b" in html
    assert '<span class="c-grow">exports</span><span class="c-num">unlimited</span>' in html
    assert "c-badge-ok" in html
    legacy = squash(render("console/tariffs/plan_card.html", card=plan_card(plans["legacy"])))
    assert "not sold" in legacy and "price-test" not in legacy


def test_matrix_table_marks_changed_cells_and_shows_cell_errors():
    from billing.console.tariffs import _matrix
    from billing_project.gallery import sample_plans

    plans = sample_plans()
    submitted = QueryDict(mutable=True)
    submitted.update({"cell:basic:api_calls": "1500", "cell:pro:seats": "5", "cell:legacy:seats": "x"})
    matrix = _matrix(plans, submitted, {"cell:legacy:seats": "A whole number ≥ 0, or empty for unlimited."})
    html = squash(render("console/tariffs/matrix_table.html", matrix=matrix, versions={}, can_write=True))
    changed = re.findall(r'<td class="c-changed[^"]*" data-cell="([^"]+)"', html)
    assert changed == ["basic:api_calls", "legacy:seats"]  # pro:seats typed as stored: not a change
    assert 'name="cell:basic:api_calls" value="1500" data-original="1000"' in html
    assert 'data-cell="legacy:seats"' in html and "A whole number ≥ 0" in html
    assert 'data-cell="pro-b:exports"> <input class="c-input c-cell" name="cell:pro-b:exports" value="∞"' in html
    read_only = squash(render("console/tariffs/matrix_table.html", matrix=_matrix(plans), versions={}, can_write=False))
    assert "c-cell" not in read_only and 'data-action="save-matrix"' not in read_only
