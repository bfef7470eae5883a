"""/readyz degrades instead of failing on one RPC endpoint, /metrics asks for its bearer token, the
scrape-time database gauges read what the rows say, and the settings checks name a bad dotted path."""

from __future__ import annotations

import hmac
import os
import signal
import subprocess
import sys

import pytest
from django.core.checks import run_checks
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from billing_project import devstack
from tests import factories as f


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


# --- /readyz ---------------------------------------------------------------------------------------------


@pytest.fixture
def networks(db):
    from billing.models import Network

    Network.objects.update(enabled=False)  # whatever migrations seeded: this test's networks only
    net = f.NetworkFactory(slug="ready-net")
    first = f.RpcEndpointFactory(network=net, position=0)
    second = f.RpcEndpointFactory(network=net, position=1)
    return net, first, second


def test_readyz_is_ready_when_every_endpoint_is_healthy(client, networks):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["networks"]["detail"]["ready-net"] == {"healthy_endpoints": 2, "endpoints": 2, "down": []}


def test_one_endpoint_down_is_degraded_not_unready(client, networks):
    net, first, second = networks
    first.healthy = False
    first.consecutive_failures = 4
    first.url = "https://rpc.example/SECRETKEY123"
    first.save()
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["networks"]["degraded"] is True
    detail = body["checks"]["networks"]["detail"]["ready-net"]
    assert detail["healthy_endpoints"] == 1
    assert detail["down"] == [{"id": first.pk, "position": 0, "consecutive_failures": 4}]
    assert b"SECRETKEY123" not in response.content and b"rpc.example" not in response.content


def test_a_network_without_a_healthy_endpoint_is_not_ready(client, networks):
    net, first, second = networks
    for endpoint in (first, second):
        endpoint.healthy = False
        endpoint.save()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"


@pytest.mark.slow
def test_readyz_is_503_when_the_database_is_down():
    """A real process whose database does not answer (nothing listens on the port)."""
    port = devstack.free_port()
    code = (
        "import django, json; django.setup(); from django.test import Client; "
        "r = Client().get('/readyz'); print(r.status_code); print(r.content.decode())"
    )
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/nothing",
        "CELERY_BROKER_URL": "memory://",
        "DJANGO_SETTINGS_MODULE": "billing_project.settings",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=devstack.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status, body = done.stdout.strip().splitlines()[-2:]
    assert status == "503", done.stdout
    assert '"status": "not_ready"' in body and '"database": {"ok": false' in body


# --- /metrics ------------------------------------------------------------------------------------------


def test_metrics_without_a_token_setting_is_open(client, db, settings):
    settings.METRICS_BEARER_TOKEN = ""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"billing_metrics_database_up 1.0" in response.content


