"""User endpoints (/me, notifications, token issue) and operator endpoints (transactions, actions, events,
outbox, audit), plus the canary walk: planted secrets never appear in any API answer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from billing.models import OutboxDelivery, Subscription
from tests import factories as f
from tests.conftest import token_client
from tests.integration.test_access_policy import LIVE, _concrete
from tests.integration.test_api_catalog import CANARY, build_catalog

pytestmark = pytest.mark.django_db


def test_token_issue_and_throttle(plain_user):
    client = token_client(None)
    ok = client.post("/v1/auth/token", {"username": "customer", "password": "pw-customer"}, format="json")
    assert ok.status_code == 200 and len(ok.json()["token"]) == 40
    assert token_client(None).post("/v1/auth/token", {"username": "customer", "password": "no"}).status_code == 400
    me = token_client(None)
    me.credentials(HTTP_AUTHORIZATION=f"Token {ok.json()['token']}")
    assert me.get("/v1/billing/me/settings").status_code == 200
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    rates = {"token": "2/min", "siwe": "2/min", "checkout": "2/min"}
    try:
        with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
            # THROTTLE_RATES is read once at import; point it at the overridden rates for this block.
            SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
            cache.clear()
            codes = [client.post("/v1/auth/token", {"username": "x", "password": "y"}).status_code for _ in range(3)]
            assert codes == [400, 400, 429]
            limited = client.post("/v1/auth/token", {"username": "x", "password": "y"})
            assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
            assert limited.json()["error"]["code"] == "throttled"
            user = token_client(plain_user)
            siwe = [user.post("/v1/profile/wallets/siwe/nonce").status_code for _ in range(3)]
            assert siwe == [201, 201, 429]
    finally:
        # override_settings' exit reloaded api_settings with the real rates; restore the class attribute.
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    assert SimpleRateThrottle.THROTTLE_RATES["token"] == settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"]


def test_me_settings_history_subscription_and_cancel(user_api, plain_user):
    cat = build_catalog()
    assert user_api.get("/v1/billing/me/subscription").status_code == 404
    assert user_api.get("/v1/billing/me/subscription").json()["error"]["code"] == "no_subscription"
    empty = user_api.get("/v1/billing/me/settings").json()
    assert empty["plan"] is None and empty["wallet"] is None and empty["last_payment"] is None
    assert empty["debt"] == {"amount": "0", "token": None, "display": None}

    old = f.ConfirmedTransactionFactory(user=plain_user, plan=cat["plan"])
    old.created_at = timezone.now() - timedelta(days=2)
    old.save()
    newest = f.PaymentTransactionFactory(user=plain_user, plan=cat["plan"], status="failed", failure_reason="reverted")
    f.ConfirmedTransactionFactory(plan=cat["plan"])  # someone else's
    sub = f.SubscriptionFactory(user=plain_user, plan=cat["plan"], debt_amount=2_500_000, debt_token=cat["usdc"])

    bundle = user_api.get("/v1/billing/me/settings").json()
    assert bundle["plan"]["slug"] == "pro-monthly" and bundle["subscription_status"] == "active"
    assert bundle["debt"] == {"amount": "2500000", "token": "USDC", "display": "2.500000"}
    assert bundle["last_payment"]["id"] == str(newest.public_id)
    assert bundle["last_payment"]["status"] == "failed"

    history = user_api.get("/v1/billing/me/history?page_size=1").json()
    assert [h["id"] for h in history["results"]] == [str(newest.public_id)]
    assert history["next"] and "count" not in history
    page2 = user_api.get(history["next"]).json()
    [item] = page2["results"]
    assert item["id"] == str(old.public_id)
    assert item["tx_hash"] == old.tx_hash and item["gas_used"] == 120000
    assert item["fee"] == str(120000 * 2_000_000_000) and item["fee_display"] == "0.000240000000000000"
    assert item["amount"] == "10000000" and item["amount_display"] == "10.000000"
    assert item["explorer_url"] == f"https://explorer.test/tx/{old.tx_hash}"
    assert item["network"] == "anvil-local" and item["token"] == "USDC"

    current = user_api.get("/v1/billing/me/subscription").json()
    assert current["id"] == sub.pk and current["cancel_at_period_end"] is False
    canceled = user_api.post("/v1/billing/me/subscription/cancel")
    assert canceled.status_code == 200 and canceled.json()["cancel_at_period_end"] is True
    assert Subscription.objects.get(pk=sub.pk).status == "active"  # access stays until period end
    assert user_api.post("/v1/billing/me/subscription/cancel").status_code == 200  # idempotent


def test_notifications_are_own_only(user_api, plain_user):
    mine = f.NotificationFactory(user=plain_user, title="Paid")
    f.NotificationFactory(title="Not yours")
    body = user_api.get("/v1/notifications").json()
    assert [n["id"] for n in body["results"]] == [mine.pk]


def test_transactions_filters_cursor_and_detail(support_api):
    cat = build_catalog()
    other_net = f.NetworkFactory(slug="other-net")
    other_contract = f.PaymentContractFactory(slug="pass-other", network=other_net)
    other_plan = f.PlanFactory(
        provider=f.PaymentProviderFactory(slug="prov-other", contract=other_contract), contract=other_contract
    )
    small = f.ConfirmedTransactionFactory(plan=cat["plan"], amount=5)
    big = f.ConfirmedTransactionFactory(plan=cat["plan"], amount=2**200)
    pending = f.PaymentTransactionFactory(plan=cat["plan"])
    elsewhere = f.PaymentTransactionFactory(plan=other_plan, status="failed")
    base = "/v1/billing/admin/transactions"

    def ids(query: str) -> set[str]:
        response = support_api.get(base + query)
        assert response.status_code == 200, response.json()
        return {t["id"] for t in response.json()["results"]}

    assert ids("?status=confirmed") == {str(small.public_id), str(big.public_id)}
    assert ids("?status=failed&status=pending") == {str(pending.public_id), str(elsewhere.public_id)}
    assert ids("?provider=prov-other") == {str(elsewhere.public_id)}
    assert ids("?contract=pass-anvil&status=pending") == {str(pending.public_id)}
    assert ids("?network=other-net") == {str(elsewhere.public_id)}
    assert ids(f"?amount_min={2**199}") == {str(big.public_id)}
    assert ids("?amount_max=5") == {str(small.public_id)}
    tomorrow = (timezone.now() + timedelta(days=1)).isoformat()
    assert ids("?created_after=" + tomorrow.replace("+", "%2B")) == set()
    assert support_api.get(base + "?amount_min=1.5").status_code == 400

    seen, url = [], base + "?page_size=2"
    while url:
        page = support_api.get(url).json()
        assert "count" not in page
        seen += [t["id"] for t in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 4

    detail = support_api.get(f"{base}/{big.public_id}").json()
    assert detail["amount"] == str(2**200) and detail["contract_slug"] == "pass-anvil"
    assert isinstance(detail["status_history"], list)
    assert support_api.get(f"{base}/00000000-0000-0000-0000-000000000000").status_code == 404


def test_refund_is_recorded_and_audited_with_the_actor(admin_api, billing_admin_user):
    cat = build_catalog()
    tx = f.ConfirmedTransactionFactory(plan=cat["plan"])
    url = f"/v1/billing/admin/transactions/{tx.public_id}/refund"
    assert admin_api.post(url, {}, format="json").status_code == 400  # a reason is required
    response = admin_api.post(url, {"reason": "customer asked"}, format="json")
    # No operator key in the test settings: validated and recorded, nothing sent.
    assert response.status_code == 202, response.json()
    assert response.json()["result"] == "refund_requested"
    entry = LogEntry.objects.get_for_object(tx).order_by("-timestamp").first()
    assert entry.actor == billing_admin_user
    assert entry.changes_dict["operator_action"] == [None, "refund_requested"]
    assert entry.additional_data["reason"] == "customer asked"

    pending = f.PaymentTransactionFactory(plan=cat["plan"])
    refused = admin_api.post(
        f"/v1/billing/admin/transactions/{pending.public_id}/refund", {"reason": "x"}, format="json"
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "refund_not_allowed"


def test_reprocess_reruns_stored_deliveries_and_is_audited(admin_api, billing_admin_user):
    cat = build_catalog()
    cat["network"].rpc_endpoints.update(url="http://127.0.0.1:9/")  # chain unreachable: fast failure
    cat["contract"].fallback_rpc = ""
    cat["contract"].save()
    tx = f.ConfirmedTransactionFactory(plan=cat["plan"])
    url = f"/v1/billing/admin/transactions/{tx.public_id}/reprocess"
    nothing = admin_api.post(url, {"reason": "retry"}, format="json")
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "nothing_to_reprocess"
    event = f.InboundEventFactory(
        contract=cat["contract"], tx_hash=tx.tx_hash, status="failed", payload={"tx_hash": tx.tx_hash}
    )
    response = admin_api.post(url, {"reason": "retry"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["result"] == "reprocessed" and f"#{event.pk}" in response.json()["detail"]
    entry = LogEntry.objects.get_for_object(tx).order_by("-timestamp").first()
    assert entry.actor == billing_admin_user and entry.changes_dict["operator_action"][1] == "reprocessed"


def test_contract_events_timeline_cursor(support_api):
    cat = build_catalog()
    events = [f.ChainEventFactory(contract=cat["contract"], block_number=100 + i, log_index=0) for i in range(5)]
    f.ChainEventFactory(contract=cat["contract"], block_number=104, log_index=3)
    url = f"/v1/billing/admin/contracts/{cat['contract'].slug}/events?page_size=2"
    order = []
    while url:
        page = support_api.get(url).json()
        order += [(e["block_number"], e["log_index"]) for e in page["results"]]
        url = page["next"]
    assert order == [(104, 3), (104, 0), (103, 0), (102, 0), (101, 0), (100, 0)]
    first = support_api.get(f"/v1/billing/admin/contracts/{cat['contract'].slug}/events").json()["results"][0]
    assert first["explorer_tx_url"].startswith("https://explorer.test/tx/0x")
    assert len(events) == 5


def test_outbox_list_dead_letters_and_replay(admin_api, support_api):
    dead = f.OutboxDeliveryFactory(status="dead", attempts=8, last_error="HTTP 500")
    f.OutboxDeliveryFactory(status="delivered")
    body = support_api.get("/v1/billing/admin/outbox?status=dead").json()
    assert [d["id"] for d in body["results"]] == [dead.pk]
    assert support_api.post(f"/v1/billing/admin/outbox/{dead.pk}/replay").status_code == 403
    response = admin_api.post(f"/v1/billing/admin/outbox/{dead.pk}/replay")
    assert response.status_code == 200, response.json()
    dead.refresh_from_db()
    assert dead.status == OutboxDelivery.Status.PENDING and dead.next_attempt_at is not None


def _walk_json_get_urls(client, objects) -> list[tuple[str, str]]:
    bodies = []
    for (method, _path), raw in sorted(LIVE.items()):
        if method != "GET" or raw.startswith("/api/docs"):
            continue
        url = _concrete(raw, objects)
        response = client.get(url)
        body = response.content.decode(errors="replace")
        bodies.append((url, body))
    return bodies


def test_canary_secrets_never_appear_in_api_answers(admin_api, support_api, user_api, plain_user, settings):
    signer_key = "0x" + "ab" * 8 + CANARY.encode().hex()[: 64 - 16]
    settings.BILLING_QUOTE_SIGNER_KEY = signer_key
    objects = build_catalog()
    objects["tx"] = f.ConfirmedTransactionFactory(user=plain_user, plan=objects["plan"])
    objects["delivery"] = f.OutboxDeliveryFactory(status="dead")
    f.ChainEventFactory(contract=objects["contract"])
    # Writes that carry secrets, through the API, so the audit log sees them too.
    admin_api.patch(
        f"/v1/billing/admin/contracts/{objects['contract'].slug}",
        {"webhook_secret": f"rotated-{CANARY}-secret", "fallback_rpc": f"https://fb2.example.test/{CANARY}"},
        format="json",
    )
    admin_api.patch(
        f"/v1/billing/admin/networks/{objects['network'].slug}",
        {"rpc_endpoints": [{"url": f"https://rpc2.example.test/{CANARY}", "timeout_seconds": "2.00"}]},
        format="json",
    )
    leaks = []
    for client in (admin_api, support_api, user_api):
        for url, body in _walk_json_get_urls(client, objects):
            if CANARY in body or signer_key[2:] in body:
                leaks.append(url)
    # The canary really is stored (so the walk above could have found it).
    objects["contract"].refresh_from_db()
    assert CANARY in objects["contract"].webhook_secret and CANARY in objects["contract"].previous_webhook_secret
    assert objects["network"].rpc_endpoints.filter(url__contains=CANARY).exists()
    assert len(_walk_json_get_urls(admin_api, objects)) > 20
    assert not leaks, f"canary leaked in {leaks}"
