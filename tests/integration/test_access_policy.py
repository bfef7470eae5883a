"""The role matrix of docs/reference/api/access-policy.md, checked against every live URL pattern.

The table is read from the markdown; URL patterns come from Django's resolver. A pattern missing from the
table fails; every listed cell is checked for anonymous, user, support and billing_admin with real
`Authorization: Token` headers. Every write is sent as a valid request (prepare_write): "allow" means the
operation's documented 2xx (from the OpenAPI schema), "deny" 401/403 to that same request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator

from billing.models import RpcEndpoint, Subscription
from tests import factories as f
from tests.anvil import ANVIL_KEYS
from tests.conftest import link_wallet, token_client
from tests.factories import MINIMAL_ABI, random_address, random_hash
from tests.integration.test_api_catalog import PLAN_BODY, build_catalog

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


# --- Writes: a valid request per operation -----------------------------------------------------------

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
SCHEMA_OPS = {(m.upper(), normalize(p)): op for p, ops in SCHEMA["paths"].items() for m, op in ops.items()}
TREASURY = "0x00000000000000000000000000000000000Ba5e1"


def documented(key: tuple[str, str]) -> set[int]:
    """The statuses the OpenAPI schema documents for an operation."""
    return {int(code) for code in SCHEMA_OPS[key]["responses"] if code.isdigit()}


@dataclass
class Write:
    """A valid request for one role. `status`: what an allowed role gets; None = the operation's one
    documented 2xx. `code` + `why`: a write that cannot succeed in a test answers a documented business
    error instead (status and error code asserted)."""

    url: str
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    status: int | None = None
    code: str = ""
    why: str = ""


def _read_back(url: str, admin_user, drop=("id", "created_at", "updated_at")) -> dict:
    """PUT bodies: what GET answers is the write shape (read-only fields dropped)."""
    response = token_client(admin_user).get(url)
    assert response.status_code == 200, response.content
    return {k: v for k, v in response.json().items() if k not in drop}


def _siwe_body(user) -> dict:
    """A SIWE message for a fresh key, with a nonce issued to `user`, signed by that key."""
    from eth_account import Account

    from tests.integration.test_siwe import build_message, sign

    account = Account.create()
    nonce = f.SiweNonceFactory(user=user).nonce
    message = build_message(account.address, nonce)
    return {"message": message, "signature": sign(message, account.key.hex())}


def prepare_write(key: tuple[str, str], role: str, users: dict, objects: dict) -> Write:
    """A request an allowed `role` would carry out (objects made for it where the write needs its own),
    sent as-is by every role: a denied role must be refused before the body matters."""
    method, path = key
    # Own-data rows: anonymous sends the customer's request (it has no data of its own).
    me = users[role] or users["user"]
    plan, contract, net, usdc = objects["plan"], objects["contract"], objects["network"], objects["usdc"]
    if key == ("POST", "/v1/auth/token"):
        return Write(path, {"username": me.username, "password": "pw-" + me.username})
    if key == ("POST", "/v1/billing/checkout"):
        wallet = link_wallet(me, random_address()).address
        return Write(path, {"plan": plan.slug, "wallet": wallet}, {"HTTP_IDEMPOTENCY_KEY": f"policy-{role}"})
    if key == ("POST", "/v1/billing/checkout/{}/tx"):
        own = f.PaymentTransactionFactory(user=me, plan=plan)
        return Write(path.replace("{}", str(own.public_id)), {"tx_hash": random_hash()})
    if key == ("POST", "/v1/billing/me/subscription/cancel"):
        if not Subscription.objects.filter(user=me).exists():
            f.SubscriptionFactory(user=me, plan=plan)
        return Write(path)
    if key == ("POST", "/v1/profile/wallets/siwe/nonce"):
        return Write(path)
    if key == ("POST", "/v1/profile/wallets/siwe/verify"):
        return Write(path, _siwe_body(me))
    if key == ("POST", "/v1/billing/webhooks/contracts/{}"):
        # Signed, not token-authenticated: every role's unsigned delivery is a 401 (the table's number).
        return Write(path.replace("{}", contract.slug), {"id": "evt-policy", "type": "payment.confirmed"})
    admin = users["billing_admin"]
    base = "/v1/billing/admin/"
    if key == ("POST", base + "plans"):
        return Write(path, dict(PLAN_BODY))
    if key == ("POST", base + "providers"):
        return Write(
            path,
            {
                "slug": "evm-second",
                "title": "Second",
                "type": "evm",
                "networks": [net.slug],
                "supported_tokens": [f"USDC@{net.slug}"],
                "default_network": net.slug,
                "contract_slug": contract.slug,
            },
        )
    if key == ("POST", base + "contracts"):
        return Write(
            path,
            {
                "slug": "pass-second",
                "network": net.slug,
                "address": random_address(),
                "abi": list(MINIMAL_ABI),
                "mint_method": "pay",
                "burn_method": "refund",
                "withdraw_method": "withdraw",
                "webhook_secret": "whsec_policy_second_contract",
            },
        )
    if key == ("POST", base + "networks"):
        return Write(path, {"slug": "second-net", "name": "Second", "chain_id": 424242})
    if key == ("POST", base + "tokens"):
        return Write(path, {"network": net.slug, "symbol": "DAI", "address": random_address(), "decimals": 18})
    spare = {  # DELETE targets nothing references (the catalog's own rows are in use: 409 in_use)
        "plans": lambda: f.PlanFactory(provider=objects["provider"], price_token=usdc, slug="spare-plan").slug,
        "providers": lambda: f.PaymentProviderFactory(slug="spare-provider", contract=contract).slug,
        "contracts": lambda: f.PaymentContractFactory(slug="spare-contract", network=net).slug,
        "networks": lambda: f.NetworkFactory(slug="spare-net").slug,
        "tokens": lambda: str(f.TokenFactory(network=net, symbol="SPARE").pk),
    }
    existing = {
        "plans": plan.slug,
        "providers": objects["provider"].slug,
        "contracts": contract.slug,
        "networks": net.slug,
        "tokens": str(usdc.pk),
    }
    for name in existing:
        if path == f"{base}{name}/{{}}":
            if method == "DELETE":
                if name not in objects["spare"]:
                    objects["spare"][name] = spare[name]()
                return Write(path.replace("{}", objects["spare"][name]))
            url = path.replace("{}", existing[name])
            if method == "PATCH":
                titled = name in ("plans", "providers", "contracts")
                return Write(url, {"title": "Renamed"} if titled else {"name": "Renamed"})
            body = _read_back(url, admin)
            if name == "plans":
                body["price_token"] = f"USDC@{net.slug}"  # the read shape's symbol, qualified with its network
            if name == "networks":
                body.pop("rpc_endpoints", None)  # read back masked; a PUT without them keeps them
            return Write(url, body)
    if key == ("PUT", base + "crypto-config"):
        return Write(path, _read_back(path, admin, drop=("updated_at",)))
    if key == ("PATCH", base + "crypto-config"):
        return Write(path, {"max_retries": 4})
    if key == ("POST", base + "crypto-config/test-connection"):
        return Write(path)  # probes fail fast (127.0.0.1:9) and say so in a 200
    if key == ("POST", base + "transactions/{}/refund"):
        return Write(
            path.replace("{}", str(objects["tx"].public_id)),
            {"reason": "customer asked"},
            status=202,  # documented 200 or 202: without an operator key (tests) it is recorded, not sent
        )
    if key == ("POST", base + "transactions/{}/reprocess"):
        # A stored delivery of this payment that did not apply: re-run (verified again; no chain here, so its
        # outcome is a failure, and the answer is still the documented 200 with what happened).
        if "inbound" not in objects:
            tx = objects["tx"]
            payload = {  # what the webhook endpoint stores: a delivery that passed its checks
                "id": "dlv-policy",
                "type": "payment.confirmed",
                "chain_id": net.chain_id,
                "contract_address": contract.address,
                "method": "pay",
                "tx_hash": tx.tx_hash,
                "log_index": 0,
                "block_number": tx.block_number,
                "block_hash": tx.block_hash,
                "order_id": tx.order_id,
                "payer": tx.payer_address,
                "token": usdc.address,
                "amount": str(tx.amount),
            }
            objects["inbound"] = f.InboundEventFactory(
                contract=contract, transaction=tx, tx_hash=tx.tx_hash, delivery_id="dlv-policy", payload=payload
            )
        return Write(path.replace("{}", str(objects["tx"].public_id)), {"reason": "support ticket 42"})
    if key == ("POST", base + "contracts/{}/withdraw"):
        return Write(
            path.replace("{}", contract.slug),
            {"token": "USDC", "reason": "monthly sweep"},
            status=409,
            code="chain_unavailable",
            why="a withdrawal reads the contract's balance from the chain before it sends an operator "
            "transaction; the test has no chain (RPC 127.0.0.1:9), so the documented refusal is 409 "
            "chain_unavailable, after the permission check and the body's validation passed",
        )
    if key == ("POST", base + "outbox/{}/replay"):
        return Write(path.replace("{}", str(objects["delivery"].pk)))
    raise AssertionError(f"no valid request written for {method} {path}: add one to prepare_write")


def check_row(key: tuple[str, str], users: dict) -> list[str]:
    """Every role's answer to one policy row; returns what differs from the table (empty: all as documented)."""
    method, _ = key
    objects = build_catalog()
    # Probes must fail fast and locally, not wait on DNS.
    RpcEndpoint.objects.update(url="http://127.0.0.1:9/key")
    objects["contract"].fallback_rpc = ""
    objects["contract"].save()
    objects["tx"] = f.ConfirmedTransactionFactory(user=users["user"], plan=objects["plan"])
    objects["delivery"] = f.OutboxDeliveryFactory(status="dead")
    objects["spare"] = {}
    row = POLICY_ROWS[key]
    wrong: list[str] = []
    for role in ROLES:
        cache.clear()  # throttles
        client = token_client(users[role])
        if method == "GET":
            write = Write(_concrete(LIVE[key], objects))
            response = client.get(write.url)
        else:
            write = prepare_write(key, role, users, objects)
            response = getattr(client, method.lower())(write.url, write.body, format="json", **write.headers)
        expected = row[role]
        got = response.status_code
        where = f"{method} {write.url} as {role}: {got}"
        body = response.json() if response.get("Content-Type", "").startswith("application/json") else None
        error = (body or {}).get("error") if isinstance(body, dict) else None
        if expected == "allow" and method == "GET":
            # The documented 200, or the exception its notes name.
            allowed = {200}
            if write.url == "/readyz":
                allowed.add(503)
            if "404" in row.get("notes", "") and role != "user":
                allowed.add(404)  # owner-only rows, and /me/subscription without one
            if write.url == "/v1/billing/me/subscription":
                allowed.add(404)
            if got not in allowed:
                wrong.append(f"{where}, documented {sorted(allowed)}")
        elif expected == "allow":
            success = {s for s in documented(key) if 200 <= s < 300}
            if write.code:
                want = write.status
                assert want in documented(key) and want not in success and want < 500, (key, want)
                if got != want or (error or {}).get("code") != write.code:
                    wrong.append(f"{where} {error}, expected {want} {write.code} ({write.why})")
            else:
                assert write.status is not None or len(success) == 1, f"{key}: say which of {success}"
                want = write.status or next(iter(success))
                assert want in success, (key, want)
                if got != want:
                    wrong.append(f"{where} {error or ''}, documented {want}")
        elif expected == "deny":
            want = 401 if role == "anonymous" else 403
            if got != want:
                wrong.append(f"{where}, documented {want}")
        elif got != int(expected):
            wrong.append(f"{where}, documented {expected}")
        if got in (400, 401, 403, 404, 409) and body is not None and not error:
            wrong.append(f"{where}: an error outside the API's error shape")
    return wrong


