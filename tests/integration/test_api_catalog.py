"""Admin catalog API: plan/provider round trips, validation surfaced as field errors, write-only secrets,
masked RPC URLs, crypto config. `build_catalog` is shared by the other API tests."""

from __future__ import annotations

from decimal import Decimal

import pytest
from auditlog.models import LogEntry

from billing.models import CryptoConfig, PaymentContract, Plan, RpcEndpoint
from tests import factories as f

pytestmark = pytest.mark.django_db

CANARY = "canary7f3e9a1b2c4d5e6f"
RPC_URL = f"https://rpc.example.test/v2/{CANARY}rpc"
FALLBACK_RPC = f"https://fallback.example.test/key/{CANARY}fb"
WEBHOOK_SECRET = f"whsec_{CANARY}_webhook"


def build_catalog() -> dict:
    """One network with a keyed RPC URL, native + USDC tokens, a contract with a secret, a provider, a plan."""
    net = f.NetworkFactory(slug="anvil-local", name="Anvil local", chain_id=31337)
    f.RpcEndpointFactory(network=net, position=0, url=RPC_URL)
    native = f.NativeTokenFactory(network=net)
    usdc = f.TokenFactory(network=net, symbol="USDC", decimals=6, usd_estimate=Decimal("1"))
    contract = f.PaymentContractFactory(
        slug="pass-anvil", network=net, webhook_secret=WEBHOOK_SECRET, fallback_rpc=FALLBACK_RPC
    )
    provider = f.PaymentProviderFactory(
        slug="evm-main", contract=contract, networks=[net], supported_tokens=[native, usdc]
    )
    plan = f.PlanFactory(
        slug="pro-monthly",
        title="Pro",
        provider=provider,
        contract=contract,
        price_token=usdc,
        price_amount=10_000_000,
        experiment="pricing-2025",
        variant="a",
    )
    CryptoConfig.load()
    return {"network": net, "native": native, "usdc": usdc, "contract": contract, "provider": provider, "plan": plan}


def test_plans_catalog_is_public_and_lists_payment_options(api_client):
    cat = build_catalog()
    f.PlanFactory(slug="retired", provider=cat["provider"], contract=cat["contract"], is_active=False)
    response = api_client.get("/v1/billing/plans")
    assert response.status_code == 200
    slugs = [p["slug"] for p in response.json()]
    assert slugs == ["pro-monthly"]
    plan = response.json()[0]
    for field in (
        "slug",
        "title",
        "interval",
        "price_token",
        "price_amount",
        "price_usd_estimate",
        "gateway_slug",
        "contract_slug",
        "limits",
        "features",
        "is_active",
        "experiment",
        "variant",
    ):
        assert field in plan, field
    assert plan["price_token"] == "USDC"
    assert plan["price_amount"] == "10000000"
    assert plan["price_display"] == "10.000000"
    assert plan["gateway_slug"] == "evm-main" and plan["contract_slug"] == "pass-anvil"
    [option] = plan["payment_options"]
    assert option["network"] == "anvil-local" and option["chain_id"] == 31337
    assert [t["key"] for t in option["tokens"]] == ["USDC@anvil-local"]
    assert option["tokens"][0]["amount"] == "10000000"


PLAN_BODY = {
    "slug": "team-yearly",
    "title": "Team",
    "description": "For teams",
    "interval": "year",
    "price_token": "USDC",
    "price_amount": "115792089237316195423570985008687907853269984665640564039457584007913129639935",
    "price_usd_estimate": "1200.00",
    "gateway_slug": "evm-main",
    "contract_slug": "pass-anvil",
    "limits": {"api_calls": 100000, "seats": None},
    "features": ["sso", "exports"],
    "tier": 3,
    "grace_period_days": 5,
    "is_active": True,
    "experiment": "pricing-2025",
    "variant": "b",
    "sort_order": 2,
}


def test_plan_round_trip_patch_keeps_every_untouched_field(admin_api):
    build_catalog()
    created = admin_api.post("/v1/billing/admin/plans", PLAN_BODY, format="json")
    assert created.status_code == 201, created.json()
    before = admin_api.get("/v1/billing/admin/plans/team-yearly").json()
    for key, value in PLAN_BODY.items():
        assert before[key] == value, key  # uint256 max survives as a string
    patched = admin_api.patch("/v1/billing/admin/plans/team-yearly", {"title": "Team+"}, format="json")
    assert patched.status_code == 200, patched.json()
    after = admin_api.get("/v1/billing/admin/plans/team-yearly").json()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"title", "updated_at"}
    # PUT of what was read (plus a change) is accepted as-is: the read shape is the write shape.
    body = {k: v for k, v in after.items() if k not in ("id", "created_at", "updated_at")}
    body["price_token"] = "USDC@anvil-local"
    body["tier"] = 4
    put = admin_api.put("/v1/billing/admin/plans/team-yearly", body, format="json")
    assert put.status_code == 200, put.json()
    assert put.json()["tier"] == 4 and put.json()["price_token"] == "USDC"


