"""The console's page machinery, shared by every app's console pages (billing's Payments workspace now;
overview's Overview and the Tariffs pages later).

- Roles: a console page is readable by `support` and `billing_admin`; anything else than GET/HEAD needs
  `billing_admin` and answers 403 otherwise (`console_view`). Templates get `can_write` and render no
  save or action button when it is false.
- Fragments: one view serves the full page and the htmx fragment of a part of it (`render_console`):
  a tab switch, a drawer, a lazy block or a filter change asks for the part only, a reload, a bookmark
  or the browser's back button gets the whole page rendered from the same URL, so state lives in the URL.
- Sidebar: `sidebar_navigation` (UNFOLD["SIDEBAR"]["navigation"] in settings).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse, reverse_lazy

from billing.roles import is_billing_admin as _is_billing_admin
from billing.roles import is_support as _is_support

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_billing_admin(request: HttpRequest) -> bool:
    return _is_billing_admin(request.user)


def is_support(request: HttpRequest) -> bool:
    return _is_support(request.user)


def can_write(request: HttpRequest) -> bool:
    return _is_billing_admin(request.user)


def console_view(view: Callable) -> Callable:
    """Support or billing_admin may read; only billing_admin may POST (a forged POST by support is a 403,
    whether or not the page offered a button)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not _is_support(request.user):
            raise PermissionDenied("The console needs the support or billing_admin role.")
        if request.method not in SAFE_METHODS and not _is_billing_admin(request.user):
            raise PermissionDenied("Support may read but not change anything; this needs billing_admin.")
        return view(request, *args, **kwargs)

    return wrapper


def console_context(request: HttpRequest, **extra) -> dict:
    """The admin's context (sidebar, theme, user links) plus what every console template reads."""
    context = admin.site.each_context(request)
    context.update(
        {
            "can_write": can_write(request),
            "is_htmx": bool(getattr(request, "htmx", False)),
            "is_fullwidth": "1",
        }
    )
    context.update(extra)
    return context


def wants_fragment(request: HttpRequest, target: str | None = None) -> bool:
    """An htmx request for a part of the page (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    if not htmx or htmx.history_restore_request:
        return False
    return target is None or htmx.target == target


def render_console(
    request: HttpRequest,
    *,
    page: str,
    fragment: str | None = None,
    target: str | None = None,
    context: dict,
    status: int = 200,
) -> HttpResponse:
    """The full `page`, or only `fragment` when htmx asks for the element `target` (any target if None)."""
    if fragment and wants_fragment(request, target):
        return render(request, fragment, {**context, "can_write": can_write(request), "is_htmx": True}, status=status)
    return render(request, page, console_context(request, **context), status=status)


def query_url(path: str, params: QueryDict | dict, **changes) -> str:
    """`path` with the current query string, some keys changed (None drops a key)."""
    query = params.copy() if isinstance(params, QueryDict) else QueryDict(mutable=True)
    if not isinstance(params, QueryDict):
        for key, value in params.items():
            query[key] = value
    query._mutable = True
    for key, value in changes.items():
        if value is None or value == "":
            query.pop(key, None)
        else:
            query[key] = value
    encoded = query.urlencode()
    return f"{path}?{encoded}" if encoded else path


def _link(name: str, *args) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def _perm(codename: str) -> Callable[[HttpRequest], bool]:
    return lambda request: request.user.has_perm(codename)


def sidebar_navigation(request: HttpRequest) -> list[dict]:
    """The console's sidebar: console pages first, then the admin's lists grouped by what operators do."""

    def item(title: str, icon: str, link, permission=None) -> dict:
        entry = {"title": title, "icon": icon, "link": link}
        if permission is not None:
            entry["permission"] = permission
        return entry

    def model(title: str, icon: str, label: str) -> dict:
        app_label, model_name = label.split(".")
        return item(
            title,
            icon,
            reverse_lazy(f"admin:{app_label}_{model_name}_changelist"),
            _perm(f"{app_label}.view_{model_name}"),
        )

    payments = _link("admin:console-payments")
    tariffs = _link("admin:console-tariffs")
    return [
        {
            "title": "Console",
            "items": [
                item("Overview", "monitoring", reverse_lazy("admin:index"), is_support),
                item("Payments", "account_balance_wallet", payments, is_support),
                item("Tariffs", "sell", tariffs, is_support),
                item("Component gallery", "widgets", _link("admin:console-gallery"), is_billing_admin),
            ],
        },
        {
            "title": "Ledger",
            "collapsible": True,
            "items": [
                model("Transactions", "receipt_long", "billing.paymenttransaction"),
                model("Status history", "history", "billing.transactionstatuschange"),
                model("Subscriptions", "autorenew", "billing.subscription"),
                model("Plans", "sell", "billing.plan"),
                model("Operator transactions", "send_money", "billing.operatortransaction"),
            ],
        },
        {
            "title": "Delivery",
            "collapsible": True,
            "items": [
                model("Outbox events", "outbox", "billing.outboxevent"),
                model("Outbox deliveries", "forward_to_inbox", "billing.outboxdelivery"),
                model("Inbound events", "move_to_inbox", "billing.inboundevent"),
                model("Notifications", "notifications", "notifications.notification"),
            ],
        },
        {
            "title": "Catalog",
            "collapsible": True,
            "items": [
                model("Networks", "hub", "billing.network"),
                model("RPC endpoints", "dns", "billing.rpcendpoint"),
                model("Tokens", "toll", "billing.token"),
                model("Contracts", "description", "billing.paymentcontract"),
                model("Providers", "storefront", "billing.paymentprovider"),
                model("Crypto config", "tune", "billing.cryptoconfig"),
            ],
        },
        {
            "title": "Chain mirror",
            "collapsible": True,
            "items": [
                model("Chain events", "link", "billing.chainevent"),
                model("Cursors", "my_location", "billing.chaincursor"),
                model("Blocks", "view_in_ar", "billing.chainblock"),
            ],
        },
        {
            "title": "Users and access",
            "collapsible": True,
            "items": [
                model("Users", "person", "auth.user"),
                model("Groups", "group", "auth.group"),
                model("API tokens", "key", "authtoken.tokenproxy"),
                model("Wallets", "wallet", "profiles.wallet"),
                model("Quota grants", "data_usage", "profiles.quotagrant"),
                model("Audit log", "manage_history", "auditlog.logentry"),
            ],
        },
    ]


__all__ = [
    "can_write",
    "console_context",
    "console_view",
    "is_billing_admin",
    "is_support",
    "query_url",
    "render_console",
    "sidebar_navigation",
    "wants_fragment",
]