@pytest.fixture
def role_users(plain_user, support_user, billing_admin_user, settings) -> dict:
    # Checkout signs its payment payload (the signer key is a setting; no chain is needed to sign). No operator
    # key: refunds are recorded, not sent (202). A treasury: withdraw gets as far as reading the chain.
    settings.BILLING_QUOTE_SIGNER_KEY = ANVIL_KEYS[1]
    settings.BILLING_OPERATOR_KEY = ""
    settings.BILLING_OPERATOR_KEY_FILE = ""
    settings.BILLING_TREASURY_ADDRESS = TREASURY
    return {"anonymous": None, "user": plain_user, "support": support_user, "billing_admin": billing_admin_user}


@pytest.mark.django_db
@pytest.mark.parametrize("key", sorted(k for k in LIVE if k in POLICY_ROWS), ids=lambda k: f"{k[0]} {k[1]}")
def test_role_matrix(key, role_users):
    wrong = check_row(key, role_users)
    assert not wrong, "\n".join(wrong)


def test_every_write_of_the_table_has_a_documented_2xx():
    """ "allow" on a write means its documented 2xx: every write row has one in the OpenAPI schema."""
    for key in POLICY_ROWS:
        if key[0] in WRITE_METHODS and key in LIVE and "allow" in POLICY_ROWS[key].values():
            assert any(200 <= s < 300 for s in documented(key)), key


