"""The Overview (admin index) through Django's test client over the hand-computed world of the overview
analytics (tests/fixtures/overview_world.py): the KPI cards show its figures with signed deltas and links to
the lists behind them, every lazy part renders, the state lives in the URL, a bad window is a 400 with the
field's reason, and the page writes nothing (support's POST is a 403). Component tests of the KPI cards'
context (overview.console.kpi_cards) and their rendering are here too."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from overview import console
from tests.fixtures.overview_world import EXPECTED, build_overview_world

pytestmark = pytest.mark.django_db

WINDOW = "period=custom&from=2026-03-01&to=2026-03-30"  # the fixture's [Mar 1, Mar 31) as inclusive dates


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def squash(html: str) -> str:
    return re.sub(r"\s+", " ", html).strip()


def card(html: str, key: str) -> str:
    match = re.search(rf'<(a|div)[^>]*data-kpi="{key}".*?</\1>', html, re.S)
    assert match, f"no KPI card {key}"
    return squash(match.group(0))


def usd(text: str) -> str:
    return console.usd(Decimal(text))


@pytest.fixture
def world(db):
    return build_overview_world()


def test_overview_is_the_index_and_shows_the_hand_computed_kpis(billing_admin_user, world):
    html = login(billing_admin_user).get(f"/admin/?{WINDOW}").content.decode()
    assert f">{usd(EXPECTED['mrr']['current']['usd'])}<" in card(html, "mrr")  # $193.00
    assert "+$123.00 (+175.71%)" in card(html, "mrr")
    assert f">{usd(EXPECTED['arpu_usd']['current'])}<" in card(html, "arpu")  # $24.13
    assert f">{EXPECTED['active']['current']}<" in card(html, "active")
    assert f">{usd(EXPECTED['gross']['current']['usd'])}<" in card(html, "gross")  # $215.00
    assert f"+{usd(EXPECTED['gross']['delta']['usd'])}" in card(html, "gross")
    assert f">{usd(EXPECTED['net']['current']['usd'])}<" in card(html, "net")  # $184.30
    assert ">18.18%<" in card(html, "failure-rate")  # 0.1818
    failure = card(html, "failure-rate")
    assert 'class="c-delta-up" data-delta="-0.0182"' in failure and "-1.82 pp" in failure  # fewer failures: good
    assert "previous 20.00%" in failure
    # each card links to the list behind it, over the same window
    assert 'href="/admin/payments/transactions/?status=confirmed&amp;date_from=2026-03-01&amp;date_to=2026-03-30"' in (
        card(html, "gross")
    )
    assert 'href="/admin/billing/subscription/?status__exact=active"' in card(html, "mrr")
    # debt at the end of the window, and the segments of the dashboard
    assert usd(EXPECTED["debt"]["current"]["usd"]) in card(html, "debt")
    assert 'data-segment="ow-basic|USDC@ow-mainnet"' in html and 'data-segment="ow-eth|ETH@ow-mainnet"' in html
    assert "ow-test|" not in html  # the testnet is left out by default


def test_testnets_toggle_adds_the_test_network(billing_admin_user, world):
    html = login(billing_admin_user).get(f"/admin/?{WINDOW}&testnets=1").content.decode()
    assert f">{usd(EXPECTED['with_testnets']['mrr_usd'])}<" in card(html, "mrr")
    assert 'data-segment="ow-test|USDC@ow-testnet"' in html


def test_lazy_parts_render_with_the_page_state(billing_admin_user, world):
    client = login(billing_admin_user)
    page = client.get(f"/admin/?{WINDOW}&tab=net").content.decode()
    url = re.search(r'hx-get="([^"]*/admin/overview/revenue/[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "tab=net" in url
    revenue = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-revenue-total="net"' in revenue and usd(EXPECTED["net"]["current"]["usd"]) in revenue
    assert "data-console-chart=" in revenue
    assert 'aria-selected="true" data-tab="net"' in revenue
    # the period controls come along out of band, keeping tab=net when the operator picks another period
    assert 'id="overview-controls" class="c-row" hx-swap-oob="true"' in revenue
    seven = re.search(r'href="([^"]+)" data-period="7d"', revenue).group(1).replace("&amp;", "&")
    assert "period=7d" in seven and "tab=net" in seven and "from=" not in seven
    csv_url = re.search(r'href="([^"]+)" download data-action="csv"', revenue).group(1).replace("&amp;", "&")
    assert csv_url.startswith("/v1/billing/overview/revenue?") and "basis=net" in csv_url and "format=csv" in csv_url
    exported = client.get(csv_url)  # the session reaches the API: the export is the same window's net revenue
    assert exported.status_code == 200 and exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert sum(Decimal(r["usd"]) for r in rows) == Decimal(EXPECTED["net"]["current"]["usd"])

    for part, marker in (
        ("networks", 'data-network="ow-mainnet"'),
        ("payouts", "data-balances"),
        ("incidents", "data-incident="),
    ):
        body = client.get(f"/admin/overview/{part}/?{WINDOW}", HTTP_HX_REQUEST="true").content.decode()
        assert marker in body, part
        assert "data-console-error" not in body


def test_bad_window_is_a_400_with_the_reason(billing_admin_user, world):
    client = login(billing_admin_user)
    response = client.get("/admin/?period=custom&from=2026-03-30&to=2026-03-01")
    assert response.status_code == 400
    assert "Must be after from." in response.content.decode()
    part = client.get("/admin/overview/revenue/?period=fortnight", HTTP_HX_REQUEST="true")
    assert part.status_code == 400 and "period" in part["X-Console-Error"]
    assert client.get("/admin/overview/revenue/?granularity=hour").status_code == 400


def test_overview_is_read_only(support_user, billing_admin_user, world):
    client = login(support_user)
    html = client.get(f"/admin/?{WINDOW}").content.decode()
    assert 'data-testid="read-only"' in html and 'data-kpi="mrr"' in html
    for path in ("/admin/overview/", "/admin/overview/revenue/"):
        assert client.post(path).status_code == 403
    assert login(billing_admin_user).post("/admin/overview/revenue/").status_code == 405


def test_staff_without_a_console_role_gets_the_app_list(django_user_model, world):
    clerk = django_user_model.objects.create_user(username="clerk", password="x", is_staff=True)
    html = login(clerk).get(reverse("admin:index")).content.decode()
    assert "data-kpi" not in html
    assert login(clerk).get("/admin/overview/revenue/").status_code == 403


# --- KPI cards: context and rendering ------------------------------------------------------------------


def _money(current: str, previous: str, delta: str, delta_percent: str | None) -> dict:
    token = {"token": "USDC@main", "amount": "1", "display": "1.000000"}
    return {
        "current": {"usd": current, "by_token": [token]},
        "previous": {"usd": previous, "by_token": []},
        "delta": {"usd": delta, "by_token": []},
        "delta_percent": delta_percent,
    }


def _ratio(current, previous, delta, delta_percent=None) -> dict:
    return {"current": current, "previous": previous, "delta": delta, "delta_percent": delta_percent}


def _count(current: int, previous: int) -> dict:
    return {"current": current, "previous": previous, "delta": current - previous, "delta_percent": None}


def sample_dashboard() -> dict:
    return {
        "kpis": {
            "mrr": _money("1250.00", "1000.00", "250.00", "25.00"),
            "arpu_usd": _ratio("12.50", "12.50", "0.00", "0.00"),
            "active_subscriptions": _count(100, 80),
            "new_subscriptions": _count(30, 20),
            "churned_subscriptions": _count(10, 5),
            "revenue_gross": _money("2000.00", "2500.00", "-500.00", "-20.00"),
            "refunds": _money("10.00", "0.00", "10.00", None),
            "network_fees": _money("0.25", "0.00", "0.25", None),
            "revenue_net": _money("1989.75", "2500.00", "-510.25", "-20.41"),
            "failure_rate": _ratio(None, "0.1000", None),
            "checkouts": _count(0, 40),
        }
    }


def test_kpi_cards_carry_signed_deltas_links_and_hints():
    from datetime import UTC, datetime

    from overview.periods import resolve_period

    period = resolve_period(name="custom", start="2026-03-01", end="2026-03-30", now=datetime(2026, 4, 1, tzinfo=UTC))
    cards = {c["key"]: c for c in console.kpi_cards(sample_dashboard(), period)}
    assert list(cards) == ["mrr", "arpu", "active", "gross", "net", "failure-rate"]
    assert cards["mrr"]["value"] == "$1,250.00" and cards["mrr"]["delta"] == Decimal("250.00")
    assert cards["mrr"]["delta_text"] == "$250.00 (+25.00%)" and cards["mrr"]["hint"] == "1 USDC@main"
    assert cards["gross"]["delta_text"] == "-$500.00 (-20.00%)"
    assert cards["net"]["hint"] == "gross − $10.00 refunds − $0.25 network fees"
    assert cards["active"]["value"] == "100" and cards["active"]["delta"] == 20
    assert cards["arpu"]["delta"] == 0
    # no checkout in the window: no rate and no delta, shown as a dash, not 0 %
    assert cards["failure-rate"]["value"] == "—" and cards["failure-rate"]["delta"] is None
    assert cards["gross"]["href"].endswith("?status=confirmed&date_from=2026-03-01&date_to=2026-03-30")
    assert cards["failure-rate"]["href"].endswith("?status=failed&date_from=2026-03-01&date_to=2026-03-30")


@pytest.mark.parametrize(
    ("key", "css", "shown"),
    [
        ("mrr", "c-delta-up", "+$250.00 (+25.00%)"),
        ("gross", "c-delta-down", "-$500.00 (-20.00%)"),
        ("arpu", "c-delta-flat", "$0.00"),
    ],
)
def test_kpi_card_renders_the_overview_card(key, css, shown):
    from datetime import UTC, datetime

    from overview.periods import resolve_period

    period = resolve_period(name="7d", start=None, end=None, now=datetime(2026, 4, 1, tzinfo=UTC))
    c = {c["key"]: c for c in console.kpi_cards(sample_dashboard(), period)}[key]
    html = squash(render_to_string("console/components/kpi_card.html", c))
    assert html.startswith(f'<a href="{escape(c["href"])}" class="c-card c-kpi" data-kpi="{key}"')
    assert f'<span class="c-kpi-value" data-kpi-value>{c["value"]}</span>' in html
    assert f'class="{css}"' in html and shown in html
    assert f"previous {c['previous']}" in html


def test_inverse_kpi_card_colours_a_rise_as_bad_news():
    html = squash(
        render_to_string(
            "console/components/kpi_card.html",
            {
                "label": "Failure rate",
                "value": "5%",
                "delta": Decimal("0.02"),
                "delta_text": "2.00 pp",
                "inverse": True,
            },
        )
    )
    assert 'class="c-delta-down" data-delta="0.02">+2.00 pp' in html


def test_component_gallery_renders_every_section_for_billing_admin_only(billing_admin_user, support_user):
    response = login(billing_admin_user).get("/admin/gallery/")
    html = response.content.decode()
    assert response.status_code == 200
    for section in ("kpi-cards", "revenue-chart", "providers", "plan-cards", "matrix", "states"):
        assert f'data-gallery="{section}"' in html, section
    assert html.count("data-kpi=") >= 6 and "data-console-chart=" in html
    assert 'data-provider="evm-main"' in html and "Provider evm-main" in html
    assert 'data-plan="pro-b"' in html and 'class="c-changed"' in html and "data-cell-error" in html
    assert "data-console-empty" in html and "data-console-error" in html and "c-loading" in html
    assert login(support_user).get("/admin/gallery/").status_code == 403
