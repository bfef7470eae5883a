"""Example responses of the main endpoints, kept as JSON under tests/snapshots/ and compared with the live
answers (ids, timestamps, hashes, addresses and cursors normalized). Clients (console, frontend) build on
these shapes. Regenerate after an intended change: UPDATE_SNAPSHOTS=1 pytest tests/integration/test_api_snapshots.py
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache

from billing.models import SubscriptionPeriod
from billing.services.subscriptions import subscription_apply_payment
from profiles.models import Wallet
from tests import factories as f
from tests.integration.test_api_catalog import build_catalog

pytestmark = pytest.mark.django_db

SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"
DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HASH = re.compile(r"0x[0-9a-fA-F]{64}")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
ID_KEYS = {"id", "user_id", "endpoint_id"}


def normalize(value, key: str | None = None):
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if key in ID_KEYS and isinstance(value, int):
        return "<id>"
    if key in ("next", "previous") and isinstance(value, str):
        return "<cursor-url>"
    if isinstance(value, str):
        value = DATETIME.sub("<datetime>", value)
        value = UUID.sub("<uuid>", value)
        value = HASH.sub("<hash>", value)
        return ADDRESS.sub("<address>", value)
    return value


def check(name: str, response) -> None:
    assert response.status_code in (200, 201), (name, response.status_code, response.content[:500])
    live = normalize(response.json())
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(live, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"missing snapshot {path}; run with UPDATE_SNAPSHOTS=1 once"
    assert live == json.loads(path.read_text()), f"{name} differs from {path}"


@pytest.fixture
def world(plain_user):
    cache.clear()
    objects = build_catalog()
    plan = objects["plan"]
    objects["tx"] = f.ConfirmedTransactionFactory(
        user=plain_user, plan=plan, payer_address=f.random_address(), block_number=1001
    )
    sub = subscription_apply_payment(tx=objects["tx"])
    # A queued period (an operator's grant, no payment) so the answers show queued_periods.
    SubscriptionPeriod.objects.create(
        subscription=sub,
        plan=plan,
        starts_at=sub.current_period_end,
        ends_at=sub.current_period_end + timedelta(days=30),
        kind="admin",
    )
    Wallet.objects.create(user=plain_user, address=f.random_address(), chain_id=31337, verified_at=plan.created_at)
    f.NotificationFactory(user=plain_user, title="Payment confirmed", body="Your Pro plan is active.")
    f.ChainEventFactory(
        contract=objects["contract"], name="Paid", block_number=120, transaction=objects["tx"], amount=10_000_000
    )
    f.OutboxDeliveryFactory(status="dead", attempts=8, last_error="HTTP 503 from quota")
    return objects


def test_public_and_user_snapshots(world, api_client, user_api):
    check("plans", api_client.get("/v1/billing/plans"))
    check("me_settings", user_api.get("/v1/billing/me/settings"))
    check("me_history", user_api.get("/v1/billing/me/history"))
    check("me_subscription", user_api.get("/v1/billing/me/subscription"))
    check("notifications", user_api.get("/v1/notifications"))
    check("profile_wallets", user_api.get("/v1/profile/wallets"))


def test_admin_snapshots(world, admin_api):
    check("admin_plan", admin_api.get(f"/v1/billing/admin/plans/{world['plan'].slug}"))
    check("admin_provider", admin_api.get(f"/v1/billing/admin/providers/{world['provider'].slug}"))
    check("admin_contract", admin_api.get(f"/v1/billing/admin/contracts/{world['contract'].slug}"))
    check("admin_network", admin_api.get(f"/v1/billing/admin/networks/{world['network'].slug}"))
    check("admin_tokens", admin_api.get("/v1/billing/admin/tokens"))
    check("admin_crypto_config", admin_api.get("/v1/billing/admin/crypto-config"))
    check("admin_transaction", admin_api.get(f"/v1/billing/admin/transactions/{world['tx'].public_id}"))
    check("admin_contract_events", admin_api.get(f"/v1/billing/admin/contracts/{world['contract'].slug}/events"))
    check("admin_outbox", admin_api.get("/v1/billing/admin/outbox?status=dead"))
