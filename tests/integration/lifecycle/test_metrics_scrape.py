"""/metrics acceptance (issue 13): a real gunicorn with two workers and a real Celery worker process share
one prometheus_client multiprocess folder, as under `make run`. After a checkout (web), a payment the
follower confirms in a task the Celery worker runs, with an RPC endpoint that refuses connections before
the good one, every series moved in the scrape; requests spread over both web workers add up to exactly
what was sent; without the bearer token the answer is 401."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import psutil
import pytest
import requests
from celery import Celery
from django.db import connection
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token as ApiToken

from billing.models import PaymentTransaction, RpcEndpoint, TxStatus
from billing_project import devstack
from tests.anvil import ANVIL_KEYS, free_port
from tests.integration.lifecycle.conftest import PAYERS, follower_from_head, send_steps

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = devstack.BASE_DIR
TOKEN = "scrape-" + secrets.token_hex(8)
BROKER = "redis://127.0.0.1:6379/13"


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    response = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert response.status_code == 200, response.text[:500]
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def per_process(folder: Path, name: str, **labels) -> dict[int, float]:
    """What each process wrote for `name` in its own counter file: pid -> value."""
    totals: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, number, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            metric, sample, sample_labels, _help = json.loads(key)
            if sample == name and set(labels.items()) <= set(sample_labels.items()):
                totals[pid] = totals.get(pid, 0) + number
    return totals


def wait_for(predicate, timeout: float, what: str, alive=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in alive:
            assert proc.poll() is None, f"{what}: a process exited ({proc.args[2:5]})"
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture
def stack_env(tmp_path):
    db = connection.settings_dict
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "CELERY_TASK_ALWAYS_EAGER")}
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        DB_CONN_MAX_AGE="0",
        CELERY_BROKER_URL=BROKER,
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        BILLING_METRICS_DIR_SHARED="1",  # this test emptied the folder, as devstack does
        METRICS_BEARER_TOKEN=TOKEN,
        BILLING_QUOTE_SIGNER_KEY=ANVIL_KEYS[1],
        DJANGO_SETTINGS_MODULE="billing_project.settings",
        PYTHONWARNINGS="ignore",
        LOG_LEVEL="WARNING",
    )
    return env, folder


def test_scrape_adds_up_web_and_celery_processes(chain, world, plain_user, stack_env):
    env, folder = stack_env
    port = free_port()
    queue = "metrics-test-" + secrets.token_hex(4)
    # An endpoint that refuses connections is tried first: the worker's calls fail on it, then fail over.
    world.network.rpc_endpoints.update(position=1)
    dead = RpcEndpoint.objects.create(
        network=world.network, position=0, url=f"http://127.0.0.1:{free_port()}/KEY123", timeout_seconds=Decimal("1")
    )
    follower_from_head(world, chain)
    key = ApiToken.objects.create(user=plain_user).key

    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(devstack.GUNICORN_CONF), "billing_project.wsgi"],
        cwd=ROOT,
        env={**env, "PORT": str(port), "WEB_CONCURRENCY": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "billing_project", "worker", "-P", "prefork", "-c", "1", "-Q", queue]
        + ["-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        devstack.wait_http(f"{base}/healthz", timeout=60, alive=lambda: web.poll() is None)
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        before = scrape(base)

        # 1. A checkout, served by a gunicorn worker.
        checkout = requests.post(
            f"{base}/v1/billing/checkout",
            json={"plan": "eth-pro", "wallet": PAYERS[0].address},
            headers={"Authorization": f"Token {key}"},
            timeout=30,
        )
        assert checkout.status_code == 201, checkout.text[:500]
        body = checkout.json()
        (tx_hash,) = send_steps(chain, PAYERS[0], body["payment"])
        chain.anvil.mine(world.network.confirmation_depth)

        # 2. The follower, as a task in the Celery worker process, confirms the payment (and meets the dead
        #    endpoint first).
        sender = Celery("metrics-test", broker=BROKER)
        sender.send_task("billing.tasks.contract_sync_task", args=[world.contract.pk], queue=queue)
        tx = PaymentTransaction.objects.get(public_id=body["id"])
        wait_for(
            lambda: PaymentTransaction.objects.filter(pk=tx.pk, status=TxStatus.CONFIRMED).exists(),
            40,
            "the worker confirms the payment",
            alive=(worker,),
        )
        task = {"task": "billing.tasks.contract_sync_task", "outcome": "success"}
        after = wait_for(
            lambda: (s := scrape(base)) and value(s, "billing_celery_tasks_total", **task) >= 1 and s,
            20,
            "the task run is counted",
        )
        labels = {"network": "anvil-test", "token": "ETH"}
        moved = {
            "checkout (web)": value(after, "billing_transactions_total", status="pending", **labels),
            "confirmed payment (worker)": value(after, "billing_transactions_total", status="confirmed", **labels),
            "confirmation latency": value(after, "billing_confirmation_latency_seconds_count", network="anvil-test"),
            "failed RPC call": value(after, "billing_rpc_requests_total", endpoint=str(dead.pk), outcome="error"),
            "failover": value(after, "billing_rpc_failovers_total", network="anvil-test"),
            "task run": value(after, "billing_celery_tasks_total", **task),
            "follower lag": ("billing_follower_lag_blocks", (("contract", "pass-test"),)) in after,
            "active subscriptions (database)": value(after, "billing_subscriptions_live", plan="eth-pro"),
        }
        was = {
            "checkout (web)": value(before, "billing_transactions_total", status="pending", **labels),
            "confirmed payment (worker)": value(before, "billing_transactions_total", status="confirmed", **labels),
            "confirmation latency": value(before, "billing_confirmation_latency_seconds_count", network="anvil-test"),
            "failed RPC call": value(before, "billing_rpc_requests_total", endpoint=str(dead.pk), outcome="error"),
            "failover": value(before, "billing_rpc_failovers_total", network="anvil-test"),
            "task run": value(before, "billing_celery_tasks_total", **task),
            "follower lag": ("billing_follower_lag_blocks", (("contract", "pass-test"),)) in before,
            "active subscriptions (database)": value(before, "billing_subscriptions_live", plan="eth-pro"),
        }
        assert {k: v > was[k] for k, v in moved.items()} == dict.fromkeys(moved, True), (was, moved)
        assert moved["confirmed payment (worker)"] == 1 and moved["task run"] == 1
        assert "KEY123" not in json.dumps([list(k) for k in after])  # endpoint labels are ids, never URLs

        # The counters came from different processes: the checkout from a web worker, the rest from the
        # Celery pool process.
        web_pids = {c.pid for c in psutil.Process(web.pid).children()}
        worker_pids = {c.pid for c in psutil.Process(worker.pid).children()}
        pending_by = per_process(folder, "billing_transactions_total", status="pending")
        confirmed_by = per_process(folder, "billing_transactions_total", status="confirmed")
        assert set(pending_by) & web_pids and set(confirmed_by) <= worker_pids and confirmed_by

        # 3. Two web workers: requests spread over both, and the scrape adds them up exactly.
        def hits():
            return per_process(folder, "django_http_requests_total_by_view_transport_method_total", view="healthz")

        start = value(scrape(base), "django_http_requests_total_by_view_transport_method_total", view="healthz")
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                codes = list(pool.map(lambda _: requests.get(f"{base}/healthz", timeout=10).status_code, range(24)))
                assert codes == [200] * 24
                sent += 24
                if len([p for p, n in hits().items() if p in web_pids and n > 0]) >= 2:
                    break
        served = {p: n for p, n in hits().items() if n > 0}
        assert len(set(served) & web_pids) == 2, f"one worker served everything: {served} (web {web_pids})"
        total = value(scrape(base), "django_http_requests_total_by_view_transport_method_total", view="healthz")
        assert total - start == sent
        assert total == sum(served.values())
    finally:
        stop(worker)
        stop(web)
