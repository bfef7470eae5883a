"""Who changed what (issue 13): catalog edits in the console and through the token API, role grants,
wallets and quota grants, and operator actions are audit entries naming the acting user; secret fields are
recorded as changed without their values, RPC URLs with scheme and host only."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry

from billing import models as m
from billing.roles import SUPPORT
from billing.services.operator import acting_user
from tests import factories as f
from tests.integration.test_admin import change_url, form_data, login
from tests.integration.test_api_catalog import build_catalog

pytestmark = pytest.mark.django_db


def latest(obj) -> LogEntry:
    return LogEntry.objects.get_for_object(obj).order_by("-timestamp", "-id").first()


def test_plan_changed_in_the_console_is_audited_with_the_user_and_the_diff(billing_admin_user):
    cat = build_catalog()
    plan = cat["plan"]
    client = login(billing_admin_user)
    data = form_data(client.get(change_url(plan)))
    data["title"] = "Pro (yearly soon)"
    data["price_amount"] = str(plan.price_amount * 2)
    response = client.post(change_url(plan), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    entry = latest(plan)
    assert entry.actor == billing_admin_user and entry.action == LogEntry.Action.UPDATE
    assert entry.changes_dict["title"] == [plan.title, "Pro (yearly soon)"]
    assert entry.changes_dict["price_amount"] == [str(plan.price_amount), str(plan.price_amount * 2)]


def test_webhook_secret_change_is_audited_without_the_secret(admin_api, billing_admin_user):
    contract = f.PaymentContractFactory(webhook_secret="whsec_OLD_aaaaaaaaaaaaaaaa")
    response = admin_api.patch(
        f"/v1/billing/admin/contracts/{contract.slug}",
        {"webhook_secret": "whsec_NEW_bbbbbbbbbbbbbbbb"},
        format="json",
    )
    assert response.status_code == 200, response.content
    contract.refresh_from_db()
    assert contract.webhook_secret == "whsec_NEW_bbbbbbbbbbbbbbbb"  # it really changed
    entry = latest(contract)
    assert entry.actor == billing_admin_user
    assert entry.changes_dict["webhook_secret"] == ["****", "****"]  # changed, and nothing more
    assert "previous_webhook_secret" in entry.changes_dict and "secret_rotated_at" in entry.changes_dict
    stored = str(entry.changes) + str(entry.additional_data) + str(entry.serialized_data)
    for secret in ("whsec_OLD", "whsec_NEW", "aaaaaaaa", "bbbbbbbb"):
        assert secret not in stored


def test_rpc_url_change_is_audited_with_the_url_masked(admin_api, billing_admin_user):
    cat = build_catalog()
    endpoint = cat["network"].rpc_endpoints.first()
    with acting_user(billing_admin_user):
        endpoint.url = "https://rpc.provider.example/v3/URLKEY0123456789"
        endpoint.save()
    entry = latest(endpoint)
    assert entry.actor == billing_admin_user
    old, new = entry.changes_dict["url"]
    assert new == "https://rpc.provider.example/****"
    assert "URLKEY" not in str(entry.changes) and "URLKEY" not in entry.object_repr


def test_role_grants_wallets_and_quota_grants_are_audited(billing_admin_user, roles, django_user_model):
    grantee = f.UserFactory()
    with acting_user(billing_admin_user):
        grantee.groups.add(roles[SUPPORT])
        grantee.is_staff = True
        grantee.save()
    entries = LogEntry.objects.get_for_object(grantee).order_by("id")
    grant = next(e for e in entries if "groups" in e.changes_dict)
    assert grant.actor == billing_admin_user
    assert grant.changes_dict["groups"]["operation"] == "add"
    staff = next(e for e in entries if e.action == LogEntry.Action.UPDATE and "is_staff" in e.changes_dict)
    assert staff.changes_dict["is_staff"] == ["False", "True"] and staff.actor == billing_admin_user
    assert not any("password" in e.changes_dict for e in entries)

    wallet = f.WalletFactory(user=grantee)
    quota = f.QuotaGrantFactory(user=grantee, plan_slug="pro")
    assert latest(wallet).action == LogEntry.Action.CREATE and wallet.address in str(latest(wallet).changes)
    quota.plan_slug = "starter"
    quota.save()
    assert latest(quota).changes_dict["plan_slug"] == ["pro", "starter"]


def test_outbox_replay_and_test_connection_through_the_token_api_name_the_token_user(admin_api, billing_admin_user):
    cat = build_catalog()
    cat["network"].rpc_endpoints.update(url="http://127.0.0.1:9/")  # refused at once: a fast, real probe
    dead = f.OutboxDeliveryFactory(status="dead", attempts=8, max_attempts=8)
    response = admin_api.post(f"/v1/billing/admin/outbox/{dead.pk}/replay", {}, format="json")
    assert response.status_code in (200, 202), response.content
    entry = latest(dead)
    assert entry.actor == billing_admin_user and entry.changes_dict["operator_action"] == [None, "replayed"]

    response = admin_api.post("/v1/billing/admin/crypto-config/test-connection", {}, format="json")
    assert response.status_code == 200, response.content
    entry = latest(m.CryptoConfig.load())
    assert entry.actor == billing_admin_user and entry.changes_dict["operator_action"] == [None, "test_connection"]
    assert cat["network"].slug in entry.additional_data["networks"]
