"""The component gallery (/admin/gallery/, billing_admin only): each key section of the console rendered by
its real template with sample data and no database row, so a change to a component can be looked at in
every state (values, rises and falls, empty, loading, error) on one page.

It lives in billing_project because it shows both apps' parts (billing's Payments and Tariffs, overview's
Overview); neither app imports the other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from billing.console.tariffs import _matrix, plan_card
from billing.models import Network, PaymentContract, PaymentProvider, Plan, Token
from billing_project.console import console_view, is_billing_admin, render_console
from overview.console import kpi_cards, revenue_chart
from overview.periods import Period

NOW = datetime(2026, 3, 31, tzinfo=UTC)
PERIOD = Period("custom", datetime(2026, 3, 1, tzinfo=UTC), NOW)


def _money(current: str, previous: str, tokens: list[tuple[str, str, str]], delta_percent: str | None) -> dict:
    by_token = [{"token": key, "amount": amount, "display": shown} for key, amount, shown in tokens]
    return {
        "current": {"usd": current, "by_token": by_token},
        "previous": {"usd": previous, "by_token": []},
        "delta": {"usd": str(Decimal(current) - Decimal(previous)), "by_token": []},
        "delta_percent": delta_percent,
    }


def _count(current: int, previous: int) -> dict:
    return {"current": current, "previous": previous, "delta": current - previous, "delta_percent": None}


def sample_dashboard() -> dict:
    usdc = [("USDC@base", "4120000000", "4120.000000")]
    return {
        "kpis": {
            "mrr": _money("4120.00", "3650.00", usdc, "12.88"),
            "arpu_usd": {"current": "16.48", "previous": "17.03", "delta": "-0.55", "delta_percent": "-3.23"},
            "active_subscriptions": {**_count(250, 214), "delta_percent": "16.82"},
            "new_subscriptions": _count(48, 40),
            "churned_subscriptions": _count(12, 15),
            "revenue_gross": _money("13573.76", "11020.00", usdc, "23.17"),
            "refunds": _money("249.00", "120.00", [], None),
            "network_fees": _money("57.60", "41.00", [], None),
            "revenue_net": _money("13267.16", "10859.00", usdc, "22.18"),
            "failure_rate": {"current": "0.0780", "previous": "0.0610", "delta": "0.0170", "delta_percent": "27.87"},
            "checkouts": _count(831, 702),
        }
    }


def sample_revenue_report(basis: str = "gross") -> dict:
    points = []
    for day in range(14):
        start = PERIOD.start + timedelta(days=day)
        usdc = 180 + (day * 37) % 140
        eth = (day * 13) % 60
        points.append(
            {
                "start": start,
                "end": start + timedelta(days=1),
                "by_token": [
                    {"token": "USDC@base", "usd": f"{usdc}.00"},
                    {"token": "ETH@ethereum", "usd": f"{eth}.50"},
                ],
            }
        )
    return {"granularity": "day", "basis": basis, "series": [{"key": "token", "points": points}]}


def sample_providers() -> tuple[list[dict], dict]:
    base = Network(slug="base", name="Base", chain_id=8453)
    contract = PaymentContract(slug="pass-base", network=base)
    provider = PaymentProvider(slug="evm-main", title="EVM main", type="evm", enabled=True, priority=10)
    provider.contract = contract
    rows = [
        {"obj": provider, "networks": ["base", "ethereum"], "tokens": ["USDC@base", "USDC@ethereum", "ETH@ethereum"]},
        {
            "obj": PaymentProvider(slug="evm-backup", title="Backup", type="evm", enabled=False, priority=100),
            "networks": [],
            "tokens": [],
        },
    ]
    api = {
        "networks": rows[0]["networks"],
        "supported_tokens": rows[0]["tokens"],
        "default_network": "base",
        "contract_slug": "pass-base",
    }
    config = {"networks": {"base": {"chain_id": 8453, "tokens": ["USDC"]}}, "default_network": "base"}
    drawer = {
        "provider": provider,
        "api": api,
        "config_json": json.dumps(config, indent=2, sort_keys=True),
        "api_json": json.dumps({"slug": "evm-main", **api}, indent=2, sort_keys=True),
        "plans": [
            {"slug": "pro", "title": "Pro", "is_active": True},
            {"slug": "old", "title": "Old", "is_active": False},
        ],
    }
    return rows, drawer


def sample_plans() -> list[Plan]:
    base = Network(slug="base", name="Base", chain_id=8453)
    usdc = Token(symbol="USDC", decimals=6, network=base)
    specs = [
        ("basic", "Basic", 10, {"api_calls": 1000, "seats": 1}, True, "", ""),
        ("pro", "Pro", 30, {"api_calls": 10000, "seats": 5, "exports": 20}, True, "price-test", "a"),
        ("pro-b", "Pro (variant b)", 36, {"api_calls": 10000, "seats": 5, "exports": None}, True, "price-test", "b"),
        ("legacy", "Legacy", 8, {"api_calls": 500}, False, "", ""),
    ]
    plans = []
    for slug, title, price, limits, active, experiment, variant in specs:
        plan = Plan(
            slug=slug,
            title=title,
            interval="month",
            price_amount=price * 10**6,
            limits=limits,
            features=["Dashboard", "Exports"][: 1 + len(limits) // 2],
            is_active=active,
            experiment=experiment,
            variant=variant,
            tier=len(plans),
        )
        plan.price_token = usdc
        plans.append(plan)
    return plans


@console_view
@require_safe
def gallery_page(request: HttpRequest) -> HttpResponse:
    if not is_billing_admin(request):
        raise PermissionDenied("The component gallery is for billing_admin.")
    rows, drawer = sample_providers()
    plans = sample_plans()
    matrix = _matrix(plans)
    matrix["rows"][0]["cells"][1].update(value="15000", changed=True)  # a cell being edited
    matrix["rows"][1]["cells"][3].update(value="-2", changed=True, error="A whole number ≥ 0, or empty for unlimited.")
    cards = kpi_cards(sample_dashboard(), PERIOD)
    chart = revenue_chart(sample_revenue_report())
    revenue = {
        "state": type("S", (), {"tab": "gross"})(),
        "tabs": [
            {"key": "gross", "title": "Gross", "url": "#", "part_url": "#"},
            {"key": "net", "title": "Net", "url": "#", "part_url": "#"},
        ],
        "granularities": [{"key": "day", "title": "Day", "url": "#", "part_url": "#"}],
        "granularity": "day",
        "total": cards[3],
        "has_money": True,
        "chart_json": json.dumps(chart),
        "csv_url": "#",
    }
    context = {
        "title": "Component gallery",
        "console_page": "gallery",
        "cards": cards,
        "revenue": revenue,
        "provider_rows": rows,
        "drawer": drawer,
        "plan_cards": [plan_card(p) for p in plans],
        "matrix": matrix,
        "versions": {},
    }
    return render_console(request, page="console/gallery.html", context=context)
