"""Two runs of the same sweep at once, in two real processes (issue 14): two `subscriptions_advance` and two
`contract_sync` over the same rows give each effect once. Each run records when it started and ended; the test
checks that the two runs were really in flight at the same time (their intervals overlap), not one after the
other, so a pass means the locks held, not that the runs were lucky with timing."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import ChainEvent, OutboxEvent, PaymentTransaction, Subscription, TransactionStatusChange, TxStatus
from billing.services.subscriptions import subscription_apply_payment
from tests.conftest import link_wallet, token_client
from tests.factories import ConfirmedTransactionFactory, PaymentProviderFactory, PlanFactory, TokenFactory, UserFactory
from tests.integration.lifecycle.conftest import PAYERS, create_checkout, follower_from_head, send_steps
from tests.processes import Process, child_env, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RUNNER = """
import json, sys, time
import django
django.setup()
from importlib import import_module
module, name = sys.argv[1].rsplit(".", 1)
func = getattr(import_module(module), name)
kwargs = json.loads(sys.argv[2])
start_at = float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
started = time.time()
result = func(**kwargs)
ended = time.time()
print("RESULT " + json.dumps({"started": started, "ended": ended, "result": repr(result)}), flush=True)
"""


def run_twice_at_once(path: str, **kwargs) -> list[dict]:
    """Start two processes that call `path(**kwargs)` at the same wall-clock instant; their timings."""
    return run_at_once([(path, kwargs), (path, kwargs)])


def run_at_once(calls: list[tuple[str, dict]]) -> list[dict]:
    """One process per (dotted path, kwargs), each calling it at the same wall-clock instant; their timings
    ({"started", "ended", "result"}) in the order given."""
    start_at = time.time() + 4.0  # every process has imported Django by then
    procs = [
        Process(f"sweep-{i}", [sys.executable, "-c", RUNNER, path, json.dumps(kwargs), str(start_at)], child_env())
        for i, (path, kwargs) in enumerate(calls)
    ]
    try:
        for proc in procs:
            wait_until(lambda p=proc: not p.alive(), timeout=120, what=f"{proc.name} to finish")
        runs = []
        for proc in procs:
            out = proc.output()
            assert proc.proc.returncode == 0, out[-3000:]
            line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
            runs.append(json.loads(line[len("RESULT ") :]))
        return runs
    finally:
        for proc in procs:
            proc.__exit__(None, None, None)


def assert_overlapped(runs: list[dict]) -> None:
    latest_start = max(r["started"] for r in runs)
    earliest_end = min(r["ended"] for r in runs)
    assert latest_start < earliest_end, f"the two runs did not overlap: {runs}"


def test_two_subscriptions_advance_runs_at_once_move_each_subscription_once():
    provider = PaymentProviderFactory()
    token = TokenFactory(network=provider.contract.network)
    plan = PlanFactory(provider=provider, contract=provider.contract, price_token=token, grace_period_days=0)
    paid_at = timezone.now() - timedelta(days=45)  # a 30-day period that ended 15 days ago
    users = []
    for _ in range(40):
        user = UserFactory()
        tx = ConfirmedTransactionFactory(user=user, plan=plan, periods=1, amount=plan.price_amount)
        subscription_apply_payment(tx=tx, now=paid_at)
        users.append(user)
    before = set(OutboxEvent.objects.filter(topic="plan.changed.v1").values_list("pk", flat=True))

    runs = run_twice_at_once("billing.tasks.subscriptions_advance")

    assert_overlapped(runs)
    new = OutboxEvent.objects.filter(topic="plan.changed.v1").exclude(pk__in=before)
    per_user = Counter(new.values_list("aggregate_id", flat=True))
    assert per_user == Counter({str(u.pk): 1 for u in users})  # one move each, none twice, none missed
    assert {e.payload["reason"] for e in new} == {"expired"}
    assert not Subscription.objects.filter(user__in=users, status__in=["active", "past_due"]).exists()


@pytest.mark.chain
def test_two_contract_sync_runs_at_once_confirm_each_payment_once(chain, world, django_user_model):
    follower_from_head(world, chain)
    paid = []
    for i in range(8):
        user = django_user_model.objects.create_user(username=f"sweeper-{i}")
        payer = PAYERS[i % len(PAYERS)]
        link_wallet(user, payer.address, move=True)  # checkout takes only SIWE-verified payers
        body = create_checkout(token_client(user), "eth-pro", payer)
        (tx_hash,) = send_steps(chain, payer, body["payment"])
        paid.append((PaymentTransaction.objects.get(public_id=body["id"]), tx_hash))
    chain.anvil.mine(world.network.confirmation_depth + 1)

    runs = run_twice_at_once("billing.services.chain_sync.contract_sync", contract_id=world.contract.pk)

    assert_overlapped(runs)
    for tx, tx_hash in paid:
        tx.refresh_from_db()
        assert tx.status == TxStatus.CONFIRMED and tx.tx_hash == tx_hash
        assert TransactionStatusChange.objects.filter(transaction=tx, to_status="confirmed").count() == 1
        assert ChainEvent.objects.filter(tx_hash=tx_hash, name="Paid").count() == 1
        changed = OutboxEvent.objects.filter(topic="plan.changed.v1", aggregate_id=str(tx.user_id))
        assert [e.payload["reason"] for e in changed] == ["payment_confirmed"]
