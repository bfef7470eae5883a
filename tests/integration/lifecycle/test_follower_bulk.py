"""The follower's bulk path (issue 9) writes what the one-by-one path writes.

Random batches of chain logs (new subscriptions, renewals, downgrades, upgrades and plan switches, several
payments of one user, refunds in the same batch, payments another path confirmed already, payments for orders
the ledger does not know, payments that differ from their checkout, stray token transfers, payouts), on top
of random earlier payments, are applied twice to the same database state at the same frozen instant: once
one by one (`BULK_MIN_EVENTS` above the batch) and once through `payments_apply_in_bulk` (`BULK_MIN_EVENTS`
= 1), the first inside a rolled-back transaction. Everything a payment writes must come out the same: ledger
rows and their status history, chain events and their links, subscriptions, periods, plan.changed.v1 and ops
events with their deliveries. The bulk path also writes no django-auditlog row for what it mirrors."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from billing.chain.logs import GasFacts, ObservedLog
from billing.fields import ZERO_ADDRESS
from billing.models import (
    ChainEvent,
    CryptoConfig,
    OutboxDelivery,
    OutboxEvent,
    PaymentTransaction,
    Subscription,
    SubscriptionPeriod,
    TransactionStatusChange,
    TxStatus,
)
from billing.services import chain_sync
from billing.services.payments import payment_observe_paid
from tests.factories import (
    PaymentProviderFactory,
    PaymentTransactionFactory,
    PlanFactory,
    TokenFactory,
    UserFactory,
    random_address,
    random_hash,
)

pytestmark = pytest.mark.django_db
PAYER = random_address()


@pytest.fixture
def catalog():
    provider = PaymentProviderFactory()
    network = provider.contract.network
    usdc = TokenFactory(network=network, decimals=6, usd_estimate=Decimal("1.00000000"))
    common = {"provider": provider, "contract": provider.contract, "price_token": usdc}
    plans = [
        PlanFactory(slug="b-starter", tier=1, price_amount=5_000_000, limits={"calls": 1}, **common),
        PlanFactory(slug="b-pro", tier=2, price_amount=15_000_000, limits={"calls": 2}, **common),
        PlanFactory(slug="b-pro-weekly", tier=2, interval="week", price_amount=4_000_000, limits={"c": 3}, **common),
        PlanFactory(slug="b-biz", tier=3, price_amount=40_000_000, limits={"calls": 4}, **common),
    ]
    return provider.contract, plans, usdc


class Batch:
    def __init__(self, contract, usdc):
        self.contract = contract
        self.usdc = usdc
        self.block = 5000
        self.logs: list[ObservedLog] = []

    def log(self, name: str, args: dict, *, address: str | None = None, tx_hash: str | None = None) -> ObservedLog:
        self.block += 1
        item = ObservedLog(
            name=name,
            chain_id=self.contract.network.chain_id,
            address=address or self.contract.address,
            tx_hash=tx_hash or random_hash(),
            log_index=len(self.logs) % 3,
            block_number=self.block,
            block_hash=random_hash(),
            args=args,
        )
        self.logs.append(item)
        return item

    def paid(self, tx: PaymentTransaction, *, amount: int | None = None, tx_hash: str | None = None):
        args = {
            "orderId": tx.order_id,
            "payer": PAYER,
            "tokenId": 1,
            "planId": tx.plan_id,
            "token": tx.token.address or ZERO_ADDRESS,
            "amount": tx.amount if amount is None else amount,
            "periods": tx.periods,
            "expiresAt": 0,
        }
        return self.log("Paid", args, tx_hash=tx_hash)


def checkout(user, plan, periods: int = 1) -> PaymentTransaction:
    return PaymentTransactionFactory(
        user=user, plan=plan, periods=periods, amount=plan.price_amount * periods, payer_address=PAYER
    )


STEP = st.one_of(
    st.tuples(st.just("pay"), st.integers(0, 2), st.integers(0, 3), st.sampled_from([1, 1, 2])),
    st.tuples(st.just("refund"), st.integers(0, 20)),
    st.tuples(st.just("again"), st.integers(0, 20)),
    st.tuples(st.just("unknown")),
    st.tuples(st.just("mismatch"), st.integers(0, 2)),
    st.tuples(st.just("transfer")),
    st.tuples(st.just("withdrawn")),
)
BEFORE = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=4)


def build(contract, plans, usdc, before, steps) -> tuple[list, list[ObservedLog]]:
    """Users with earlier payments (applied one by one), then the batch of logs the steps describe."""
    users = [UserFactory(username=f"bulk-{secrets.token_hex(5)}") for _ in range(3)]
    batch = Batch(contract, usdc)
    earlier = []
    for user, plan in before:
        tx = checkout(users[user], plans[plan])
        payment_observe_paid(contract=contract, observed=batch.paid(tx), gas=GasFacts(), source="test:earlier")
        earlier.append(tx)
    batch.logs.clear()
    paid = []
    for step in steps:
        kind = step[0]
        if kind == "pay":
            tx = checkout(users[step[1]], plans[step[2]], step[3])
            paid.append(tx)
            batch.paid(tx)
        elif kind == "mismatch":
            tx = checkout(users[step[1]], plans[1])
            batch.paid(tx, amount=tx.amount - 1)
        elif kind == "refund" and paid + earlier:
            tx = (paid + earlier)[step[1] % len(paid + earlier)]
            args = {"orderId": tx.order_id, "payer": PAYER, "tokenId": 1, "token": usdc.address, "amount": tx.amount}
            batch.log("Refunded", {**args, "expiresAt": 0})
        elif kind == "again" and earlier:  # a payment another path (webhook, receipt) confirmed already
            tx = PaymentTransaction.objects.get(pk=earlier[step[1] % len(earlier)].pk)
            batch.paid(tx, tx_hash=tx.tx_hash)
            batch.logs[-1] = ObservedLog(
                **{**batch.logs[-1].__dict__, "log_index": tx.log_index, "block_hash": tx.block_hash}
            )
        elif kind == "unknown":
            ghost = PaymentTransactionFactory.build(plan=plans[0], order_id=random_hash(), token=usdc)
            batch.paid(ghost)
        elif kind == "transfer":
            args = {"from": PAYER, "to": contract.address, "value": 3_000_000}
            batch.log("Transfer", args, address=usdc.address)
        elif kind == "withdrawn":
            batch.log("Withdrawn", {"token": usdc.address, "to": PAYER, "amount": 1})
    return users, batch.logs


def snapshot(contract, users, logs, since: int) -> dict:
    """What the batch wrote, without ids the two runs give differently (unmatched rows are found by hash)."""
    hashes = {o.tx_hash for o in logs}
    txs = PaymentTransaction.objects.filter(contract=contract).filter(
        pk__in=PaymentTransaction.objects.filter(user__in=users).values("pk")
    ) | PaymentTransaction.objects.filter(tx_hash__in=hashes)
    key = {tx.pk: tx.order_id or tx.tx_hash for tx in txs}
    ledger = sorted(
        (
            key[tx.pk],
            tx.status,
            tx.tx_hash,
            tx.block_number,
            tx.block_hash,
            tx.log_index,
            tx.payer_address,
            tx.usd_rate_at_confirmation,
            tx.failure_reason,
            tx.confirmed_at,
            tx.refund_tx_hash,
            tuple(tx.status_history.values_list("from_status", "to_status", "actor", "reason", "created_at")),
        )
        for tx in txs
    )
    subscriptions = {}
    for user in users:
        subscriptions[user.username] = [
            (
                sub.status,
                sub.plan.slug,
                sub.current_period_start,
                sub.current_period_end,
                sub.pending_plan.slug if sub.pending_plan else None,
                sub.pending_period_end,
                key.get(sub.last_transaction_id),
                sub.debt_amount,
                sub.cancel_at_period_end,
                sorted(
                    (p.plan.slug, p.kind, p.status, p.starts_at, p.ends_at, key.get(p.transaction_id), p.note)
                    for p in SubscriptionPeriod.objects.filter(subscription=sub).select_related("plan")
                ),
            )
            for sub in Subscription.objects.filter(user=user).order_by("pk").select_related("plan", "pending_plan")
        ]
    events = []
    for event in OutboxEvent.objects.filter(pk__gt=since).order_by("pk"):
        payload = {k: v for k, v in event.payload.items() if k not in ("event_id",)}
        if payload.get("transaction_id"):
            payload["transaction_id"] = key.get(int(payload["transaction_id"]))
        if payload.get("change_id"):  # the history row it reports, by what it says (ids differ between runs)
            change = TransactionStatusChange.objects.get(pk=payload["change_id"])
            payload["change_id"] = (key.get(change.transaction_id), change.from_status, change.to_status)
        data = dict(payload.get("data") or {})
        for name in ("transaction_id", "chain_event_id"):
            data.pop(name, None)
        payload["data"] = data
        payload.pop("key", None)
        payload.pop("title", None)
        subscribers = sorted(OutboxDelivery.objects.filter(event=event).values_list("subscriber", "status"))
        events.append((event.topic, event.aggregate_type, payload, subscribers))
    events.sort(key=repr)  # the bulk path writes its events after the others of the batch
    chain_events = sorted(
        (e.tx_hash, e.log_index, e.name, e.block_number, e.removed, e.apply_error, e.args, key.get(e.transaction_id))
        for e in ChainEvent.objects.filter(tx_hash__in=hashes)
    )
    return {"ledger": ledger, "subscriptions": subscriptions, "events": events, "chain_events": chain_events}


def apply(contract, logs, monkeypatch, *, bulk: bool) -> int:
    """The follower's `_apply` on one batch; returns how many logs the bulk path applied."""
    applied = []
    real = chain_sync.payments_apply_in_bulk

    def counted(**kwargs):
        left = real(**kwargs)
        applied.append(len(kwargs["observed"]) - len(left))
        return left

    monkeypatch.setattr(chain_sync, "payments_apply_in_bulk", counted)
    monkeypatch.setattr(chain_sync, "BULK_MIN_EVENTS", 1 if bulk else 10**6)
    receipts = {o.tx_hash: {"logs": []} for o in logs if o.name == "Transfer"}  # stray: no contract log
    with transaction.atomic():
        chain_sync._apply(contract, logs, receipts)
    return sum(applied)


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(before=BEFORE, steps=st.lists(STEP, min_size=3, max_size=8))
@example(  # new, renewal, downgrade queued, upgrade (one by one), refund in the batch, an earlier one again
    before=[(0, 1)],
    steps=[("pay", 1, 0, 1), ("pay", 1, 0, 2), ("pay", 0, 0, 1), ("pay", 0, 3, 1), ("refund", 0), ("again", 0)],
)
@example(  # several users, plan switch, mismatch, unknown order, stray transfer, payout
    before=[(2, 2)],
    steps=[
        ("pay", 0, 1, 1),
        ("pay", 2, 1, 1),
        ("mismatch", 1),
        ("unknown",),
        ("transfer",),
        ("withdrawn",),
        ("pay", 1, 2, 1),
        ("pay", 0, 1, 1),
    ],
)
def test_bulk_batch_writes_what_one_by_one_writes(catalog, monkeypatch, before, steps):
    contract, plans, usdc = catalog
    frozen = timezone.now().replace(microsecond=0) + timedelta(days=3)
    monkeypatch.setattr(timezone, "now", lambda: frozen)
    with transaction.atomic():  # each example leaves nothing behind for the next one
        users, logs = build(contract, plans, usdc, before, steps)
        since = OutboxEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        with transaction.atomic():
            assert apply(contract, logs, monkeypatch, bulk=False) == 0
            one_by_one = snapshot(contract, users, logs, since)
            transaction.set_rollback(True)
        in_bulk = apply(contract, logs, monkeypatch, bulk=True)
        assert snapshot(contract, users, logs, since) == one_by_one
        if not before and any(s[0] == "pay" for s in steps) and not any(s[0] in ("refund", "mismatch") for s in steps):
            assert in_bulk > 0  # a first payment of a user with nothing else in the batch is plain
        transaction.set_rollback(True)


