"""The role matrix of docs/reference/api/access-policy.md, checked against every live URL pattern.

The table is read from the markdown; URL patterns come from Django's resolver. A pattern missing from the
table fails; every listed cell is checked for anonymous, user, support and billing_admin with real
`Authorization: Token` headers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.urls import URLPattern, URLResolver, get_resolver

from billing.models import RpcEndpoint
from tests import factories as f
from tests.conftest import token_client
from tests.integration.test_api_catalog import build_catalog

POLICY = Path(settings.BASE_DIR) / "docs" / "reference" / "api" / "access-policy.md"
ROLES = ("anonymous", "user", "support", "billing_admin")
TOP_LEVEL = {"/healthz", "/readyz", "/metrics", "/api/schema/", "/api/docs/"}


def read_policy() -> dict[tuple[str, str], dict[str, str]]:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    header: list[str] | None = None
    for line in POLICY.read_text().splitlines():
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: ") or "path" not in header:
            continue
        row = dict(zip(header, cells, strict=False))
        rows[(row["method"].upper(), normalize(row["path"]))] = row
    assert rows, "no policy table found"
    return rows


def normalize(path: str) -> str:
    """Placeholders of any spelling ({slug}, <slug:slug>, (?P<id>...)) become {}."""
    path = path.replace("^", "").replace("$", "")
    path = re.sub(r"\(\?P<\w+>[^)]*\)", "{}", path)
    path = re.sub(r"<(?:\w+:)?\w+>", "{}", path)
    path = re.sub(r"\{\w*\}", "{}", path)
    return path if path.startswith("/") else "/" + path


def _methods(pattern: URLPattern) -> list[str]:
    callback = pattern.callback
    actions = getattr(callback, "actions", None)
    if actions:
        return sorted(m.upper() for m in actions)
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is not None:
        return sorted(m.upper() for m in cls.http_method_names if m not in ("options", "head") and hasattr(cls, m))
    return ["GET"]


def live_routes() -> dict[tuple[str, str], str]:
    """(method, normalized path) -> raw route, for the API surface."""
    routes: dict[tuple[str, str], str] = {}

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            else:
                raw = "/" + (prefix + str(p.pattern)).replace("^", "").replace("$", "")
                path = normalize(raw)
                if path.startswith("/v1/") or path in TOP_LEVEL:
                    for method in _methods(p):
                        routes[(method, path)] = raw

    walk(get_resolver().url_patterns, "")
    return routes


POLICY_ROWS = read_policy()
LIVE = live_routes()


def test_every_url_pattern_is_in_the_policy_table():
    missing = sorted(f"{m} {p}" for (m, p) in LIVE if (m, p) not in POLICY_ROWS)
    assert not missing, "URL patterns without a row in access-policy.md:\n" + "\n".join(missing)


def test_policy_rows_without_a_url_are_marked_planned():
    stale = [
        f"{m} {p}"
        for (m, p), row in POLICY_ROWS.items()
        if (m, p) not in LIVE and "planned" not in row.get("notes", "")
    ]
    assert not stale, "rows for URLs that do not exist (mark them planned or remove them):\n" + "\n".join(stale)


def test_support_is_denied_every_write_in_the_table():
    for (method, path), row in POLICY_ROWS.items():
        if method in ("POST", "PUT", "PATCH", "DELETE") and "/admin/" in path:
            assert row["support"] == "deny", f"{method} {path}"


def _concrete(raw: str, objects: dict) -> str:
    """Fill the placeholders of a live route with real objects, chosen by the resource in the path."""
    path = normalize(raw)
    if "{}" not in path:
        return path
    if path.startswith("/v1/billing/checkout/"):
        value = str(objects["tx"].public_id)
    elif path.startswith("/v1/billing/webhooks/contracts/"):
        value = objects["contract"].slug
    elif "/admin/transactions/" in path:
        value = str(objects["tx"].public_id)
    elif "/admin/outbox/" in path:
        value = str(objects["delivery"].pk)
    elif "/admin/tokens/" in path:
        value = str(objects["usdc"].pk)
    elif "/admin/plans/" in path:
        value = objects["plan"].slug
    elif "/admin/providers/" in path:
        value = objects["provider"].slug
    elif "/admin/contracts/" in path:
        value = objects["contract"].slug
    elif "/admin/networks/" in path:
        value = objects["network"].slug
    else:
        raise AssertionError(f"no sample object for {raw}")
    return path.replace("{}", value)


@pytest.mark.django_db
@pytest.mark.parametrize("key", sorted(k for k in LIVE if k in POLICY_ROWS), ids=lambda k: f"{k[0]} {k[1]}")
def test_role_matrix(key, plain_user, support_user, billing_admin_user):
    method, _ = key
    objects = build_catalog()
    # Probes must fail fast and locally, not wait on DNS.
    RpcEndpoint.objects.update(url="http://127.0.0.1:9/key")
    objects["contract"].fallback_rpc = ""
    objects["contract"].save()
    objects["tx"] = f.ConfirmedTransactionFactory(user=plain_user, plan=objects["plan"])
    objects["delivery"] = f.OutboxDeliveryFactory(status="dead")
    url = _concrete(LIVE[key], objects)
    row = POLICY_ROWS[key]
    clients = {
        "anonymous": token_client(None),
        "user": token_client(plain_user),
        "support": token_client(support_user),
        "billing_admin": token_client(billing_admin_user),
    }
    for role in ROLES:
        cache.clear()  # throttles
        response = getattr(clients[role], method.lower())(url, {}, format="json")
        expected = row[role]
        got = response.status_code
        where = f"{method} {url} as {role}: {got}"
        if expected == "allow" and method == "GET":
            # The documented 2xx, or the exception its notes name.
            documented = {200}
            if url == "/readyz":
                documented.add(503)
            if "404" in row.get("notes", "") and role != "user":
                documented.add(404)  # owner-only rows, and /me/subscription without one
            if url == "/v1/billing/me/subscription":
                documented.add(404)
            assert got in documented, where
        elif expected == "allow":
            assert got not in (401, 403), where
            assert got < 300 or (got < 500 and "error" in response.json()), where
        elif expected == "deny":
            assert got == (401 if role == "anonymous" else 403), where
        else:
            assert got == int(expected), where
        if got in (400, 401, 403, 404, 409) and response.get("Content-Type", "").startswith("application/json"):
            assert "error" in response.json(), where


# --- Console pages (/admin/) --------------------------------------------------------------------------


def read_console_policy() -> dict[tuple[str, str], dict[str, str]]:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    header: list[str] | None = None
    for line in POLICY.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: ") or "page" not in header:
            continue
        row = dict(zip(header, cells, strict=True))
        rows[(row["method"].upper(), normalize(row["page"]))] = row
    assert rows, "no console table found"
    return rows


def console_routes() -> set[str]:
    """Every console page (`admin:console-*`), normalized."""
    found: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif (p.name or "").startswith("console-") or (prefix == "admin/" and p.name == "index"):
                found.add(normalize("/" + prefix + str(p.pattern)))

    walk(get_resolver().url_patterns, "")
    return found


CONSOLE_ROWS = read_console_policy()


def test_every_console_page_is_in_the_policy_table():
    listed = {path for (_, path) in CONSOLE_ROWS}
    missing = sorted(console_routes() - listed)
    assert not missing, "console pages without a row in access-policy.md:\n" + "\n".join(missing)


def _console_url(path: str, objects: dict) -> str:
    if "{}" not in path:
        return path
    for prefix, value in [
        ("/admin/payments/providers/", objects["provider"].slug),
        ("/admin/payments/contracts/", objects["contract"].slug),
        ("/admin/payments/transactions/", str(objects["tx"].public_id)),
        ("/admin/payments/crypto/networks/", objects["network"].slug),
        ("/admin/payments/operations/outbox/", str(objects["delivery"].pk)),
        ("/admin/payments/operations/inbound/", str(objects["inbound"].pk)),
        ("/admin/tariffs/plans/", objects["plan"].slug),
    ]:
        if path.startswith(prefix):
            return path.replace("{}", value)
    raise AssertionError(f"no sample object for {path}")


@pytest.mark.django_db
def test_console_pages_answer_each_role_as_documented(plain_user, support_user, billing_admin_user):
    from django.contrib import admin
    from django.test import Client

    objects = build_catalog()
    RpcEndpoint.objects.update(url="http://127.0.0.1:9/key")
    objects["contract"].fallback_rpc = ""
    objects["contract"].save()
    objects["tx"] = f.ConfirmedTransactionFactory(user=plain_user, plan=objects["plan"])
    objects["delivery"] = f.OutboxDeliveryFactory(status="dead")
    objects["inbound"] = f.InboundEventFactory(contract=objects["contract"])
    users = {"anonymous": None, "user": plain_user, "support": support_user, "billing_admin": billing_admin_user}
    clients = {}
    for role, user in users.items():
        clients[role] = Client()
        if user is not None:
            clients[role].force_login(user)

    def check(method: str, url: str, expected: dict[str, str]) -> list[str]:
        wrong = []
        for role in ROLES:
            cache.clear()
            response = getattr(clients[role], method.lower())(url)
            got = response.status_code
            want = expected[role]
            if want == "login":
                ok = got == 302 and response["Location"].startswith("/admin/login/")
            else:
                ok = got == int(want)
            if not ok:
                wrong.append(f"{method} {url} as {role}: {got}, documented {want}")
        return wrong

    wrong: list[str] = []
    for (method, path), row in CONSOLE_ROWS.items():
        if path == "/admin/{}/{}/":
            continue
        wrong += check(method, _console_url(path, objects), row)
    # Every registered model's changelist: 200 with the model's view permission, else 403.
    for model in admin.site._registry:
        label = f"{model._meta.app_label}.view_{model._meta.model_name}"
        expected = {"anonymous": "login", "user": "login"}
        for role in ("support", "billing_admin"):
            expected[role] = "200" if users[role].has_perm(label) else "403"
        wrong += check("GET", f"/admin/{model._meta.app_label}/{model._meta.model_name}/", expected)
    assert len(admin.site._registry) >= 20
    assert not wrong, "\n".join(wrong)
