"""Celery workers killed with SIGKILL during a chain backfill (issue 14), on a real broker.

Two `celery worker` processes (prefork, one child each) on Redis follow a contract with 200 real payments on
anvil, in small batches. The test keeps sending `contract_sync_task` triggers (messages are only triggers; a
killed worker's message may be lost) and kills a worker five times at chosen points: three times while its
database backend is inside a batch's transaction (seen in pg_stat_activity, so the kill really lands mid-work)
and twice between batches (the cursor moved, no transaction open). A killed worker is started again. In the
end every payment is confirmed exactly once and `billing_reconcile` finds no difference between the ledger and
the chain (balances included: the contract is deployed fresh for this test).

The full run (2,000 events, also on RabbitMQ) is bench-only: `BENCH_KILL_EVENTS=2000 BENCH_KILL_BROKER=amqp
.venv/bin/python -m pytest tests/integration/lifecycle/test_worker_kills.py`.
"""

from __future__ import annotations

import io
import os
import signal
import time

import pytest
from celery import Celery
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection

from billing.chain.artifacts import deploy_artifact
from billing.models import (
    ChainCursor,
    ChainEvent,
    CryptoConfig,
    OutboxEvent,
    PaymentTransaction,
    TransactionStatusChange,
    TxStatus,
)
from tests.conftest import link_wallet, token_client
from tests.integration.lifecycle.conftest import OWNER, PAYERS, SIGNER, create_checkout, send_raw, sign_step
from tests.processes import CeleryWorker, redis_broker, wait_until

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(600)]

EVENTS = int(os.environ.get("BENCH_KILL_EVENTS", "200"))
BROKER = os.environ.get("BENCH_KILL_BROKER", "redis")
APP_NAME = "billing-kill-test"


def broker_url() -> str:
    if BROKER == "amqp":
        return "amqp://guest:guest@127.0.0.1:5672//"
    return redis_broker(14)


def pay_many(chain, world, users, n: int) -> list[PaymentTransaction]:
    """n checkouts paid on chain, two per block (nonces signed ahead, mined together)."""
    for user, payer in zip(users, PAYERS, strict=False):  # checkout takes only SIWE-verified payers
        link_wallet(user, payer.address, move=True)
    clients = [token_client(u) for u in users]
    txs = []
    nonces = {p.address: chain.w3.eth.get_transaction_count(p.address, "pending") for p in PAYERS}
    chain.w3.provider.make_request("evm_setAutomine", [False])
    try:
        for i in range(n):
            payer = PAYERS[i % len(PAYERS)]
            if i % 200 == 0:
                cache.clear()  # the checkout throttle (60/min per user) is not what this test is about
            body = create_checkout(clients[i % len(PAYERS)], "eth-pro", payer)  # each user pays from its wallet
            (step,) = body["payment"]["steps"]
            raw = sign_step(chain, payer, step, nonce=nonces[payer.address], gas=300_000)
            nonces[payer.address] += 1
            send_raw(chain, raw, wait=False)
            txs.append(body["id"])
            if i % 2 == 1:
                chain.w3.provider.make_request("evm_mine", [])
        chain.w3.provider.make_request("evm_mine", [])
    finally:
        chain.w3.provider.make_request("evm_setAutomine", [True])
    return list(PaymentTransaction.objects.filter(public_id__in=txs))


def backend_in_transaction(application_name: str) -> bool:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL",
            [application_name],
        )
        return cur.fetchone()[0] > 0


def test_workers_killed_mid_backfill_lose_and_double_nothing(chain, world, django_user_model):
    pass_contract, receipt = deploy_artifact(chain.w3, OWNER, "SubscriptionPass", OWNER.address, SIGNER.address)
    contract = world.contract
    contract.address = pass_contract.address
    contract.deployment_block = receipt["blockNumber"]
    contract.save()
    config = CryptoConfig.load()
    config.get_logs_max_range = 4  # many small batches, so kills can land inside one and between two
    config.save()
    users = [django_user_model.objects.create_user(username=f"killed-{i}") for i in range(len(PAYERS))]
    paid = pay_many(chain, world, users, EVENTS)
    assert len(paid) == EVENTS
    chain.anvil.mine(world.network.confirmation_depth + 1)
    ChainCursor.objects.update_or_create(contract=contract, defaults={"last_block": receipt["blockNumber"] - 1})

    url = broker_url()
    sender = Celery(APP_NAME, broker=url)
    names = ["w1", "w2"]
    dsn = {name: f"kill-{name}-{os.getpid()}" for name in names}

    def start(name: str) -> CeleryWorker:
        # application_name lets the test see in pg_stat_activity whether this worker is inside a transaction.
        from tests.processes import current_database_url

        return CeleryWorker(
            name, broker=url, env={"DATABASE_URL": f"{current_database_url()}?application_name={dsn[name]}"}
        )

    workers = {name: start(name) for name in names}
    kills: list[str] = []
    plan = ["inside", "between", "inside", "between", "inside"]
    head_cursor = lambda: ChainCursor.objects.get(contract=contract).last_block  # noqa: E731
    try:
        last_seen = head_cursor()
        last_trigger = 0.0
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and (plan or PaymentTransaction.objects.filter(
            pk__in=[t.pk for t in paid]).exclude(status=TxStatus.CONFIRMED).exists()
        ):  # fmt: skip
            if time.monotonic() - last_trigger > 0.5:  # what beat does, faster
                sender.send_task("billing.tasks.contract_sync_task", args=[contract.pk])
                last_trigger = time.monotonic()
            if plan:
                target = names[len(kills) % 2]
                worker = workers[target]
                busy = backend_in_transaction(dsn[target])
                # "inside": its batch's transaction is open, the kill lands mid-batch; "between": none is open
                # and a batch committed since the last kill.
                due = busy if plan[0] == "inside" else (not busy and head_cursor() > last_seen)
                if not due:
                    time.sleep(0.02)
                    continue
                worker.kill(signal.SIGKILL)
                worker.proc.wait(timeout=10)
                kills.append(f"{plan.pop(0)}@{head_cursor()}")
                last_seen = head_cursor()
                workers[target] = start(target)
            time.sleep(0.2)
        assert not plan, f"only {kills} happened before the deadline"
        wait_until(
            lambda: (
                not PaymentTransaction.objects.filter(pk__in=[t.pk for t in paid])
                .exclude(status=TxStatus.CONFIRMED)
                .exists()
            ),
            timeout=60,
            what="every payment confirmed",
        )
    finally:
        for worker in workers.values():
            worker.__exit__(None, None, None)
        sender.close()

    assert len(kills) == 5
    for tx in paid:
        assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
        assert ChainEvent.objects.filter(transaction=tx, name="Paid").count() == 1
    per_tx = OutboxEvent.objects.filter(topic="plan.changed.v1", payload__transaction_id__in=[str(t.pk) for t in paid])
    assert per_tx.count() == EVENTS
    out = io.StringIO()
    call_command("billing_reconcile", "--contract", contract.slug, stdout=out)
    assert "0 difference(s)" in out.getvalue(), out.getvalue()
