"""The Overview page: the admin index for the console's staff (support and billing_admin).

The page renders the KPI cards, the plan segments and the debt from one `overview.selectors.dashboard` call;
the revenue chart, the networks table, the treasury column and the incident feed are lazy parts (htmx), each
with a loading state and an error state with Retry (static/console/console.js). Every piece of state is a
query parameter of the page URL, so reload, bookmarks and back show the same thing:

    period=7d|30d|90d|mtd|custom  from= to= (custom: ISO dates, `to` inclusive)  testnets=1
    tab=gross|net (the revenue chart)  granularity=day|week|month

Read-only for everyone: nothing here writes, and anything but GET/HEAD answers 403 to support (console_view)
and 405 otherwise. Numbers come from overview.selectors only; this module formats them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe

from billing_project.console import can_write, console_view, is_support, query_url, render_console
from overview import selectors
from overview.periods import PERIOD_CHOICES, Period, PeriodError, resolve_period

BASES = ("gross", "net")
GRANULARITY_LABELS = {"day": "Day", "week": "Week", "month": "Month"}
PERIOD_LABELS = {"7d": "7 days", "30d": "30 days", "90d": "90 days", "mtd": "Month to date", "custom": "Custom"}
STATE_KEYS = ("period", "from", "to", "testnets", "tab", "granularity")
CHART_COLORS = ("#7c3aed", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#64748b", "#ec4899", "#84cc16")
RECENT_PAYOUTS = 8
INCIDENTS_SHOWN = 20


# --- state in the URL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    period: Period
    include_testnets: bool
    tab: str
    granularity: str
    query: QueryDict  # the page's query string, only the state keys

    def api_params(self) -> dict[str, str]:
        """The same window as the overview API's query parameters (exact instants, so the CSV is this window)."""
        params = {
            "period": "custom",
            "from": self.period.start.isoformat().replace("+00:00", "Z"),
            "to": self.period.end.isoformat().replace("+00:00", "Z"),
        }
        if self.include_testnets:
            params["include_testnets"] = "1"
        return params


def read_state(request: HttpRequest) -> State:
    """The page's state from its query string; PeriodError (field errors) on a bad window."""
    get = request.GET
    errors: dict[str, list[str]] = {}
    tab = get.get("tab") or "gross"
    if tab not in BASES:
        errors["tab"] = [f"One of {', '.join(BASES)}."]
    granularity = get.get("granularity") or "day"
    if granularity not in selectors.GRANULARITIES:
        errors["granularity"] = [f"One of {', '.join(selectors.GRANULARITIES)}."]
    try:
        period = resolve_period(
            name=get.get("period") or None, start=get.get("from") or None, end=get.get("to") or None, now=timezone.now()
        )
    except PeriodError as exc:
        errors.update(exc.fields)
        period = None
    if errors:
        raise PeriodError(errors)
    query = QueryDict(mutable=True)
    for key in STATE_KEYS:
        if get.get(key):
            query[key] = get[key]
    return State(period, get.get("testnets") == "1", tab, granularity, query)


def page_url(state_query: QueryDict, **changes) -> str:
    return query_url(reverse("admin:index"), state_query, **changes)


def part_url(name: str, state_query: QueryDict, **changes) -> str:
    return query_url(reverse(f"admin:console-overview-{name}"), state_query, **changes)


# --- formatting --------------------------------------------------------------------------------------------


def usd(value: str | Decimal | None) -> str:
    """'1234.5' -> '$1,234.50', '-3.00' -> '-$3.00' (exact: Decimal, never float)."""
    if value is None:
        return "—"
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}"


def percent(ratio: str | None, places: int = 2) -> str:
    """A rate '0.1818' -> '18.18%'."""
    if ratio is None:
        return "—"
    return f"{(Decimal(ratio) * 100).quantize(Decimal(1).scaleb(-places)):f}%"


