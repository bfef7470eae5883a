"""Canary secrets — a webhook secret (current and previous), an RPC provider key and the quote signer's and
operator's private keys — drive a whole flow (checkout, payment, webhook, confirmation, refund, admin pages,
admin API, audit, metrics) and never appear in any response, page, log line, audit entry or /metrics."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from auditlog.models import LogEntry
from django.urls import reverse

from billing.models import PaymentTransaction, RpcEndpoint
from billing.services.receipts import transaction_check_receipt
from billing.services.webhooks import inbound_event_process
from tests.anvil import ANVIL_KEYS
from tests.integration.lifecycle.conftest import PAYERS, send_steps, signed_webhook, webhook_body

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

CANARY_WHSEC = "whsec_CANARY_current_7f3a9c"
CANARY_PREVIOUS = "whsec_CANARY_previous_51be02"
CANARY_RPC = "CANARYRPCKEY4d2e"


def stored_errors() -> dict[str, str]:
    """Every stored error text in the project's apps (outbox and notification last_error, inbound, delivery and
    operator transaction errors, RPC endpoint health, cursor errors, refund errors, failure reasons): any
    text field whose name says error or failure, row by row."""
    from django.apps import apps
    from django.db import models

    found: dict[str, str] = {}
    for app in ("billing", "notifications", "profiles"):
        for model in apps.get_app_config(app).get_models():
            fields = [
                f.name
                for f in model._meta.concrete_fields
                if isinstance(f, (models.CharField, models.TextField)) and ("error" in f.name or "failure" in f.name)
            ]
            for field in fields:
                values = [v for v in model.objects.values_list(field, flat=True) if v]
                if values:
                    found[f"{model._meta.label}.{field}"] = "\n".join(values)
    return found


@pytest.fixture
def all_logs():
    """Every log line of the test, formatted by the project's JSON formatter, at DEBUG."""
    project = next(
        h for h in logging.getLogger().handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    )
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(project.formatter)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_canaries_never_leak(
    chain, world, user_api, admin_api, support_api, api_client, client, billing_admin_user, all_logs
):
    contract = world.contract
    contract.webhook_secret = CANARY_PREVIOUS
    contract.save()
    contract.rotate_webhook_secret(CANARY_WHSEC)
    contract.fallback_rpc = f"https://fallback.example/{CANARY_RPC}"
    contract.save()
    RpcEndpoint.objects.filter(network=world.network).update(url=f"{chain.anvil.url}/?apikey={CANARY_RPC}")
    RpcEndpoint.objects.create(network=world.network, position=5, url=f"http://127.0.0.1:9/{CANARY_RPC}")
    seen: list[str] = []
    walked: list[str] = []

    def keep(response, expected: int = 200):
        """Keep what a walked response shows; it must be the answer the flow expects, never an error page
        (an error page that leaks nothing would prove nothing)."""
        seen.append(response.content.decode(errors="replace"))
        where = f"{response.request['REQUEST_METHOD']} {response.request['PATH_INFO']}"
        walked.append(where)
        assert response.status_code == expected, f"{where}: {response.status_code} {seen[-1][:300]}"
        return response

    # A whole payment: checkout, wallet steps, tx report, signed webhook, confirmation at depth, refund.
    body = keep(
        user_api.post("/v1/billing/checkout", {"plan": "eth-pro", "wallet": PAYERS[0].address}, format="json"),
        201,
    ).json()
    (tx_hash,) = send_steps(chain, PAYERS[0], body["payment"])
    keep(user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": tx_hash}, format="json"))
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    raw, signature = signed_webhook(webhook_body(chain, tx, tx_hash=tx_hash, delivery_id="canary-1"), CANARY_WHSEC)
    keep(
        api_client.post(
            f"/v1/billing/webhooks/contracts/{contract.slug}",
            raw,
            content_type="application/json",
            HTTP_X_BILLING_SIGNATURE=signature,
        ),
        202,
    )
    _, bad = signed_webhook({"id": "x"}, "wrong")
    keep(
        api_client.post(
            f"/v1/billing/webhooks/contracts/{contract.slug}",
            raw,
            content_type="application/json",
            HTTP_X_BILLING_SIGNATURE=bad,
        ),
        401,  # refused: the one error this walk expects
    )
    chain.anvil.mine(2)
    inbound_event_process(event_id=contract.inbound_events.get(delivery_id="canary-1").pk)
    transaction_check_receipt(transaction_id=tx.pk)
    keep(admin_api.post(f"/v1/billing/admin/transactions/{body['id']}/refund", {"reason": "canary"}, format="json"))
    keep(admin_api.post("/v1/billing/admin/crypto-config/test-connection", {}, format="json"))

    # Every read a client or an operator makes.
    for path in [
        "/v1/billing/plans",
        "/v1/billing/me/settings",
        "/v1/billing/me/history",
        "/v1/billing/me/subscription",
        f"/v1/billing/checkout/{body['id']}",
        "/v1/notifications",
    ]:
        keep(user_api.get(path))
    admin_paths = [
        "plans",
        "providers",
        "contracts",
        f"contracts/{contract.slug}",
        f"contracts/{contract.slug}/events",
        "networks",
        f"networks/{world.network.slug}",
        "tokens",
        "crypto-config",
        "transactions",
        f"transactions/{body['id']}",
        "outbox",
        f"audit?model=billing.paymentcontract&object_id={contract.pk}",
        f"audit?model=billing.rpcendpoint&object_id={world.network.rpc_endpoints.first().pk}",
    ]
    for api in (admin_api, support_api):
        for path in admin_paths:
            keep(api.get(f"/v1/billing/admin/{path}"))
    keep(api_client.get("/metrics"))
    keep(api_client.get("/api/schema/"))

    # The console.
    client.force_login(billing_admin_user)
    billing_admin_user.is_superuser = True  # every admin page, whatever the role's permissions
    billing_admin_user.save()
    for url in [
        reverse("admin:billing_paymentcontract_change", args=[contract.pk]),
        reverse("admin:billing_paymentcontract_changelist"),
        reverse("admin:billing_paymentcontract_history", args=[contract.pk]),
        reverse("admin:billing_network_change", args=[world.network.pk]),
        reverse("admin:billing_rpcendpoint_changelist"),
        reverse("admin:billing_paymenttransaction_change", args=[tx.pk]),
        reverse("admin:billing_operatortransaction_changelist"),
        reverse("admin:billing_inboundevent_changelist"),
        reverse("admin:auditlog_logentry_changelist"),
    ]:
        response = keep(client.get(url))
        assert response.status_code == 200, url

    audit = " ".join(str(e.changes) + str(e.additional_data) for e in LogEntry.objects.all())
    logs = all_logs.getvalue()
    assert "refund" in logs and "webhook.bad_signature" in logs  # the flow really ran and logged
    secrets = {
        "webhook secret": CANARY_WHSEC,
        "previous webhook secret": CANARY_PREVIOUS,
        "RPC key": CANARY_RPC,
        "quote signer key": ANVIL_KEYS[1][2:],
        "operator key": ANVIL_KEYS[0][2:],
    }
    errors = stored_errors()
    # The dead endpoint's probe (test-connection) was recorded: there is something to scan.
    assert "billing.RpcEndpoint.last_error" in errors, sorted(errors)
    places = {"responses and pages": "\n".join(seen), "log lines": logs, "audit entries": audit}
    places.update({f"stored error {name}": text for name, text in errors.items()})
    for where, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in {where}"


CANARY_HOOK = "CANARYHOOKTOKEN9e1f"


def test_delivery_errors_never_store_the_url_token(
    settings, admin_api, support_api, client, billing_admin_user, all_logs
):
    """Outbox deliveries to an external subscriber and ops-webhook deliveries fail against URLs whose path
    and query carry a token (a Slack-style webhook); the stored errors (delivery, attempt log, notification),
    the admin API and pages and the log lines name the host, never the token."""
    from django.db import transaction

    from billing.models import DeliveryAttempt, OutboxDelivery
    from billing.services.notices import ops_notice
    from billing.services.outbox import outbox_delivery_attempt
    from notifications.models import Notification
    from notifications.services import notification_deliver

    # Port 9 (discard) refuses: requests' error text then carries the request path ("with url: /...").
    settings.BILLING_EXTERNAL_SUBSCRIBERS = [
        {
            "name": "crm",
            "url": f"http://127.0.0.1:9/services/T0/{CANARY_HOOK}?token={CANARY_HOOK}",
            "secret": "s",
            "topics": ["ops.notice.v1"],
        }
    ]
    settings.NOTIFICATIONS_OPS_WEBHOOK_URL = f"http://127.0.0.1:9/hooks/{CANARY_HOOK}"
    with transaction.atomic():
        ops_notice(kind="dead_letter", key="canary:1", title="Canary notice")
    for delivery in OutboxDelivery.objects.all():
        outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
    crm = OutboxDelivery.objects.get(subscriber="crm")
    note = Notification.objects.get(dedupe_key="ops:canary:1")
    assert notification_deliver(notification_id=note.pk) == "retry"
    note.refresh_from_db()
    # The failures really happened and were recorded (with the host, so the operator can tell which one).
    assert crm.attempts == 1 and "127.0.0.1" in crm.last_error and "Max retries" in crm.last_error
    assert "127.0.0.1" in note.last_error and "Connection" in note.last_error

    seen = [
        crm.last_error,
        note.last_error,
        " ".join(DeliveryAttempt.objects.values_list("error", flat=True)),
        admin_api.get("/v1/billing/admin/outbox").content.decode(),
        support_api.get("/v1/billing/admin/outbox").content.decode(),
    ]
    client.force_login(billing_admin_user)
    billing_admin_user.is_superuser = True
    billing_admin_user.save()
    for url in [
        reverse("admin:billing_outboxdelivery_changelist"),
        reverse("admin:billing_outboxdelivery_change", args=[crm.pk]),
        reverse("admin:notifications_notification_changelist"),
        reverse("admin:notifications_notification_change", args=[note.pk]),
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        seen.append(response.content.decode(errors="replace"))
    logs = all_logs.getvalue()
    assert "outbox.attempt" in logs and "notification.delivery_failed" in logs
    for where, text in {"stored errors, API and pages": "\n".join(seen), "log lines": logs}.items():
        assert CANARY_HOOK not in text, f"the webhook URL token appears in {where}"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_never_logs_or_stores_a_secret():
    """A real `celery worker` (Redis db 15, DEBUG logs) runs the follower against RPC endpoints whose URLs
    carry a key (the primary and the fallback both refuse) and delivers an ops notice to an external
    subscriber and to the ops webhook whose URLs carry a token (both refuse). The failures are logged and
    stored; the worker's whole output and every stored error name no key and no token."""
    from celery import Celery
    from django.db import transaction

    from billing.models import ChainCursor, OutboxDelivery
    from billing.services.notices import ops_notice
    from notifications.models import Notification
    from tests.integration.test_api_catalog import build_catalog
    from tests.processes import CeleryWorker, redis_broker, wait_until

    objects = build_catalog()
    contract = objects["contract"]
    contract.webhook_secret = CANARY_PREVIOUS
    contract.save()
    contract.rotate_webhook_secret(CANARY_WHSEC)
    contract.fallback_rpc = f"http://127.0.0.1:9/fallback/{CANARY_RPC}"
    contract.save()
    RpcEndpoint.objects.update(url=f"http://127.0.0.1:9/?apikey={CANARY_RPC}")
    subscribers = json.dumps(
        [
            {
                "name": "crm",
                "url": f"http://127.0.0.1:9/services/T0/{CANARY_HOOK}?token={CANARY_HOOK}",
                "secret": CANARY_WHSEC,
                "topics": ["ops.notice.v1"],
            }
        ]
    )
    env = {
        "LOG_LEVEL": "DEBUG",
        "BILLING_EXTERNAL_SUBSCRIBERS": subscribers,
        "NOTIFICATIONS_OPS_WEBHOOK_URL": f"http://127.0.0.1:9/hooks/{CANARY_HOOK}",
    }
    with transaction.atomic():
        ops_notice(kind="dead_letter", key="canary:worker", title="Canary notice")
    broker = redis_broker(10)  # 15 is the outbox relay kill test's: files may run at once (xdist)
    sender = Celery("billing-canary-test", broker=broker)
    with CeleryWorker("canary", broker=broker, env=env) as worker:
        sender.send_task("billing.tasks.contract_sync_task", args=[contract.pk])
        for delivery in OutboxDelivery.objects.all():
            sender.send_task("billing.tasks.outbox_deliver", args=[delivery.pk])

        def failures_recorded() -> bool:
            cursor = ChainCursor.objects.filter(contract=contract).first()
            return bool(cursor and cursor.last_error) and all(
                d.attempts >= 1 for d in OutboxDelivery.objects.filter(subscriber="crm")
            )

        wait_until(failures_recorded, timeout=60, what="the sync failure and the delivery attempt", alive=worker.alive)
        # The ops notice reaches notifications through its own outbox delivery, which the worker may not have
        # made yet: wait for the row rather than skip the ops webhook's failure.
        wait_until(
            lambda: Notification.objects.filter(dedupe_key="ops:canary:worker").exists(),
            timeout=60,
            what="the ops notice's notification",
            alive=worker.alive,
        )
        note = Notification.objects.get(dedupe_key="ops:canary:worker")
        sender.send_task("notifications.tasks.notification_deliver_task", args=[note.pk])
        wait_until(
            lambda: bool(Notification.objects.get(pk=note.pk).last_error),
            timeout=30,
            what="the ops webhook failure",
            alive=worker.alive,
        )
        output = worker.output()
    sender.close()
    # The worker really ran the tasks and said why they failed.
    assert "chain.sync_failed" in output and "notification.delivery_failed" in output, output[-3000:]
    errors = stored_errors()
    assert {"billing.ChainCursor.last_error", "billing.OutboxDelivery.last_error"} <= set(errors), sorted(errors)
    assert "127.0.0.1" in errors["billing.OutboxDelivery.last_error"]
    secrets = {
        "RPC key": CANARY_RPC,
        "subscriber URL token": CANARY_HOOK,
        "webhook secret": CANARY_WHSEC,
        "previous webhook secret": CANARY_PREVIOUS,
    }
    places = {"the worker's output": output, **{f"stored error {k}": v for k, v in errors.items()}}
    for where, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in {where}"
