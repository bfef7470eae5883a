"""Property-based acceptance of the daily revenue rollup (issue 11; billing.models.rollup, migration 0018).

Random histories of payments (one by one through `payment_observe_paid`, several at once through the
follower's bulk SQL `payments_apply_in_bulk`, late confirmations of expired checkouts), failed and expired
checkouts (`transaction_set_status`), refunds, reorg rollbacks of payments and of refunds, payments mined again,
subscription sweeps, and the edits an operator or a script can make (a stored USD rate changed or removed, a
payment moved to another plan, rates changed by `bulk_update`), on a clock that crosses UTC days. After every
step the rollup, summed per (kind, UTC day, network, token, plan), equals a fresh aggregate over the ledger
computed here in Python from the definitions in docs/overview.md ("Revenue"): no key missing, none extra.

Bounded: two fixed histories and `PROPERTY_EXAMPLES` random ones (10 by default), derandomized."""

from __future__ import annotations

import os
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from billing.models import PaymentTransaction, RevenueRollup, TxStatus
from billing.services.ledger import transaction_set_status
from billing.services.payments import (
    ZERO_ADDRESS,
    GasFacts,
    ObservedLog,
    payment_observe_paid,
    payment_observe_refunded,
    payment_reorged_out,
    payments_apply_in_bulk,
)
from billing.services.rollup import revenue_rollup_rebuild
from billing.services.subscriptions import subscription_advance, subscriptions_due_ids
from overview import selectors as ov
from overview.periods import Period
from tests.factories import (
    ConfirmedTransactionFactory,
    PaymentProviderFactory,
    PaymentTransactionFactory,
    PlanFactory,
    TokenFactory,
    UserFactory,
    random_address,
    random_hash,
)

pytestmark = pytest.mark.django_db
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "10"))
PAYER = random_address()
HOUR = 3600
RATES = [None, Decimal("1.00000000"), Decimal("0.99871234"), Decimal("2500.12345678")]


def fresh_aggregate() -> dict[tuple, tuple]:
    """The rollup's figures straight from the ledger, in Python (not the migration's SQL)."""
    out: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), 0, 0])
    for tx in PaymentTransaction.objects.filter(user__isnull=False):
        rate = tx.usd_rate_at_confirmation if tx.usd_rate_at_confirmation is not None else tx.usd_rate_at_checkout
        parts = []
        if tx.status in (TxStatus.CONFIRMED, TxStatus.REFUNDED) and tx.confirmed_at is not None:
            parts.append(("gross", tx.confirmed_at))
        if tx.status == TxStatus.REFUNDED and tx.refunded_at is not None:
            parts.append(("refund", tx.refunded_at))
        for kind, moment in parts:
            slot = out[(kind, moment.astimezone(UTC).date(), tx.network_id, tx.token_id, tx.plan_id)]
            slot[0] += tx.amount
            slot[1] += tx.amount * rate if rate is not None else 0
            slot[2] += tx.amount if rate is None else 0
            slot[3] += 1
    return {key: tuple(v) for key, v in out.items()}


def rollup() -> dict[tuple, tuple]:
    rows = (
        RevenueRollup.objects.values("kind", "day", "network_id", "token_id", "plan_id")
        .annotate(a=Sum("amount"), u=Sum("usd"), r=Sum("unrated"), n=Sum("n"))
        .order_by()
    )
    out = {}
    for row in rows:
        values = (int(row["a"]), row["u"], int(row["r"]), row["n"])
        if values != (0, 0, 0, 0):
            out[(row["kind"], row["day"], row["network_id"], row["token_id"], row["plan_id"])] = values
    return out


def assert_in_step() -> None:
    assert rollup() == fresh_aggregate()


def _exact(totals: dict) -> dict:
    """{window: {figure: {token: (amount, usd)}}} with the exact fractions, zero entries left out."""
    return {
        p: {
            name: {k: (v, money.usds[k]) for k, v in money.amounts.items() if v or money.usds[k]}
            for name, money in figures.items()
        }
        for p, figures in totals.items()
    }


def _ledger_only(period: Period):
    return [], [(period.previous.start, period.start), (period.start, period.end)]


def assert_reads_agree(periods: list[Period], plan_id: int) -> None:
    """The overview's money read (whole days from the rollup, edge days from the ledger) equals the same read
    from the ledger alone, for the dashboard's totals and the revenue totals filtered by plan."""
    catalog = ov.Catalog()
    ids = catalog.money_network_ids(True)
    only_plan = ov.SeriesFilter(plan_id=plan_id)
    for period in periods:
        mixed = _exact(ov.revenue_totals(catalog, period, ids))
        filtered = ov._revenue_totals_filtered(catalog, period, ids, only_plan)
        with mock.patch.object(ov, "split_days", _ledger_only):
            assert mixed == _exact(ov.revenue_totals(catalog, period, ids)), period
            assert filtered == ov._revenue_totals_filtered(catalog, period, ids, only_plan), period