def points(ratio_delta: str | None) -> str:
    """A change of a rate in percentage points: '-0.0182' -> '-1.82 pp'."""
    if ratio_delta is None:
        return ""
    return f"{(Decimal(ratio_delta) * 100).quantize(Decimal('0.01')):f} pp"


def tokens_text(by_token: list[dict]) -> str:
    """'178 USDC@ow-mainnet · 0.01 ETH@ow-mainnet' (non-zero amounts only)."""
    parts = [f"{_trim(item['display'])} {item['token']}" for item in by_token if Decimal(item["amount"]) != 0]
    return " · ".join(parts)


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _with_percent(text: str, delta_percent: str | None) -> str:
    if delta_percent is None:
        return text
    sign = "+" if Decimal(delta_percent) > 0 else ""
    return f"{text} ({sign}{delta_percent}%)"


# --- KPI cards ---------------------------------------------------------------------------------------------


def _date_range(period: Period) -> dict[str, str]:
    """The window as the transactions tab's inclusive date filter (its dates are of creation)."""
    last = period.end - timedelta(microseconds=1)
    return {"date_from": period.start.date().isoformat(), "date_to": last.date().isoformat()}


def _transactions_url(period: Period, status: str) -> str:
    params = QueryDict(mutable=True)
    params["status"] = status
    params.update(_date_range(period))
    return f"{reverse('admin:console-payments-transactions')}?{params.urlencode()}"


def _subscriptions_url(status: str) -> str:
    return f"{reverse('admin:billing_subscription_changelist')}?status__exact={status}"


def money_card(key: str, label: str, kpi: dict, href: str, hint: str = "") -> dict:
    delta = Decimal(kpi["delta"]["usd"])
    return {
        "key": key,
        "label": label,
        "value": usd(kpi["current"]["usd"]),
        "delta": delta,
        "delta_text": _with_percent(usd(delta), kpi["delta_percent"]),
        "href": href,
        "hint": hint or tokens_text(kpi["current"]["by_token"]),
        "previous": usd(kpi["previous"]["usd"]),
    }


def kpi_cards(dashboard: dict, period: Period) -> list[dict]:
    """The six KPI cards of the Overview (context of console/components/kpi_card.html), each with its signed
    delta against the previous window and a link to the list behind it."""
    k = dashboard["kpis"]
    active, arpu, failure = k["active_subscriptions"], k["arpu_usd"], k["failure_rate"]
    arpu_delta = None if arpu["delta"] is None else Decimal(arpu["delta"])
    failure_delta = None if failure["delta"] is None else Decimal(failure["delta"])
    active_subs = _subscriptions_url("active")
    return [
        money_card("mrr", "MRR", k["mrr"], active_subs),
        {
            "key": "arpu",
            "label": "ARPU",
            "value": usd(arpu["current"]),
            "delta": arpu_delta,
            "delta_text": "" if arpu_delta is None else _with_percent(usd(arpu_delta), arpu["delta_percent"]),
            "href": active_subs,
            "hint": "MRR per active subscription",
            "previous": usd(arpu["previous"]),
        },
        {
            "key": "active",
            "label": "Active subscriptions",
            "value": f"{active['current']:,}",
            "delta": active["delta"],
            "delta_text": _with_percent(f"{active['delta']:,}", active["delta_percent"]),
            "href": active_subs,
            "hint": f"{k['new_subscriptions']['current']:,} new · {k['churned_subscriptions']['current']:,} churned",
            "previous": f"{active['previous']:,}",
        },
        money_card("gross", "Revenue gross", k["revenue_gross"], _transactions_url(period, "confirmed")),
        money_card(
            "net",
            "Revenue net",
            k["revenue_net"],
            _transactions_url(period, "refunded"),
            hint=f"gross − {usd(k['refunds']['current']['usd'])} refunds − {usd(k['network_fees']['current']['usd'])} "
            "network fees",
        ),
        {
            "key": "failure-rate",
            "label": "Failure rate",
            "value": percent(failure["current"]),
            # A falling failure rate is good news: the card's colour follows the sign of the change as shown.
            "delta": failure_delta,
            "delta_text": points(failure["delta"]),
            "href": _transactions_url(period, "failed"),
            "hint": f"of {k['checkouts']['current']:,} checkouts",
            "previous": percent(failure["previous"]),
            "inverse": True,
        },
    ]


