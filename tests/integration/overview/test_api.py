"""The overview API beyond the headline figures: parameters (400 with field errors), revenue series and CSV,
networks, payouts, incidents; all over tests/fixtures/overview_world.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.core.cache import cache

from billing.models import RpcEndpoint
from tests.conftest import token_client
from tests.fixtures.overview_world import USDC, WINDOW, build_overview_world

pytestmark = pytest.mark.django_db
ENDPOINTS = ("dashboard", "revenue", "networks", "payouts", "incidents", "experiments")


@pytest.fixture
def world(db):
    world = build_overview_world()
    # Balance reads must fail at once, never wait on DNS.
    RpcEndpoint.objects.all().delete()
    return world


@pytest.fixture
def api(billing_admin_user):
    return token_client(billing_admin_user)


@pytest.mark.parametrize(
    "params,field",
    [
        ({"period": "1y"}, "period"),
        ({"period": "custom"}, "from"),
        ({"period": "custom", "from": "2026-03-01"}, "to"),
        ({"period": "custom", "from": "yesterday", "to": "2026-03-02"}, "from"),
        ({"period": "custom", "from": "2026-03-02", "to": "2026-03-01"}, "to"),
        ({"period": "custom", "from": "2020-01-01", "to": "2026-03-01"}, "to"),
        ({"period": "7d", "from": "2026-03-01"}, "from"),
        ({"include_testnets": "maybe"}, "include_testnets"),
    ],
)
def test_bad_period_parameters_answer_400_with_the_field(api, params, field):
    for endpoint in ENDPOINTS:
        response = api.get(f"/v1/billing/overview/{endpoint}", params)
        assert response.status_code == 400, (endpoint, response.content)
        body = response.json()["error"]
        assert body["code"] == "validation_error"
        assert field in body["fields"], (endpoint, body)


@pytest.mark.parametrize(
    "params,field",
    [
        ({"granularity": "hour"}, "granularity"),
        ({"basis": "cash"}, "basis"),
        ({"split": "user"}, "split"),
        ({"token": "DOGE@nowhere"}, "token"),
        ({"network": "nowhere"}, "network"),
        ({"plan": "nope"}, "plan"),
        ({"period": "custom", "from": "2024-01-01", "to": "2027-01-01", "granularity": "day"}, "granularity"),
        ({"format": "xml"}, "format"),
    ],
)
def test_bad_revenue_parameters_answer_400(world, api, params, field):
    response = api.get("/v1/billing/overview/revenue", params)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_a_date_only_to_includes_that_day(world, api):
    body = api.get("/v1/billing/overview/dashboard", {"from": "2026-03-01", "to": "2026-03-30"}).json()
    assert body["period"]["name"] == "custom"
    assert (body["period"]["from"], body["period"]["to"]) == ("2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z")
    assert body["kpis"]["revenue_gross"]["current"]["usd"] == "215.00"


def test_preset_periods_end_now(world, api):
    for name, days in (("7d", 7), ("30d", 30), ("90d", 90)):
        body = api.get("/v1/billing/overview/dashboard", {"period": name}).json()
        start = datetime.fromisoformat(body["period"]["from"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(body["period"]["to"].replace("Z", "+00:00"))
        assert (end - start).days == days
        assert abs((datetime.now(UTC) - end).total_seconds()) < 60
    mtd = api.get("/v1/billing/overview/dashboard", {"period": "mtd"}).json()["period"]
    assert mtd["from"].endswith("-01T00:00:00Z")


def _series(body: dict) -> dict[str, list[dict]]:
    return {s["key"]: s["points"] for s in body["series"]}


def test_revenue_series_by_day_gross_and_net(world, api):
    gross = api.get("/v1/billing/overview/revenue", {**WINDOW, "granularity": "day"}).json()
    points = _series(gross)["all"]
    assert len(points) == 30 and points[0]["start"] == "2026-03-01T00:00:00Z" and points[-1]["end"] == WINDOW["to"]
    day = {p["start"][:10]: p for p in points}
    # Mar 2: P13 30 USDC (refunded later: gross counts it on its confirmation day); Mar 3: P7 0.01 ETH at 2500.
    assert day["2026-03-02"]["usd"] == "30.00"
    assert day["2026-03-03"]["usd"] == "25.00"
    assert day["2026-03-03"]["by_token"][0]["amount"] == str(10**16)
    assert sum(int(p["usd"].replace(".", "")) for p in points) == 21500  # 215.00 over the window
    assert gross["totals"]["gross"]["current"]["usd"] == "215.00"

    net = api.get("/v1/billing/overview/revenue", {**WINDOW, "basis": "net"}).json()
    day = {p["start"][:10]: p for p in _series(net)["all"]}
    # Mar 6: the refund of P13 (-30.00) and its fee (0.0002 ETH = -0.40)
    assert day["2026-03-06"]["usd"] == "-30.40"
    assert {t["token"]: t["amount"] for t in day["2026-03-06"]["by_token"]} == {
        "USDC@ow-mainnet": str(-30 * USDC),
        "ETH@ow-mainnet": str(-2 * 10**14),
    }
    assert sum(int(p["usd"].replace(".", "").replace("-", "-")) for p in _series(net)["all"]) == 18430
    assert net["totals"]["net"]["current"]["usd"] == "184.30"


def test_revenue_split_and_filters(world, api):
    by_network = _series(
        api.get("/v1/billing/overview/revenue", {**WINDOW, "granularity": "month", "split": "network"}).json()
    )
    assert set(by_network) == {"ow-mainnet", "ow-l2"}
    assert [p["usd"] for p in by_network["ow-l2"]] == ["12.00"]
    assert [p["usd"] for p in by_network["ow-mainnet"]] == ["203.00"]

    by_plan = _series(
        api.get(
            "/v1/billing/overview/revenue", {**WINDOW, "granularity": "month", "split": "plan", "basis": "net"}
        ).json()
    )
    # ow-pro: P10 30 + P13 30 - refund 30 - refund fee 0.40; withdrawal fees have no plan.
    assert by_plan["ow-pro"][0]["usd"] == "29.60"
    assert by_plan["(no plan)"][0]["usd"] == "-0.30"

    eth_only = api.get("/v1/billing/overview/revenue", {**WINDOW, "token": "ETH@ow-mainnet", "basis": "net"}).json()
    assert eth_only["totals"]["net"]["current"]["usd"] == "24.40"  # 25.00 - 0.60 of fees on ow-mainnet
    assert eth_only["filters"]["token"] == "ETH@ow-mainnet"
    plan_only = api.get("/v1/billing/overview/revenue", {**WINDOW, "plan": "ow-basic"}).json()
    assert plan_only["totals"]["gross"]["current"]["usd"] == "10.00"
    assert plan_only["totals"]["gross"]["previous"]["usd"] == "30.00"


def test_weekly_buckets_start_on_monday_utc(world, api):
    points = _series(api.get("/v1/billing/overview/revenue", {**WINDOW, "granularity": "week"}).json())["all"]
    # 2026-03-01 is a Sunday: the first bucket is cut to that day, the next ones start on Mondays.
    assert [p["start"][:10] for p in points] == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-09",
        "2026-03-16",
        "2026-03-23",
        "2026-03-30",
    ]
    assert all(datetime.fromisoformat(p["start"][:10]).weekday() == 0 for p in points[1:])


def test_revenue_csv(world, api):
    response = api.get("/v1/billing/overview/revenue", {**WINDOW, "basis": "net", "split": "token", "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["bucket_start", "bucket_end", "series", "basis", "token", "amount", "amount_display", "usd"]
    refund_day = [r for r in rows[1:] if r[0].startswith("2026-03-06") and r[4] == "USDC@ow-mainnet"]
    assert refund_day == [
        [
            "2026-03-06T00:00:00+00:00",
            "2026-03-07T00:00:00+00:00",
            "USDC@ow-mainnet",
            "net",
            "USDC@ow-mainnet",
            str(-30 * USDC),
            "-30.000000",
            "-30.00",
        ]
    ]
    # The USD column adds up to the net total.
    assert sum(int(r[7].replace(".", "")) for r in rows[1:]) == 18430
    # An error with ?format=csv is still a readable JSON error.
    bad = api.get("/v1/billing/overview/revenue", {"format": "csv", "basis": "cash"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["basis"]


def test_networks(world, api):
    body = api.get("/v1/billing/overview/networks", WINDOW).json()
    nets = {n["network"]: n for n in body["networks"]}
    assert set(nets) == {"ow-mainnet", "ow-l2"}  # the testnet only with include_testnets
    main = nets["ow-mainnet"]
    assert main["transactions"] == {"current": 8, "previous": 4, "delta": 4, "delta_percent": "100.00"}
    # failed P18, P21 against 8 that went through
    assert main["failure_rate"]["current"] == "0.2000"
    # submitted -> confirmed of P2 P4 P5 P6 P7 P10 P11 P13: 60 90 120 150 180 210 240 300 s
    assert main["confirmation_latency_seconds"] == {"p50": "165.000", "p95": "279.000", "samples": 8}
    assert main["volume"]["current"]["usd"] == "203.00"
    assert nets["ow-l2"]["volume"]["current"]["usd"] == "12.00"
    with_test = api.get("/v1/billing/overview/networks", {**WINDOW, "include_testnets": "true"}).json()
    assert {n["network"] for n in with_test["networks"]} == {"ow-mainnet", "ow-l2", "ow-testnet"}


def test_networks_show_follower_lag_and_masked_rpc_health(world, api):
    from billing.models import ChainCursor

    net = world.networks["ow-mainnet"]
    RpcEndpoint.objects.create(
        network=net,
        position=0,
        url="https://rpc.example.test/v3/SECRET-KEY",
        last_head_block=5_000,
        healthy=True,
        last_latency_ms=35,
    )
    RpcEndpoint.objects.create(
        network=net,
        position=1,
        url="https://backup.example.test/?apikey=SECRET-KEY",
        healthy=False,
        consecutive_failures=4,
        last_error="timeout calling https://backup.example.test/?apikey=SECRET-KEY",
    )
    ChainCursor.objects.create(contract=world.contracts["ow-mainnet"], last_block=4_900)
    response = api.get("/v1/billing/overview/networks", WINDOW)
    assert b"SECRET-KEY" not in response.content
    main = {n["network"]: n for n in response.json()["networks"]}["ow-mainnet"]
    assert main["head_block"] == 5_000
    [follower] = main["followers"]
    assert (follower["lag_blocks"], follower["behind_depth_blocks"]) == (100, 97)
    assert [e["healthy"] for e in main["rpc_endpoints"]] == [True, False]
    assert (main["rpc_healthy"], main["rpc_enabled"]) == (1, 2)


def test_payouts_withdrawals_and_stale_balances(world, api):
    cache.clear()
    body = api.get("/v1/billing/overview/payouts", WINDOW).json()
    assert body["withdrawn"]["current"]["usd"] == "110.00"  # 100 USDC on ow-mainnet + 10 USDC on ow-l2
    assert body["withdrawn"]["previous"]["usd"] == "10.00"  # 0.005 ETH at the 2000 estimate
    assert [w["token"] for w in body["withdrawals"]] == ["USDC@ow-mainnet", "USDC@ow-l2"]  # newest first
    assert body["withdrawals"][0]["explorer_url"].startswith("https://ow-mainnet.explorer.test/tx/0x")
    contracts = {c["contract"]: c for c in body["contracts"]}
    assert set(contracts) == {"ow-pass-ow-mainnet", "ow-pass-ow-l2"}
    # No endpoint to read from: shown stale, with the reason, never an error answer.
    for balance in contracts["ow-pass-ow-mainnet"]["balances"]:
        assert balance["amount"] is None and balance["stale"] is True and balance["error"]


def test_incidents_newest_first_with_links(world, api):
    body = api.get("/v1/billing/overview/incidents", WINDOW).json()
    kinds = [i["kind"] for i in body["incidents"]]
    assert body["counts"]["reorg"] == 1 and body["counts"]["needs_review"] == 1
    assert body["counts"]["unmatched_transfer"] == 1 and body["counts"]["dead_letter"] == 1
    assert {"reorg", "needs_review", "unmatched_transfer", "dead_letter"} <= set(kinds)
    times = [i["at"] for i in body["incidents"]]
    assert times == sorted(times, reverse=True)
    reorg = next(i for i in body["incidents"] if i["kind"] == "reorg")
    assert reorg["link"] == "/v1/billing/admin/transactions?status=needs_review&network=ow-mainnet"
    assert "2047" in reorg["detail"]
    review = next(i for i in body["incidents"] if i["kind"] == "needs_review")
    assert review["link"] == f"/v1/billing/admin/transactions/{world.payments['U2'].public_id}"
    assert review["admin_url"] == f"/admin/billing/paymenttransaction/{world.payments['U2'].pk}/change/"
    dead = next(i for i in body["incidents"] if i["kind"] == "dead_letter")
    assert "https://crm.test" not in dead["detail"] or "****" in dead["detail"]
    # every link resolves to an endpoint that answers
    for incident in body["incidents"]:
        assert api.get(incident["link"]).status_code == 200, incident["link"]