@pytest.mark.parametrize("bulk", [True, False])
def test_plain_payments_in_bulk_write_no_audit_rows(catalog, monkeypatch, bulk):
    """Mirrored chain events are recorded by the ledger's status history: the bulk path writes no audit row
    (the one-by-one path, through the models' save(), writes them: the comparison shows the test can fail)."""
    contract, plans, usdc = catalog
    users = [UserFactory() for _ in range(3)]
    batch = Batch(contract, usdc)
    txs = [checkout(users[i % 3], plans[1]) for i in range(6)]  # three new subscriptions, three renewals
    for tx in txs:
        batch.paid(tx)
    audit_before = LogEntry.objects.count()
    assert apply(contract, batch.logs, monkeypatch, bulk=bulk) == (6 if bulk else 0)
    assert all(tx.status == TxStatus.CONFIRMED for tx in PaymentTransaction.objects.filter(pk__in=[t.pk for t in txs]))
    assert SubscriptionPeriod.objects.filter(transaction__in=txs, status="active").count() == 6
    assert OutboxEvent.objects.filter(topic="plan.changed.v1", aggregate_id__in=[str(u.pk) for u in users]).count() == 6
    written = LogEntry.objects.count() - audit_before
    assert (written == 0) if bulk else (written >= 6)


@pytest.mark.chain
def test_batches_are_cut_by_logs_at_block_boundaries_and_shortened_by_time(chain, world, user_api, monkeypatch):
    """On anvil, through `contract_sync`: a batch holds at most MAX_EVENTS_PER_BATCH logs and ends at a block
    boundary (its cursor commits with it); a batch slower than BATCH_SECONDS makes the next one shorter; a run
    starts no batch after RUN_SECONDS. Every payment is applied once, in bulk."""
    from tests.integration.lifecycle.conftest import PAYERS, create_checkout, follower_from_head, send_steps

    cursor = follower_from_head(world, chain)
    blocks = []
    for i in range(5):
        body = create_checkout(user_api, "eth-pro", PAYERS[i % len(PAYERS)])
        (tx_hash,) = send_steps(chain, PAYERS[i % len(PAYERS)], body["payment"])
        blocks.append(chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"])
    chain.anvil.mine(world.network.confirmation_depth)
    safe = chain.anvil.block_number() - world.network.confirmation_depth
    monkeypatch.setattr(chain_sync, "BULK_MIN_EVENTS", 1)
    monkeypatch.setattr(chain_sync, "MAX_EVENTS_PER_BATCH", 2)
    monkeypatch.setattr(chain_sync, "RUN_SECONDS", 0.0)

    first = chain_sync.contract_sync(contract_id=world.contract.pk)
    cursor.refresh_from_db()
    assert (first.batches, first.logs) == (1, 2)  # the run stopped after one batch (RUN_SECONDS)
    assert cursor.last_block == blocks[2] - 1  # cut before the block of the third log
    assert PaymentTransaction.objects.filter(status=TxStatus.CONFIRMED).count() == 2

    monkeypatch.setattr(chain_sync, "RUN_SECONDS", 600.0)
    monkeypatch.setattr(chain_sync, "BATCH_SECONDS", 0.0)  # every batch is "too slow": the next is 1 block long
    second = chain_sync.contract_sync(contract_id=world.contract.pk, max_batches=2)
    cursor.refresh_from_db()
    # Batch 1: two logs, cut before the fifth payment's block; batch 2: one block only (shortened by time).
    assert (second.batches, second.logs, second.from_block) == (2, 3, blocks[2])
    assert second.to_block == cursor.last_block == blocks[4]

    monkeypatch.setattr(chain_sync, "BATCH_SECONDS", 20.0)
    while chain_sync.contract_sync(contract_id=world.contract.pk).batches:
        pass
    cursor.refresh_from_db()
    assert cursor.last_block == safe
    txs = PaymentTransaction.objects.filter(contract=world.contract, status=TxStatus.CONFIRMED)
    assert txs.count() == 5
    for tx in txs:
        assert tx.status_history.filter(to_status="confirmed").count() == 1
        assert ChainEvent.objects.get(tx_hash=tx.tx_hash).transaction_id == tx.pk
        assert OutboxEvent.objects.filter(topic="plan.changed.v1", payload__transaction_id=str(tx.pk)).count() == 1
    assert SubscriptionPeriod.objects.filter(transaction__in=txs, status="active").count() == 5

    # The follower read no receipt for them; the fee sweep fills each row's fee from its mined receipt.
    from billing.services.receipts import payment_fees_fill

    assert not txs.filter(gas_used__isnull=False).exists()
    assert payment_fees_fill() == 5
    for tx in txs.all():  # fresh rows
        receipt = chain.w3.eth.get_transaction_receipt(tx.tx_hash)
        assert (tx.gas_used, tx.fee) == (receipt["gasUsed"], receipt["gasUsed"] * receipt["effectiveGasPrice"])
    assert payment_fees_fill() == 0  # nothing left


@pytest.mark.chain
@pytest.mark.django_db(transaction=True)
def test_bulk_batch_killed_midway_neither_loses_nor_doubles(chain, world, user_api, plain_user, monkeypatch):
    """test_follower.py's kill test, through the bulk path: the worker's connection dies while batch 2 is
    applied in bulk; batch 1 stays committed with its cursor, batch 2 rolls back whole, the next run applies
    the rest once."""
    from django.db import OperationalError

    from billing.tasks import contract_sync_task
    from tests.integration.lifecycle.conftest import PAYERS, create_checkout, follower_from_head, send_steps

    cursor = follower_from_head(world, chain)
    start = cursor.last_block
    txs = []
    for i in range(4):  # one payment at the first block of each 3-block batch
        body = create_checkout(user_api, "eth-pro", PAYERS[i % len(PAYERS)])
        send_steps(chain, PAYERS[i % len(PAYERS)], body["payment"])
        txs.append(PaymentTransaction.objects.get(public_id=body["id"]))
        chain.anvil.mine(2)
    chain.anvil.mine(world.network.confirmation_depth)
    monkeypatch.setattr(chain_sync, "BULK_MIN_EVENTS", 1)
    real, calls = chain_sync.payments_apply_in_bulk, []

    def dies_in_batch_two(**kwargs):
        calls.append(1)
        left = real(**kwargs)  # the writes happen, then the connection is lost before the batch commits
        if len(calls) == 2:
            raise OperationalError("worker lost in the middle of bulk batch 2")
        return left

    monkeypatch.setattr(chain_sync, "payments_apply_in_bulk", dies_in_batch_two)
    config = CryptoConfig.load()
    config.get_logs_max_range = 3
    config.save()
    contract_sync_task(world.contract.pk)

    cursor.refresh_from_db()
    assert cursor.last_block == start + 3 and "worker lost" in cursor.last_error
    statuses = [PaymentTransaction.objects.get(pk=tx.pk).status for tx in txs]
    assert statuses == [TxStatus.CONFIRMED] + [TxStatus.PENDING] * 3
    assert ChainEvent.objects.filter(contract=world.contract).count() == 1

    monkeypatch.setattr(chain_sync, "payments_apply_in_bulk", real)
    assert chain_sync.contract_sync(contract_id=world.contract.pk).logs == 3
    for tx in txs:
        tx.refresh_from_db()
        assert tx.status == TxStatus.CONFIRMED
        assert tx.status_history.filter(to_status="confirmed").count() == 1
        assert OutboxEvent.objects.filter(topic="plan.changed.v1", payload__transaction_id=str(tx.pk)).count() == 1
    sub = Subscription.objects.get(user=plain_user)
    assert sub.current_period_end - sub.current_period_start == timedelta(days=30 * 4)