def segment_rows(dashboard: dict, catalog_plans: dict[str, int]) -> list[dict]:
    rows = []
    for seg in dashboard["segments"]:
        plan_id = catalog_plans.get(seg["plan"])
        rows.append(
            {
                **seg,
                "mrr_usd": usd(seg["mrr"]["usd"]),
                "mrr_tokens": tokens_text(seg["mrr"]["by_token"]),
                "href": f"{reverse('admin:billing_subscription_changelist')}?status__exact=active"
                + (f"&plan__id__exact={plan_id}" if plan_id else ""),
            }
        )
    return rows


# --- views -------------------------------------------------------------------------------------------------


def _bad_state(request: HttpRequest, exc: PeriodError, *, fragment: bool) -> HttpResponse:
    if fragment:
        response = HttpResponse(status=400)
        response["X-Console-Error"] = str(exc)[:300]
        return response
    return render_console(
        request,
        page="console/overview/page.html",
        context={"title": "Overview", "console_page": "overview", "errors": exc.fields, **_period_controls(None)},
        status=400,
    )


def _period_controls(state: State | None) -> dict:
    query = state.query if state else QueryDict()
    current = state.period.name if state else ""
    return {
        "periods": [
            {"key": key, "label": PERIOD_LABELS[key], "url": page_url(query, period=key, **{"from": None, "to": None})}
            for key in PERIOD_CHOICES
            if key != "custom"
        ],
        "period_name": current,
        "custom_from": query.get("from", "") if current == "custom" else "",
        "custom_to": query.get("to", "") if current == "custom" else "",
        "tab": state.tab if state else "gross",
        "granularity": state.granularity if state else "day",
        "testnets": bool(state and state.include_testnets),
        "testnets_url": page_url(query, testnets=None if state and state.include_testnets else "1"),
    }


def overview_index(request: HttpRequest) -> HttpResponse | None:
    """The admin index for support and billing_admin; None lets other staff see Unfold's app list."""
    if not is_support(request):
        return None
    return overview_page(request)


@console_view
@require_safe
def overview_page(request: HttpRequest) -> HttpResponse:
    try:
        state = read_state(request)
    except PeriodError as exc:
        return _bad_state(request, exc, fragment=False)
    dashboard = selectors.dashboard(period=state.period, include_testnets=state.include_testnets)
    plan_ids = {slug: plan.id for slug, plan in selectors.Catalog().plan_by_slug.items()}
    k = dashboard["kpis"]
    context = {
        "title": "Overview",
        "console_page": "overview",
        "state": state,
        "window": dashboard["period"],
        "cards": kpi_cards(dashboard, state.period),
        "segments": segment_rows(dashboard, plan_ids),
        "debt": {
            "total": money_card("debt", "Debt", k["debt"], _subscriptions_url("past_due")),
            "past_due": usd(k["debt_past_due"]["current"]["usd"]),
            "past_due_count": k["past_due_subscriptions"]["current"],
            "lapsed": usd(k["debt_lapsed"]["current"]["usd"]),
            "lapsed_count": k["lapsed_subscriptions"]["current"],
            "past_due_url": _subscriptions_url("past_due"),
            "lapsed_url": _subscriptions_url("expired"),
        },
        "parts": {name: part_url(name, state.query) for name in ("revenue", "networks", "payouts", "incidents")},
        **_period_controls(state),
    }
    return render_console(request, page="console/overview/page.html", context=context)


def _render_part(request: HttpRequest, template: str, context: dict) -> HttpResponse:
    """A lazy part is only ever a fragment (its URL is not a page: the page URL carries the same state)."""
    return render(request, template, {**context, "can_write": can_write(request), "is_htmx": True})


