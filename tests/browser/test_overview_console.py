"""Acceptance of the Overview in a real browser (Debian's chromium, headless): an operator opens it over the
overview analytics' hand-computed world and reads its figures on the KPI cards, switches the revenue chart
from Gross to Net (the URL keeps it), downloads the CSV of the same window, and follows a KPI card to the
filtered list; then the 90-day demo history (seed_demo --history 90) shows every part filled, no empty or
error state."""

from __future__ import annotations

import csv
import re
from decimal import Decimal

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from overview.console import usd
from tests.fixtures.overview_world import EXPECTED, build_overview_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WINDOW = "period=custom&from=2026-03-01&to=2026-03-30"
LAZY_PARTS = ("overview-revenue", "overview-networks", "overview-payouts", "overview-incidents")


def kpi(page, key: str):
    return page.locator(f'[data-kpi="{key}"] [data-kpi-value]').first


def parts_loaded(page) -> None:
    for part in LAZY_PARTS:
        expect(page.locator(f"#{part} [data-console-loading]")).to_have_count(0)


def test_operator_reads_the_fixture_kpis_switches_net_downloads_csv_and_follows_a_card(
    live_server, as_user, billing_admin_user, shot, tmp_path
):
    build_overview_world()
    page = as_user(billing_admin_user)
    page.goto(f"{live_server.url}/admin/?{WINDOW}")

    expect(kpi(page, "mrr")).to_have_text(usd(EXPECTED["mrr"]["current"]["usd"]))
    expect(kpi(page, "arpu")).to_have_text(usd(EXPECTED["arpu_usd"]["current"]))
    expect(kpi(page, "active")).to_have_text(str(EXPECTED["active"]["current"]))
    expect(kpi(page, "gross")).to_have_text(usd(EXPECTED["gross"]["current"]["usd"]))
    expect(kpi(page, "net")).to_have_text(usd(EXPECTED["net"]["current"]["usd"]))
    rate = Decimal(EXPECTED["failure_rate"]["current"]) * 100
    expect(kpi(page, "failure-rate")).to_have_text(f"{rate:.2f}%")
    expect(page.locator('[data-kpi="mrr"] [data-delta]')).to_have_text(re.compile(r"^\+\$123\.00"))

    revenue = page.locator("#overview-revenue")
    expect(revenue.locator('[data-revenue-total="gross"] [data-kpi-value]')).to_have_text(
        usd(EXPECTED["gross"]["current"]["usd"])
    )
    revenue.locator('[data-tab="net"]').click()
    expect(revenue.locator('[data-revenue-total="net"] [data-kpi-value]')).to_have_text(
        usd(EXPECTED["net"]["current"]["usd"])
    )
    expect(page).to_have_url(re.compile(r"tab=net"))
    expect(page.locator('[data-period="7d"]')).to_have_attribute("href", re.compile(r"period=7d.*tab=net"))
    assert page.evaluate("() => !!Chart.getChart(document.querySelector('#overview-revenue canvas'))")
    parts_loaded(page)
    shot(page, "overview-fixture")

    # A switch inside a lazy part that fails shows the error state; Retry asks for what failed (weekly Net).
    weekly = "**/admin/overview/revenue/?*granularity=week*"
    page.route(weekly, lambda route: route.fulfill(status=500, body="boom"))
    revenue.locator('[data-granularity="week"]').click()
    expect(revenue.locator("[data-console-error]")).to_contain_text("500")
    page.unroute(weekly)
    revenue.locator("[data-console-retry]").click()
    expect(revenue.locator('[data-revenue][data-granularity="week"][data-basis="net"]')).to_be_visible()

    with page.expect_download() as download:
        revenue.locator('[data-action="csv"]').click()
    path = tmp_path / "revenue.csv"
    download.value.save_as(path)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["basis"] for row in rows} == {"net"}
    assert sum(Decimal(row["usd"]) for row in rows) == Decimal(EXPECTED["net"]["current"]["usd"])

    page.reload()  # the state is in the URL: still Net after a reload
    expect(page.locator('#overview-revenue [data-revenue-total="net"]')).to_be_visible()

    page.locator('[data-kpi="failure-rate"]').click()
    expect(page).to_have_url(re.compile(r"/admin/payments/transactions/\?status=failed&date_from=2026-03-01"))
    rows = page.locator("tr[data-tx]")
    expect(rows.first).to_be_visible()
    statuses = set(rows.evaluate_all("rows => rows.map(r => r.dataset.status)"))
    assert statuses == {"failed"}


def test_overview_over_the_90_day_demo_history_has_no_empty_or_error_state(
    live_server, as_user, billing_admin_user, shot, settings, anvil
):
    settings.BILLING_LOCAL_CHAIN_RPC = anvil.url  # the demo's local chain: balances are really read
    call_command("seed_demo", history=90, verbosity=0)
    page = as_user(billing_admin_user)
    page.goto(f"{live_server.url}/admin/?period=90d")
    parts_loaded(page)
    for key in ("mrr", "arpu", "active", "gross", "net", "failure-rate"):
        text = kpi(page, key).inner_text()
        assert text not in ("—", "$0.00", "0"), key
    expect(page.locator("[data-console-empty]")).to_have_count(0)
    expect(page.locator("[data-console-error]")).to_have_count(0)
    expect(page.locator("#overview-revenue canvas")).to_have_count(1)
    expect(page.locator("[data-segment]").first).to_be_visible()
    expect(page.locator("[data-network]").first).to_be_visible()
    expect(page.locator("[data-withdrawals] li").first).to_be_visible()
    expect(page.locator("[data-incident]").first).to_be_visible()
    shot(page, "overview")


def test_component_gallery_draws_every_section(live_server, as_user, billing_admin_user, shot):
    page = as_user(billing_admin_user)
    page.goto(f"{live_server.url}/admin/gallery/")
    for section in ("kpi-cards", "revenue-chart", "providers", "plan-cards", "matrix", "states"):
        expect(page.locator(f'[data-gallery="{section}"]')).to_be_visible()
    assert page.evaluate("() => !!Chart.getChart(document.querySelector('#gallery-revenue canvas'))")
    cell = page.locator('[data-gallery="matrix"] td.c-changed input').first
    cell.fill(cell.get_attribute("data-original"))  # typing the stored value back clears the mark
    expect(page.locator('[data-gallery="matrix"] td.c-changed')).to_have_count(1)
    # Sample rows and cards lead nowhere: clicking one keeps the operator on the gallery, no 404 page.
    page.locator('[data-gallery="providers"] a[data-console-open]').first.click()
    page.locator('[data-gallery="plan-cards"] a').first.click()
    page.wait_for_timeout(300)
    assert page.url.endswith("/admin/gallery/")
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, "gallery")