def _check_then_undo(key: tuple[str, str], users: dict) -> list[str]:
    """check_row in a savepoint rolled back afterwards, so one test can walk a row several times."""
    with transaction.atomic():
        wrong = check_row(key, users)
        transaction.set_rollback(True)
    return wrong


@pytest.mark.django_db
def test_the_matrix_fails_when_a_permission_is_widened_or_narrowed(role_users, monkeypatch):
    """The check is not vacuous: support let through a catalog write, or billing_admin refused one, is
    reported, and so is an allowed write that answers anything but its documented 2xx."""
    from billing.api import permissions

    create, patch = ("POST", "/v1/billing/admin/plans"), ("PATCH", "/v1/billing/admin/plans/{}")
    assert _check_then_undo(create, role_users) == []
    assert _check_then_undo(patch, role_users) == []
    real = permissions.IsBillingAdminOrSupportReadOnly.has_permission

    def widened(self, request, view):
        return bool(request.user and request.user.is_authenticated and permissions.is_support(request.user))

    with monkeypatch.context() as m:
        m.setattr(permissions.IsBillingAdminOrSupportReadOnly, "has_permission", widened)
        wrong = _check_then_undo(create, role_users)
    assert any("as support: 201" in w for w in wrong), wrong

    def narrowed(self, request, view):
        return real(self, request, view) and request.method in ("GET", "HEAD", "OPTIONS")

    with monkeypatch.context() as m:
        m.setattr(permissions.IsBillingAdminOrSupportReadOnly, "has_permission", narrowed)
        wrong = _check_then_undo(patch, role_users)
    assert any("as billing_admin: 403" in w for w in wrong), wrong

    # Allowed, but the body no longer valid: a 400 is not the documented 201.
    with monkeypatch.context() as m:
        m.setitem(PLAN_BODY, "price_amount", "-1")
        wrong = _check_then_undo(create, role_users)
    assert any("as billing_admin: 400" in w and "documented 201" in w for w in wrong), wrong


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