def _part(view):
    """A lazy part: GET only, its state read from the same query string as the page."""

    @console_view
    @require_safe
    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        try:
            state = read_state(request)
        except PeriodError as exc:
            return _bad_state(request, exc, fragment=True)
        return view(request, state)

    return wrapper


def _granularity_for(state: State) -> str:
    """The asked granularity, coarser when the window would have too many points for one chart."""
    order = list(selectors.GRANULARITIES)
    for granularity in order[order.index(state.granularity) :]:
        if selectors.count_buckets(state.period, granularity) <= selectors.MAX_SERIES_POINTS:
            return granularity
    return order[-1]


def revenue_chart(report: dict) -> dict:
    """Chart.js config: one stacked bar series per token, USD per bucket (exact decimal strings: display only)."""
    labels = []
    for point in report["series"][0]["points"] if report["series"] else []:
        labels.append(point["start"].strftime("%Y-%m-%d" if report["granularity"] != "month" else "%Y-%m"))
    tokens: dict[str, list[str]] = {}
    for series in report["series"]:
        for i, point in enumerate(series["points"]):
            for item in point["by_token"]:
                values = tokens.setdefault(item["token"], ["0"] * len(labels))
                values[i] = str(Decimal(values[i]) + Decimal(item["usd"]))
    datasets = [
        {
            "label": token,
            "data": values,
            "backgroundColor": CHART_COLORS[i % len(CHART_COLORS)],
            "borderRadius": 3,
            "stack": "usd",
        }
        for i, (token, values) in enumerate(sorted(tokens.items()))
    ]
    return {
        "type": "bar",
        "data": {"labels": labels, "datasets": datasets},
        "options": {
            "responsive": True,
            "maintainAspectRatio": False,
            "animation": False,
            "plugins": {"legend": {"position": "bottom"}, "tooltip": {"mode": "index", "intersect": False}},
            "scales": {
                "x": {"stacked": True, "grid": {"display": False}},
                "y": {"stacked": True, "title": {"display": True, "text": "USD (estimate)"}},
            },
        },
    }


@_part
def revenue_part(request: HttpRequest, state: State) -> HttpResponse:
    """The revenue chart: Gross/Net tabs, granularity, totals against the previous window, CSV export."""
    granularity = _granularity_for(state)
    report = selectors.revenue(
        period=state.period,
        include_testnets=state.include_testnets,
        granularity=granularity,
        basis=state.tab,
        split="token",
    )
    total = report["totals"][state.tab]
    api = {**state.api_params(), "basis": state.tab, "granularity": granularity, "split": "token", "format": "csv"}
    csv_query = QueryDict(mutable=True)
    csv_query.update(api)
    chart = revenue_chart(report)
    context = {
        "state": state,
        "tabs": [
            {
                "key": basis,
                "title": basis.title(),
                "url": page_url(state.query, tab=basis),
                "part_url": part_url("revenue", state.query, tab=basis),
            }
            for basis in BASES
        ],
        "granularities": [
            {
                "key": key,
                "title": title,
                "url": page_url(state.query, granularity=key),
                "part_url": part_url("revenue", state.query, granularity=key),
            }
            for key, title in GRANULARITY_LABELS.items()
        ],
        "granularity": granularity,
        "total": money_card(state.tab, f"Revenue {state.tab}", total, ""),
        "has_money": any(ds["data"] for ds in chart["data"]["datasets"]),
        "chart_json": json.dumps(chart),
        "csv_url": f"{reverse('overview-revenue')}?{csv_query.urlencode()}",
        # the page's period controls again, out of band: after a tab switch they carry the new tab
        "oob_controls": True,
        **_period_controls(state),
    }
    return _render_part(request, "console/overview/revenue.html", context)