@pytest.fixture
def world():
    provider = PaymentProviderFactory()
    network = provider.contract.network
    usdc = TokenFactory(network=network, decimals=6, usd_estimate=Decimal("1.00000000"))
    weth = TokenFactory(network=network, decimals=18, usd_estimate=Decimal("2500.12345678"))
    common = {"provider": provider, "contract": provider.contract}
    plans = [
        PlanFactory(slug="r-starter", tier=1, price_token=usdc, price_amount=5_000_000, **common),
        PlanFactory(slug="r-pro", tier=2, price_token=usdc, price_amount=15_000_001, **common),
        PlanFactory(
            slug="r-weekly", tier=2, interval="week", price_token=weth, price_amount=1_600_000_000_000_001, **common
        ),
    ]
    return provider.contract, plans


class Run:
    def __init__(self, contract, plans, t0: datetime):
        self.contract = contract
        self.plans = plans
        self.now = t0
        self.block = 1000
        self.users = [UserFactory(username=f"roll-{secrets.token_hex(6)}") for _ in range(2)]
        self.txs: list[int] = []

    def log(self, tx: PaymentTransaction, name: str, *, tx_hash: str | None = None, log_index: int = 0):
        self.block += 1
        return ObservedLog(
            name=name,
            chain_id=self.contract.network.chain_id,
            address=self.contract.address,
            tx_hash=tx_hash or random_hash(),
            log_index=log_index,
            block_number=self.block,
            block_hash=random_hash(),
            args={
                "orderId": tx.order_id,
                "payer": PAYER,
                "token": tx.token.address or ZERO_ADDRESS,
                "amount": tx.amount,
                "planId": tx.plan_id,
            },
        )

    def checkout(self, plan_i: int, user_i: int, rate_i: int) -> PaymentTransaction:
        plan = self.plans[plan_i % len(self.plans)]
        tx = PaymentTransactionFactory(
            user=self.users[user_i % len(self.users)],
            plan=plan,
            amount=plan.price_amount,
            payer_address=PAYER,
            usd_rate_at_checkout=RATES[rate_i % len(RATES)],
        )
        self.txs.append(tx.pk)
        return tx

    def pick(self, index: int, predicate) -> PaymentTransaction | None:
        rows = PaymentTransaction.objects.select_related("token").in_bulk(self.txs)
        candidates = [rows[pk] for pk in self.txs if predicate(rows[pk])]
        return candidates[index % len(candidates)] if candidates else None

    def do(self, step: tuple) -> None:  # noqa: C901 (one branch per kind of step)
        kind, a, b, c = step
        if kind == "pay":
            tx = self.checkout(a, b, c)
            payment_observe_paid(
                contract=self.contract, observed=self.log(tx, "Paid"), gas=GasFacts(), source="t", now=self.now
            )
        elif kind == "bulk":  # the follower's bulk path: several plain payments in one statement
            txs = [self.checkout(a + i, b + i, c + i) for i in range(1 + a % 3)]
            left = payments_apply_in_bulk(
                contract=self.contract, observed=[self.log(tx, "Paid") for tx in txs], source="t"
            )
            for observed in left:
                payment_observe_paid(contract=self.contract, observed=observed, gas=GasFacts(), source="t")
        elif kind == "open":  # a checkout that ends failed or expired (and may still confirm later)
            tx = self.checkout(a, b, c)
            status = TxStatus.FAILED if c % 2 else TxStatus.EXPIRED
            transaction_set_status(tx=tx, status=status, actor="t", reason="test")
        elif kind == "late":  # an expired or failed checkout whose payment arrives after all
            tx = self.pick(a, lambda t: t.status in (TxStatus.EXPIRED, TxStatus.FAILED))
            if tx is not None:
                payment_observe_paid(
                    contract=self.contract, observed=self.log(tx, "Paid"), gas=GasFacts(), source="t", now=self.now
                )
        elif kind == "refund":
            tx = self.pick(
                a, lambda t: t.status == TxStatus.CONFIRMED or (t.status == "needs_review" and t.refund_tx_hash)
            )
            if tx is not None:
                payment_observe_refunded(
                    contract=self.contract, observed=self.log(tx, "Refunded"), source="t", now=self.now
                )
        elif kind == "reorg":
            tx = self.pick(a, lambda t: t.status == TxStatus.CONFIRMED)
            if tx is not None:
                payment_reorged_out(
                    tx_id=tx.pk, event_name="Paid", tx_hash=tx.tx_hash, log_index=tx.log_index,
                    actor="t", reason="reorg", now=self.now,
                )  # fmt: skip
        elif kind == "unrefund":
            tx = self.pick(a, lambda t: t.status == TxStatus.REFUNDED)
            if tx is not None:
                payment_reorged_out(
                    tx_id=tx.pk, event_name="Refunded", tx_hash=tx.refund_tx_hash, log_index=0,
                    actor="t", reason="reorg", now=self.now,
                )  # fmt: skip
        elif kind == "remine":
            tx = self.pick(a, lambda t: t.status == TxStatus.NEEDS_REVIEW and not t.refund_tx_hash)
            if tx is not None:
                log = self.log(tx, "Paid", tx_hash=tx.tx_hash, log_index=(tx.log_index or 0) + 1)
                payment_observe_paid(contract=self.contract, observed=log, gas=GasFacts(), source="t", now=self.now)
        elif kind == "rate":  # an operator edit of the stored rate (set, changed or removed)
            tx = self.pick(a, lambda t: True)
            if tx is not None:
                PaymentTransaction.objects.filter(pk=tx.pk).update(usd_rate_at_confirmation=RATES[b % len(RATES)])
        elif kind == "replan":  # a payment moved to another plan (same token: the plan's price token)
            tx = self.pick(a, lambda t: True)
            if tx is not None:
                PaymentTransaction.objects.filter(pk=tx.pk).update(plan=self.plans[b % 2])
        elif kind == "bulk_rates":  # bulk_update: one UPDATE statement over several rows
            rows = list(PaymentTransaction.objects.filter(pk__in=self.txs).order_by("pk")[: 1 + a % 4])
            for i, row in enumerate(rows):
                row.usd_rate_at_checkout = RATES[(b + i) % len(RATES)]
            PaymentTransaction.objects.bulk_update(rows, ["usd_rate_at_checkout"])
        elif kind == "sweep":  # time passes (across UTC days); subscriptions renew, lapse or expire
            self.now += timedelta(seconds=a * HOUR + b * 60)
            for pk in subscriptions_due_ids(now=self.now):
                subscription_advance(subscription_id=pk, now=self.now)