def test_metrics_requires_the_bearer_token_when_set(client, db, settings, monkeypatch):
    settings.METRICS_BEARER_TOKEN = "scrape-token-123"
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "Token scrape-token-123"}):
        response = client.get("/metrics", **headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"billing_" not in response.content and b"scrape-token-123" not in response.content

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-123")
    assert response.status_code == 200
    assert b"billing_metrics_database_up 1.0" in response.content
    assert compared == [(b"scrape-token-123", b"scrape-token-123")]  # the comparison is the constant-time one


def test_database_gauges_follow_the_rows(client, db, settings):
    settings.METRICS_BEARER_TOKEN = ""
    from billing.models import OperatorTransaction, OutboxDelivery, TxStatus

    net = f.NetworkFactory(slug="gauge-net")
    token = f.TokenFactory(network=net, symbol="GUSD")
    contract = f.PaymentContractFactory(network=net, slug="gauge-pass")
    plan = f.PlanFactory(slug="gauge-pro")
    before = _samples(client.get("/metrics").content.decode())
    key = ("billing_transactions_open", (("network", "gauge-net"), ("status", "needs_review")))
    assert before[key] == 0  # every status has its series before anything happens

    old = timezone.now() - timezone.timedelta(minutes=20)
    for _ in range(3):
        f.PaymentTransactionFactory(contract=contract, network=net, token=token, status=TxStatus.NEEDS_REVIEW)
    submitted = f.PaymentTransactionFactory(
        contract=contract, network=net, token=token, status=TxStatus.SUBMITTED, tx_hash=f.random_hash()
    )
    type(submitted).objects.filter(pk=submitted.pk).update(submitted_at=old)
    f.ConfirmedTransactionFactory(contract=contract, network=net, token=token)
    f.SubscriptionFactory(plan=plan, status="active")
    f.SubscriptionFactory(plan=plan, status="active")
    f.SubscriptionFactory(plan=plan, status="expired")
    dead = f.OutboxDeliveryFactory(subscriber="quota", status=OutboxDelivery.Status.DEAD)
    f.OutboxDeliveryFactory(subscriber="quota", status=OutboxDelivery.Status.PENDING, next_attempt_at=old)
    f.OperatorTransactionFactory(network=net, status=OperatorTransaction.Status.FAILED)
    f.ChainCursorFactory(contract=contract, last_block=1234, last_run_at=old, last_error="boom")

    after = _samples(client.get("/metrics").content.decode())
    assert after[key] == 3
    assert after[("billing_transactions_open", (("network", "gauge-net"), ("status", "submitted")))] == 1
    assert 20 * 60 <= after[("billing_transactions_oldest_age_seconds", (("status", "submitted"),))] < 30 * 60
    assert after[("billing_subscriptions_live", (("plan", "gauge-pro"), ("status", "active")))] == 2
    assert ("billing_subscriptions_live", (("plan", "gauge-pro"), ("status", "expired"))) not in after
    assert after[("billing_outbox_deliveries", (("status", "dead"), ("subscriber", "quota")))] == 1
    assert after[("billing_outbox_deliveries", (("status", "pending"), ("subscriber", "quota")))] == 1
    assert after[("billing_outbox_oldest_due_seconds", ())] >= 20 * 60
    assert after[("billing_operator_transactions", (("kind", "refund"), ("state", "failed")))] == 1
    assert after[("billing_follower_cursor_block", (("contract", "gauge-pass"),))] == 1234
    assert after[("billing_follower_failing", (("contract", "gauge-pass"),))] == 1
    assert after[("billing_follower_last_run_age_seconds", (("contract", "gauge-pass"),))] >= 20 * 60
    # a confirmed payment is not an open one: the gauge never counts the ledger
    assert sum(v for (name, labels), v in after.items() if name == "billing_transactions_open") == 4 + sum(
        v for (name, labels), v in before.items() if name == "billing_transactions_open"
    )
    dead.delete()
    assert (
        _samples(client.get("/metrics").content.decode())[
            ("billing_outbox_deliveries", (("status", "dead"), ("subscriber", "quota")))
        ]
        == 0
    )


def test_database_gauges_are_a_few_small_statements(client, db, settings, django_assert_max_num_queries):
    settings.METRICS_BEARER_TOKEN = ""
    # savepoint + timeout + 10 reads + timeout back + release, whatever the rows
    with django_assert_max_num_queries(14):
        assert client.get("/metrics").status_code == 200


# --- system checks ---------------------------------------------------------------------------------------


def _errors(ids=("billing.E002", "billing.E005", "billing.E006")):
    return [m for m in run_checks() if m.id in ids]


def test_every_configured_dotted_path_imports(settings):
    assert _errors() == []


def test_a_bad_subscriber_path_is_a_check_error_that_names_it(settings):
    settings.BILLING_OUTBOX_INTERNAL_SUBSCRIBERS = {
        **settings.BILLING_OUTBOX_INTERNAL_SUBSCRIBERS,
        "plan.changed.v1": {"quota": "profiles.quota.no_such_handler", "n": "billing.metrics.RPC_REQUESTS"},
    }
    messages = [m.msg for m in _errors()]
    assert any("'profiles.quota.no_such_handler' cannot be imported" in m for m in messages), messages
    assert any("'billing.metrics.RPC_REQUESTS' is not callable" in m for m in messages), messages


def test_a_bad_provider_path_and_external_subscriber_are_check_errors(settings):
    settings.BILLING_PROVIDERS = {"evm": "billing.adapters.nope.Missing"}
    settings.BILLING_EXTERNAL_SUBSCRIBERS = [{"name": "crm", "url": "ftp://crm.example/KEY", "secret": "s3cr3t"}, {}]
    messages = [m.msg for m in _errors()]
    assert any("'billing.adapters.nope.Missing' cannot be imported" in m for m in messages), messages
    assert any("'crm' needs an http(s) url" in m for m in messages), messages
    assert any("BILLING_EXTERNAL_SUBSCRIBERS[1] has no name" in m for m in messages), messages
    assert not any("KEY" in m or "s3cr3t" in m for m in messages)


@pytest.mark.slow
def test_manage_check_fails_at_startup_on_a_bad_path(tmp_path):
    env = {**os.environ, "BILLING_EXTERNAL_SUBSCRIBERS": '[{"name": "crm"}]', "CELERY_BROKER_URL": "memory://"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=devstack.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "billing.E006" in done.stderr and "'crm' needs an http(s) url" in done.stderr


# --- hot-path counters ------------------------------------------------------------------------------------


def test_status_changes_are_counted_when_they_commit_and_not_when_rolled_back(db, django_capture_on_commit_callbacks):
    from django.db import transaction

    from billing import metrics
    from billing.models import TxStatus
    from billing.services.ledger import transaction_set_status

    net = f.NetworkFactory(slug="count-net")
    token = f.TokenFactory(network=net, symbol="CUSD")
    tx = f.PaymentTransactionFactory(network=net, token=token, contract=f.PaymentContractFactory(network=net))
    counter = metrics.TRANSACTIONS.labels(status="submitted", network="count-net", token="CUSD")
    latency = metrics.CONFIRMATION_LATENCY.labels(network="count-net", since="submitted")
    start = counter._value.get()

    class Abort(Exception):
        pass

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Abort), transaction.atomic():
        transaction_set_status(tx=tx, status=TxStatus.SUBMITTED, actor="test", fields={"tx_hash": f.random_hash()})
        raise Abort
    assert counter._value.get() == start  # rolled back: not counted

    tx.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        transaction_set_status(tx=tx, status=TxStatus.SUBMITTED, actor="test", fields={"tx_hash": f.random_hash()})
    assert counter._value.get() == start + 1
    observed = sum(b.get() for b in latency._buckets)
    with django_capture_on_commit_callbacks(execute=True):
        transaction_set_status(tx=tx, status=TxStatus.CONFIRMED, actor="test")
    assert sum(b.get() for b in latency._buckets) == observed + 1


def test_celery_task_runs_and_failing_sweeps_are_counted(db, monkeypatch):
    from billing import metrics
    from billing.services import receipts
    from billing_project.celery import app

    task = app.tasks["billing.tasks.checkouts_expire"]  # a beat sweep (CELERY_BEAT_SCHEDULE)
    success = metrics.TASKS.labels(task=task.name, outcome="success")
    failure = metrics.TASKS.labels(task=task.name, outcome="failure")
    sweep = metrics.SWEEP_ERRORS.labels(sweep="checkouts_expire")
    before = (success._value.get(), failure._value.get(), sweep._value.get())

    assert task.apply().successful()
    assert (success._value.get(), failure._value.get(), sweep._value.get()) == (before[0] + 1, *before[1:])

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(receipts, "checkouts_expire", broken)
    assert task.apply().failed()
    assert (success._value.get(), failure._value.get(), sweep._value.get()) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    )


def test_metrics_forget_the_live_gauges_of_a_process_killed_without_a_word(client, db, settings, tmp_path, monkeypatch):
    """A SIGKILLed process (a Celery pool process, say) runs no exit hook: its `liveall` gauge file would
    count forever. The scrape drops the files of pids that no longer exist and keeps the living ones'."""
    settings.METRICS_BEARER_TOKEN = ""
    code = (
        "import sys, time\n"
        "from billing import metrics\n"
        "metrics.RPC_ENDPOINT_HEALTHY.labels(network=sys.argv[1], endpoint='rpc').set(1)\n"
        "print('set', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "billing_project.settings",
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", "import django; django.setup()\n" + code, name],
            cwd=devstack.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("killed-net", "alive-net")
    }
    try:
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "set"
        victim = procs["killed-net"]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        assert list(tmp_path.glob(f"gauge_live*_{victim.pid}.db"))  # it left its file behind
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        body = client.get("/metrics").content.decode()
        assert 'billing_rpc_endpoint_healthy{endpoint="rpc",network="alive-net"' in body
        assert "killed-net" not in body
        assert not list(tmp_path.glob(f"gauge_live*_{victim.pid}.db"))
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=10)