@_part
def networks_part(request: HttpRequest, state: State) -> HttpResponse:
    report = selectors.networks(period=state.period, include_testnets=state.include_testnets)
    rows = []
    for net in report["networks"]:
        lags = [f["lag_blocks"] for f in net["followers"] if f["lag_blocks"] is not None]
        rows.append(
            {
                **net,
                "volume_usd": usd(net["volume"]["current"]["usd"]),
                "volume_tokens": tokens_text(net["volume"]["current"]["by_token"]),
                "failure": percent(net["failure_rate"]["current"]),
                "lag": max(lags) if lags else None,
                "rpc_ok": net["rpc_enabled"] > 0 and net["rpc_healthy"] == net["rpc_enabled"],
                "failed_url": _transactions_url(state.period, "failed") + f"&network={net['network']}",
            }
        )
    return _render_part(request, "console/overview/networks.html", {"rows": rows})


@_part
def payouts_part(request: HttpRequest, state: State) -> HttpResponse:
    """Treasury: each contract's balance per token (read from the chain, cached; stale rather than failing) and
    the recent withdrawals."""
    report = selectors.payouts(period=state.period, include_testnets=state.include_testnets, limit=RECENT_PAYOUTS)
    balances = []
    for contract in report["contracts"]:
        for item in contract["balances"]:
            balances.append(
                {
                    "contract": contract["contract"],
                    "network": contract["network"],
                    "explorer_url": contract["explorer_url"],
                    **item,
                    "shown": "—" if item["display"] is None else f"{_trim(item['display'])} {item['symbol']}",
                }
            )
    withdrawals = [{**w, "shown": f"{_trim(w['display'])} {w['token']}"} for w in report["withdrawals"]]
    context = {
        "held_usd": usd(report["held"]["usd"]),
        "withdrawn": money_card("withdrawn", "Withdrawn", report["withdrawn"], ""),
        "balances": balances,
        "withdrawals": withdrawals,
    }
    return _render_part(request, "console/overview/payouts.html", context)


@_part
def incidents_part(request: HttpRequest, state: State) -> HttpResponse:
    report = selectors.incidents(period=state.period, limit=INCIDENTS_SHOWN)
    counts = {kind.replace("_", " "): n for kind, n in report["counts"].items() if n}
    return _render_part(request, "console/overview/incidents.html", {"items": report["incidents"], "counts": counts})


def plan_kpis(dashboard: dict) -> list[dict]:
    """Active subscriptions and MRR per plan (the dashboard's segments summed over tokens)."""
    plans: dict[str, dict] = {}
    for seg in dashboard["segments"]:
        row = plans.setdefault(
            seg["plan"],
            {"plan": seg["plan"], "title": seg["plan_title"], "active": 0, "usd": Decimal(0), "tokens": []},
        )
        row["active"] += seg["active_subscriptions"]
        row["usd"] += Decimal(seg["mrr"]["usd"])
        row["tokens"].extend(seg["mrr"]["by_token"])
    return [{**row, "mrr": usd(row["usd"]), "mrr_tokens": tokens_text(row["tokens"])} for row in plans.values()]


@_part
def plans_part(request: HttpRequest, state: State) -> HttpResponse:
    """The Tariffs page's KPI: per plan (active subscriptions, MRR) and per experiment variant (checkouts,
    conversion with its 95 % interval, revenue, ARPU, the difference to the control)."""
    dashboard = selectors.dashboard(period=state.period, include_testnets=state.include_testnets)
    experiments = selectors.experiments(period=state.period, include_testnets=state.include_testnets)
    for experiment in experiments["experiments"]:
        for variant in experiment["variants"]:
            variant["conversion_text"] = percent(variant["conversion"])
            ci = variant["conversion_ci"]
            variant["ci_text"] = f"{percent(ci['low'])} – {percent(ci['high'])}" if ci else ""
            variant["revenue_text"] = usd(variant["revenue"]["usd"])
            variant["arpu_text"] = usd(variant["arpu_usd"])
        for comparison in experiment["comparisons"]:
            comparison["difference_text"] = points(comparison["difference"])
    context = {
        "plans": plan_kpis(dashboard),
        "experiments": experiments["experiments"],
        "window": dashboard["period"],
    }
    return _render_part(request, "console/overview/plans.html", context)