small = st.integers(0, 20)
KINDS = ["pay"] * 4 + ["bulk", "open", "late", "refund", "refund", "reorg", "unrefund", "remine"]
KINDS += ["rate", "replan", "bulk_rates"] + ["sweep"] * 3
steps = st.lists(st.tuples(st.sampled_from(KINDS), small, small, small), min_size=6, max_size=16)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
@example(
    steps=[
        ("pay", 0, 0, 1),
        ("pay", 2, 1, 0),  # no stored rate: valued at the token's estimate by the reader
        ("sweep", 20, 0, 0),
        ("refund", 0, 0, 0),
        ("sweep", 30, 0, 0),
        ("unrefund", 0, 0, 0),  # back under review: neither gross nor refund
        ("refund", 0, 0, 0),  # refunded again, on a later day
        ("reorg", 0, 0, 0),
        ("remine", 0, 0, 0),
    ]
)
@example(
    steps=[
        ("bulk", 2, 0, 0),
        ("open", 1, 1, 1),
        ("open", 0, 0, 2),
        ("sweep", 25, 0, 0),
        ("late", 0, 0, 0),
        ("late", 1, 0, 0),
        ("rate", 1, 0, 0),
        ("replan", 2, 1, 0),
        ("bulk_rates", 3, 1, 0),
    ]
)
def test_rollup_equals_a_fresh_aggregate_after_every_step(world, steps):
    contract, plans = world
    t0 = timezone.now().replace(hour=21, minute=0, second=0, microsecond=0) + timedelta(days=2)
    with transaction.atomic():  # each example leaves nothing behind for the next one
        run = Run(contract, plans, t0)
        with mock.patch("django.utils.timezone.now", lambda: run.now):
            for step in steps:
                run.do(step)
                assert_in_step()
            midnight = t0.replace(hour=0)
            assert_reads_agree(
                [
                    Period("custom", midnight - timedelta(days=1), run.now + timedelta(days=2)),  # whole days only
                    Period("custom", t0 - timedelta(hours=37), run.now + timedelta(hours=5)),
                    Period("custom", t0 + timedelta(hours=2), t0 + timedelta(hours=26)),  # cut inside a day
                    Period("custom", t0 + timedelta(minutes=30), t0 + timedelta(minutes=90)),  # shorter than a day
                ],
                plans[0].pk,
            )
        transaction.set_rollback(True)


def test_delete_and_rebuild_keep_the_rollup_in_step():
    kept = ConfirmedTransactionFactory(amount=7_000_001, usd_rate_at_confirmation=Decimal("1.23456789"))
    gone = ConfirmedTransactionFactory(
        plan=kept.plan, amount=3, usd_rate_at_confirmation=None, usd_rate_at_checkout=None
    )
    PaymentTransactionFactory(plan=kept.plan)  # a checkout still open: nothing to count
    assert rollup() == fresh_aggregate() and len(rollup()) == 1
    (key,) = rollup()
    assert rollup()[key] == (7_000_004, Decimal("7000001") * Decimal("1.23456789"), 3, 2)
    gone.status_history.all().delete()
    gone.delete()
    assert rollup() == fresh_aggregate() and rollup()[key][3] == 1
    # A load that skipped the triggers (as the bench seed does), then the rebuild.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE billing_paymenttransaction SET amount = amount + 1 WHERE id = %s", [kept.pk])
        cursor.execute("SET LOCAL session_replication_role = origin")
    assert rollup() != fresh_aggregate()
    revenue_rollup_rebuild()
    assert rollup() == fresh_aggregate()
    # One key keeps one row however many statements wrote to it.
    for rate in RATES:
        PaymentTransaction.objects.filter(pk=kept.pk).update(usd_rate_at_confirmation=rate)
    assert RevenueRollup.objects.filter(kind="gross").count() == 1
    assert rollup() == fresh_aggregate()
