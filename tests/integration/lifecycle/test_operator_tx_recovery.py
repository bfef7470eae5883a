"""The operator transaction row is committed before the broadcast: a web timeout or a killed process after
(or during) the broadcast leaves a row that the sweep finds and settles, and the refund lands once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.chain.rpc import AllEndpointsFailed, ChainClient
from billing.models import OperatorTransaction, PaymentTransaction, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.operator_txs import operator_tx_send, operator_tx_watch, operator_txs_pending_ids
from tests.integration.lifecycle.conftest import PAYERS, paid_by_receipt

pytestmark = [pytest.mark.chain]

ROOT = Path(__file__).resolve().parents[3]


def paid_eth(chain, world, user_api, payer) -> PaymentTransaction:
    """A confirmed ETH payment (the contract holds its value), the follower at the head."""
    tx = paid_by_receipt(chain, user_api, payer)
    contract_sync(contract_id=world.contract.pk)
    return tx


def sweep_later(minutes: int = 5) -> dict[int, str]:
    later = timezone.now() + timedelta(minutes=minutes)
    return {pk: operator_tx_watch(row_id=pk, now=later) for pk in operator_txs_pending_ids(now=later)}


def assert_refunded_once(chain, world, tx: PaymentTransaction, row: OperatorTransaction, balance_before: int):
    row.refresh_from_db()
    assert row.status == OperatorTransaction.Status.MINED and row.mined_tx_hash == row.tx_hashes[-1]
    assert chain.w3.eth.get_balance(tx.payer_address) == balance_before + int(tx.amount)
    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED and tx.refund_tx_hash == row.mined_tx_hash
    assert OperatorTransaction.objects.filter(payment=tx).count() == 1


def _timeout_on_broadcast(monkeypatch, *, forward: bool):
    """The node gets (forward=True) or never gets the signed bytes, and the caller sees a timeout either way."""
    real_call = ChainClient.call

    def call(self, method, params=None):
        if method == "eth_sendRawTransaction":
            if forward:
                real_call(self, method, params)
            raise AllEndpointsFailed("eth_sendRawTransaction: every endpoint failed: read timed out")
        return real_call(self, method, params)

    monkeypatch.setattr(ChainClient, "call", call)


@pytest.mark.django_db
@pytest.mark.parametrize("node_got_it", [True, False], ids=["broadcast-then-timeout", "timeout-before-node"])
def test_a_refund_whose_broadcast_timed_out_is_kept_and_settled_by_the_sweep(
    chain, world, user_api, admin_api, monkeypatch, node_got_it
):
    tx = paid_eth(chain, world, user_api, PAYERS[0])
    balance_before = chain.w3.eth.get_balance(tx.payer_address)
    _timeout_on_broadcast(monkeypatch, forward=node_got_it)

    response = admin_api.post(f"/v1/billing/admin/transactions/{tx.public_id}/refund", {"reason": "t"}, format="json")
    monkeypatch.undo()

    assert response.status_code == 200, response.content
    assert "did not confirm" in response.json()["detail"]
    row = OperatorTransaction.objects.get(payment=tx)  # today: rolled back with the request
    assert row.status == OperatorTransaction.Status.NEW and len(row.tx_hashes) == 1 and row.nonce is not None
    assert "timed out" in row.error
    # A second click while the first is unsettled sends nothing.
    again = admin_api.post(f"/v1/billing/admin/transactions/{tx.public_id}/refund", {"reason": "t"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "refund_in_flight"

    assert operator_tx_watch(row_id=row.pk) == "skipped"  # young: its sender may still be at it
    outcome = sweep_later()
    assert outcome == ({row.pk: "mined"} if node_got_it else {row.pk: "recovered"}), outcome
    if not node_got_it:  # the very same signed bytes went out: the hash did not change
        row.refresh_from_db()
        assert row.status == OperatorTransaction.Status.PENDING and len(row.tx_hashes) == 1
        assert sweep_later() == {row.pk: "mined"}
    assert_refunded_once(chain, world, tx, row, balance_before)


@pytest.mark.django_db
def test_a_row_left_unsigned_is_failed_and_frees_nothing_it_never_held(chain, world):
    row = OperatorTransaction.objects.create(
        kind="withdraw", network=world.network, chain_id=31337, to=world.contract.address, requested_by="t"
    )
    OperatorTransaction.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    assert sweep_later(0) == {row.pk: "failed"}
    row.refresh_from_db()
    assert row.status == "failed" and "before signing" in row.error


@pytest.mark.django_db
def test_sending_inside_a_callers_transaction_is_refused(chain, world):
    """A caller's rollback could take the row back after the broadcast: refused before anything is sent."""
    client = ChainClient.for_network(world.network)
    with transaction.atomic(), pytest.raises(RuntimeError):
        operator_tx_send(
            kind="withdraw",
            network=world.network,
            to=world.contract.address,
            data="0x",
            client=client,
            requested_by="t",
        )
    assert not OperatorTransaction.objects.exists()


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, django
    django.setup()
    from billing.chain import sender
    from billing.models import PaymentTransaction
    from billing.services.operator import transaction_refund
    from django.contrib.auth import get_user_model

    real = sender._broadcast
    def broadcast(client, raw, tx_hash):
        real(client, raw, tx_hash)
        print("BROADCAST", tx_hash, flush=True)
        time.sleep(600)  # killed here: after the node has it, before the row says so
    sender._broadcast = broadcast
    tx = PaymentTransaction.objects.get(pk=int(sys.argv[1]))
    transaction_refund(tx=tx, actor=get_user_model().objects.get(pk=int(sys.argv[2])), reason="kill test")
    """
)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_right_after_the_broadcast_leaves_a_row_the_sweep_settles(
    chain, world, user_api, billing_admin_user
):
    tx = paid_eth(chain, world, user_api, PAYERS[1])
    balance_before = chain.w3.eth.get_balance(tx.payer_address)
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing_project.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}",
        "BILLING_OPERATOR_KEY": settings.BILLING_OPERATOR_KEY,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tx.pk), str(billing_admin_user.pk)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("BROADCAST"), (line, proc.stderr.read() if proc.poll() is not None else "")
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    sent_hash = line.split()[1]
    row = OperatorTransaction.objects.get(payment=tx)
    assert row.status == OperatorTransaction.Status.NEW and row.tx_hashes == [sent_hash]

    assert sweep_later() == {row.pk: "mined"}
    assert_refunded_once(chain, world, tx, row, balance_before)


@pytest.mark.django_db(transaction=True)
def test_two_refunds_of_one_payment_at_once_send_one_transaction(
    chain, world, user_api, billing_admin_user, monkeypatch
):
    """The payment's lock no longer spans the broadcast: the row committed with it is what makes the second
    request answer refund_in_flight. The first holds the lock a while, so the two provably overlap."""
    from billing.services import operator_txs
    from billing.services.operator import OperatorActionError, transaction_refund

    tx = paid_eth(chain, world, user_api, PAYERS[2])
    payer_before = chain.w3.eth.get_balance(tx.payer_address)
    real_create = operator_txs.operator_tx_create

    def slow_create(**kwargs):
        row = real_create(**kwargs)
        time.sleep(1.0)  # inside the locked transaction: the other request waits on the payment row
        return row

    monkeypatch.setattr(operator_txs, "operator_tx_create", slow_create)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}
    spans: dict[str, tuple[float, float]] = {}

    def run(name: str) -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            fresh = PaymentTransaction.objects.get(pk=tx.pk)
            outcomes[name] = transaction_refund(tx=fresh, actor=billing_admin_user, reason=name).result
        except OperatorActionError as exc:
            outcomes[name] = exc.code
        finally:
            spans[name] = (started, time.monotonic())
            connection.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())  # they overlapped
    assert sorted(outcomes.values()) == ["refund_in_flight", "refund_sent"], outcomes
    (row,) = OperatorTransaction.objects.filter(payment=tx)
    assert sweep_later() == {row.pk: "mined"}
    assert_refunded_once(chain, world, tx, row, payer_before)
