"""The follower's beat dispatch claims like every other sweep (issue 8 §5): due cursors are claimed with
SKIP LOCKED and their next_sync_at moved forward in the same transaction, one message per contract carries
its claim, a duplicate message is a no-op, and a failed run waits billing.retry.backoff_seconds. Before,
every 5 s tick queued another sync message per contract, however many were still waiting."""

from __future__ import annotations

import pytest
from django.utils import timezone

from billing import tasks
from billing.models import ChainCursor
from billing.services import chain_sync
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.contract_sync_task, "delay", lambda *args: sent.append(args))
    return sent


@pytest.fixture
def runs(monkeypatch):
    calls: list[int] = []
    outcome = {"error": None}

    def fake_sync(*, contract_id, **_):
        calls.append(contract_id)
        if outcome["error"]:
            raise outcome["error"]

    monkeypatch.setattr(chain_sync, "contract_sync", fake_sync)
    monkeypatch.setattr("billing.services.notices.sweep_error_notice", lambda **_: None)
    return calls, outcome


def test_three_ticks_queue_one_run_per_contract_and_a_duplicate_does_nothing(queued, runs):
    calls, _ = runs
    a, b = f.PaymentContractFactory(deployment_block=10), f.PaymentContractFactory()
    f.PaymentContractFactory(enabled=False)
    assert [tasks.contract_sync_dispatch() for _ in range(3)] == [2, 0, 0]
    assert sorted(pk for pk, _ in queued) == sorted([a.pk, b.pk])
    assert ChainCursor.objects.get(contract=a).last_block == 9  # a new contract's cursor starts at its deployment

    (pk, claim) = next(m for m in queued if m[0] == a.pk)
    tasks.contract_sync_task(pk, claim)
    tasks.contract_sync_task(pk, claim)  # the broker delivered it twice
    assert calls == [a.pk]
    cursor = ChainCursor.objects.get(contract=a)
    assert cursor.next_sync_at is None and cursor.sync_errors == 0
    assert tasks.contract_sync_dispatch() == 1  # a is due again at the next tick; b is still claimed


def test_a_failing_run_backs_off(queued, runs):
    calls, outcome = runs
    contract = f.PaymentContractFactory()
    tasks.contract_sync_dispatch()
    [(pk, claim)] = queued
    outcome["error"] = RuntimeError("every endpoint is down")
    tasks.contract_sync_task(pk, claim)
    cursor = ChainCursor.objects.get(contract=contract)
    assert cursor.sync_errors == 1 and "every endpoint is down" in cursor.last_error
    waited = (cursor.next_sync_at - timezone.now()).total_seconds()
    assert 2 < waited <= 5  # backoff_seconds(1, base=5, cap=300): in [2.5, 5]
    assert tasks.contract_sync_dispatch() == 0 and len(queued) == 1
    tasks.contract_sync_task(pk)  # an explicit trigger still runs at once (the cursor lock keeps runs apart)
    assert calls == [pk, pk]
