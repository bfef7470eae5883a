"""Acceptance: the overview API over tests/fixtures/overview_world.py equals the figures worked out by hand
there (EXPECTED, with the arithmetic in comments), to the smallest unit."""

from __future__ import annotations

import pytest

from tests.conftest import token_client
from tests.fixtures.overview_world import EXPECTED, WINDOW, build_overview_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    return build_overview_world()


@pytest.fixture
def api(support_user):
    return token_client(support_user)


def by_token(figure: dict) -> dict[str, int]:
    return {item["token"]: int(item["amount"]) for item in figure["by_token"]}


def check_money(kpi: dict, expected: dict) -> None:
    for part in ("current", "previous", "delta"):
        if part not in expected:
            continue
        want = dict(expected[part])
        assert kpi[part]["usd"] == want.pop("usd"), (part, kpi[part])
        got = by_token(kpi[part])
        for token, amount in want.items():
            assert got.get(token, 0) == amount, (part, token, got)
        if want:  # nothing else shows up (testnet tokens, unmatched transfers)
            assert {t for t, a in got.items() if a} <= {t for t, a in want.items() if a}, (part, got)


def test_dashboard_equals_the_hand_computed_figures(world, api):
    response = api.get("/v1/billing/overview/dashboard", WINDOW)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["period"]["from"] == "2026-03-01T00:00:00Z"
    assert body["period"]["previous_from"] == "2026-01-30T00:00:00Z"
    k = body["kpis"]
    check_money(k["revenue_gross"], EXPECTED["gross"])
    check_money(k["refunds"], EXPECTED["refunds"])
    check_money(k["network_fees"], EXPECTED["fees"])
    check_money(k["revenue_net"], EXPECTED["net"])
    check_money(k["mrr"], EXPECTED["mrr"])
    assert k["mrr"]["delta_percent"] == EXPECTED["mrr"]["delta_percent"]
    check_money(k["debt"], EXPECTED["debt"])
    assert {key: k["arpu_usd"][key] for key in EXPECTED["arpu_usd"]} == EXPECTED["arpu_usd"]
    for name, key in (
        ("active", "active_subscriptions"),
        ("new", "new_subscriptions"),
        ("churned", "churned_subscriptions"),
        ("past_due", "past_due_subscriptions"),
        ("checkouts", "checkouts"),
    ):
        assert {p: k[key][p] for p in ("current", "previous", "delta")} == EXPECTED[name], name
    for name in ("conversion", "failure_rate", "churn_rate"):
        assert {p: k[name][p] for p in ("current", "previous", "delta")} == EXPECTED[name], name


def test_testnets_join_money_figures_only_when_asked(world, api):
    body = api.get("/v1/billing/overview/dashboard", {**WINDOW, "include_testnets": "1"}).json()
    k = body["kpis"]
    want = EXPECTED["with_testnets"]
    assert k["mrr"]["current"]["usd"] == want["mrr_usd"]
    assert k["active_subscriptions"]["current"] == want["active"]
    assert k["revenue_gross"]["current"]["usd"] == want["gross_usd"]
    assert k["checkouts"]["current"] == want["checkouts"]
    assert by_token(k["revenue_gross"]["current"])["USDC@ow-testnet"] == 10 * 10**6


def test_experiment_conversion_and_revenue(world, api):
    body = api.get("/v1/billing/overview/experiments", WINDOW).json()
    [experiment] = [e for e in body["experiments"] if e["experiment"] == "ow-price-test"]
    assert experiment["control"] == "a"
    variants = {v["variant"]: v for v in experiment["variants"]}
    for name, want in EXPECTED["experiment"].items():
        if name == "difference":
            continue
        v = variants[name]
        got = {
            "checkouts": v["checkouts"],
            "confirmed": v["confirmed"],
            "conversion": v["conversion"],
            "revenue_usd": v["revenue"]["usd"],
            "arpu_usd": v["arpu_usd"],
        }
        assert got == want, name
    [comparison] = experiment["comparisons"]
    assert comparison["difference"] == EXPECTED["experiment"]["difference"]
    assert comparison["significant"] is False  # 1 of 3 against 2 of 3 tells nothing yet