def test_plan_validation_errors_are_field_errors(admin_api):
    cat = build_catalog()
    other_net = f.NetworkFactory(slug="other-net")
    f.TokenFactory(network=other_net, symbol="DAI")
    bad = dict(PLAN_BODY, price_token="DAI@other-net")
    response = admin_api.post("/v1/billing/admin/plans", bad, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "price_token" in error["fields"]
    assert "does not support" in " ".join(error["fields"]["price_token"])

    response = admin_api.post("/v1/billing/admin/plans", dict(PLAN_BODY, price_amount=1.5), format="json")
    assert response.status_code == 400 and "price_amount" in response.json()["error"]["fields"]
    response = admin_api.post("/v1/billing/admin/plans", dict(PLAN_BODY, price_token="NOPE"), format="json")
    assert response.status_code == 400 and "price_token" in response.json()["error"]["fields"]
    response = admin_api.post("/v1/billing/admin/plans", dict(PLAN_BODY, gateway_slug="missing"), format="json")
    assert response.status_code == 400 and "gateway_slug" in response.json()["error"]["fields"]
    response = admin_api.patch(
        f"/v1/billing/admin/plans/{cat['plan'].slug}", {"experiment": "", "variant": "b"}, format="json"
    )
    assert response.status_code == 400 and "variant" in response.json()["error"]["fields"]
    assert Plan.objects.filter(slug="team-yearly").count() == 0


def test_provider_round_trip_and_config_built_by_backend(admin_api):
    cat = build_catalog()
    body = {
        "slug": "evm-second",
        "title": "Second",
        "type": "evm",
        "enabled": True,
        "priority": 5,
        "networks": ["anvil-local"],
        "supported_tokens": ["ETH@anvil-local", "USDC@anvil-local"],
        "default_network": "anvil-local",
        "contract_slug": "pass-anvil",
    }
    created = admin_api.post("/v1/billing/admin/providers", body, format="json")
    assert created.status_code == 201, created.json()
    before = admin_api.get("/v1/billing/admin/providers/evm-second").json()
    for key, value in body.items():
        if key == "supported_tokens":
            assert sorted(before[key]) == sorted(value)
        else:
            assert before[key] == value, key
    assert before["config"]["networks"][0]["chain_id"] == 31337
    assert {t["symbol"] for t in before["config"]["networks"][0]["tokens"]} == {"ETH", "USDC"}

    patched = admin_api.patch("/v1/billing/admin/providers/evm-second", {"priority": 7}, format="json")
    assert patched.status_code == 200, patched.json()
    after = admin_api.get("/v1/billing/admin/providers/evm-second").json()
    assert {k for k in before if before[k] != after[k]} == {"priority", "updated_at"}

    # Dropping a token rebuilds config.
    admin_api.patch("/v1/billing/admin/providers/evm-second", {"supported_tokens": ["USDC@anvil-local"]}, format="json")
    again = admin_api.get("/v1/billing/admin/providers/evm-second").json()
    assert [t["symbol"] for t in again["config"]["networks"][0]["tokens"]] == ["USDC"]
    assert again["priority"] == 7 and again["networks"] == ["anvil-local"]

    # Cross-field rules come back as field errors.
    f.NetworkFactory(slug="elsewhere")
    bad = admin_api.patch("/v1/billing/admin/providers/evm-second", {"default_network": "elsewhere"}, format="json")
    assert bad.status_code == 400 and "default_network" in bad.json()["error"]["fields"]
    bad = admin_api.patch("/v1/billing/admin/providers/evm-second", {"type": "paypal"}, format="json")
    assert bad.status_code == 400 and "type" in bad.json()["error"]["fields"]
    # The provider selling pro-monthly cannot drop the network of its price token.
    bad = admin_api.patch(f"/v1/billing/admin/providers/{cat['provider'].slug}", {"networks": []}, format="json")
    assert bad.status_code == 400 and "networks" in bad.json()["error"]["fields"]


def test_contract_validation_secret_rotation_and_masking(admin_api):
    cat = build_catalog()
    contract = cat["contract"]
    detail = admin_api.get(f"/v1/billing/admin/contracts/{contract.slug}").json()
    assert "webhook_secret" not in detail
    assert detail["has_webhook_secret"] is True
    assert detail["fallback_rpc"] == "https://fallback.example.test/****"
    assert CANARY not in str(detail)

    # Sending back what was read keeps the real fallback URL.
    body = {k: v for k, v in detail.items() if k not in ("id", "chain_id", "created_at", "updated_at")}
    put = admin_api.put(f"/v1/billing/admin/contracts/{contract.slug}", body, format="json")
    assert put.status_code == 200, put.json()
    contract.refresh_from_db()
    assert contract.fallback_rpc == FALLBACK_RPC

    rotated = admin_api.patch(
        f"/v1/billing/admin/contracts/{contract.slug}", {"webhook_secret": "whsec_new_secret_value_123"}, format="json"
    )
    assert rotated.status_code == 200
    assert rotated.json()["secret_rotated_at"] is not None and "webhook_secret" not in rotated.json()
    contract.refresh_from_db()
    assert contract.webhook_secret == "whsec_new_secret_value_123"
    assert contract.previous_webhook_secret == WEBHOOK_SECRET

    no_mint = admin_api.patch(f"/v1/billing/admin/contracts/{contract.slug}", {"mint_method": "nope"}, format="json")
    assert no_mint.status_code == 400 and "mint_method" in no_mint.json()["error"]["fields"]
    lower = contract.address.lower()
    bad_address = admin_api.patch(f"/v1/billing/admin/contracts/{contract.slug}", {"address": lower}, format="json")
    assert bad_address.status_code == 400
    assert "checksum" in " ".join(bad_address.json()["error"]["fields"]["address"])
    bad_abi = admin_api.patch(f"/v1/billing/admin/contracts/{contract.slug}", {"abi": [{"name": "x"}]}, format="json")
    assert bad_abi.status_code == 400 and "abi" in bad_abi.json()["error"]["fields"]
    no_inputs = [{"type": "function", "name": "pay", "inputs": []}, *f.MINIMAL_ABI[1:]]
    resp = admin_api.patch(f"/v1/billing/admin/contracts/{contract.slug}", {"abi": no_inputs}, format="json")
    assert resp.status_code == 400 and "mint_method" in resp.json()["error"]["fields"]
    assert PaymentContract.objects.get(pk=contract.pk).mint_method == "pay"


def test_network_rpc_endpoints_masked_ordered_and_kept_on_echo(admin_api):
    cat = build_catalog()
    net = cat["network"]
    detail = admin_api.get(f"/v1/billing/admin/networks/{net.slug}").json()
    [endpoint] = detail["rpc_endpoints"]
    assert endpoint["url"] == "https://rpc.example.test/****"
    body = {
        "rpc_endpoints": [
            {"url": "https://second.example.test/abc", "timeout_seconds": "3.00", "enabled": True},
            {"id": endpoint["id"], "url": endpoint["url"], "timeout_seconds": "2.00", "enabled": True},
        ]
    }
    response = admin_api.patch(f"/v1/billing/admin/networks/{net.slug}", body, format="json")
    assert response.status_code == 200, response.json()
    urls = list(RpcEndpoint.objects.filter(network=net).order_by("position").values_list("url", flat=True))
    assert urls == ["https://second.example.test/abc", RPC_URL]
    assert CANARY not in str(response.json())
    bad = admin_api.patch(
        f"/v1/billing/admin/networks/{net.slug}", {"explorer_tx_url": "https://x.test/tx/"}, format="json"
    )
    assert bad.status_code == 400 and "explorer_tx_url" in bad.json()["error"]["fields"]
    bad = admin_api.patch(f"/v1/billing/admin/networks/{net.slug}", {"chain_id": 1}, format="json")
    assert bad.status_code == 400 and "chain_id" in bad.json()["error"]["fields"]


def test_crypto_config_singleton(admin_api, support_api):
    cat = build_catalog()
    second = f.NetworkFactory(slug="base-sepolia")
    response = admin_api.patch(
        "/v1/billing/admin/crypto-config",
        {"gas_cap_wei": "300000000000", "max_retries": 5, "fallback_networks": ["base-sepolia", "anvil-local"]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["gas_cap_wei"] == "300000000000"
    assert body["fallback_networks"] == ["base-sepolia", "anvil-local"]
    assert [n.pk for n in CryptoConfig.load().fallback_order()] == [second.pk, cat["network"].pk]
    again = admin_api.patch("/v1/billing/admin/crypto-config", {"backoff_base_ms": 100}, format="json").json()
    assert again["fallback_networks"] == ["base-sepolia", "anvil-local"] and again["max_retries"] == 5
    bad = admin_api.patch(
        "/v1/billing/admin/crypto-config", {"backoff_base_ms": 9000, "backoff_max_ms": 10}, format="json"
    )
    assert bad.status_code == 400 and "backoff_max_ms" in bad.json()["error"]["fields"]
    assert support_api.get("/v1/billing/admin/crypto-config").status_code == 200
    assert support_api.patch("/v1/billing/admin/crypto-config", {"max_retries": 1}, format="json").status_code == 403


def test_catalog_writes_are_audited_with_the_token_user(admin_api, billing_admin_user):
    cat = build_catalog()
    admin_api.patch(f"/v1/billing/admin/plans/{cat['plan'].slug}", {"title": "Pro 2"}, format="json")
    entry = LogEntry.objects.get_for_object(cat["plan"]).order_by("-timestamp").first()
    assert entry.actor == billing_admin_user
    assert entry.changes_dict["title"] == ["Pro", "Pro 2"]
    timeline = admin_api.get(f"/v1/billing/admin/audit?model=billing.plan&object_id={cat['plan'].pk}").json()
    first = timeline["results"][0]
    assert first["actor"] == billing_admin_user.username
    assert first["changes"]["title"] == ["Pro", "Pro 2"]


def test_delete_of_a_referenced_row_is_a_conflict(admin_api):
    cat = build_catalog()
    response = admin_api.delete(f"/v1/billing/admin/contracts/{cat['contract'].slug}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "in_use"
