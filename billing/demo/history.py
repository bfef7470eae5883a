"""`manage.py seed_demo --history DAYS`: a believable subscription business over the last DAYS days, so every
overview figure and chart has something true to show.

Customers arrive over time (more each week: a growing business), pick a plan (variants of the two experiments
assigned deterministically by customer number), check out (some abandon, some fail and retry), then live
through the subscription rules of docs/subscriptions.md: renewals (some early, some late inside the grace
period), upgrades (a new period starts at once), downgrades (queued to the period end), cancellations, lapses
(past due, then expired owing the renewal), refunds (the subscription ends). Around them: stray transfers, a
reorg that sends two payments to review, a day when a provider outage makes payments fail, weekly withdrawals
to the treasury with their network fees, two dead letters.

Everything is decided by one seeded random generator per customer, so the same DAYS and anchor give the same
business. Rows are written with bulk_create in one transaction (no signals, no audit entries: demo data).
Idempotent: a history already present is left as it is (one history per database).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from eth_utils import to_checksum_address

from billing.demo.seed import (
    BLOCK_BASE,
    FAILURE_REASONS,
    GAS_PRICE_WEI,
    REFUND_REASONS,
    USD,
    DemoCatalog,
    SeedReport,
    _catalog_for_history,
    _eth_usd,
    _explicit_timestamps,
    _hex32,
    customer_users,
)
from billing.demo.seed import _mine as _mine_row
from billing.fields import ZERO_ADDRESS
from billing.models import (
    ChainEvent,
    Interval,
    OperatorTransaction,
    OutboxDelivery,
    OutboxEvent,
    PaymentTransaction,
    RefundStatus,
    Subscription,
    SubscriptionStatus,
    TransactionStatusChange,
    TxStatus,
)
from profiles.seed import wallets_link_verified_bulk

HISTORY_KEY = "demo_history"
CLIENT_PREFIX = "client-"
SEED = 20260301
TREASURY = "0x000000000000000000000000000000000000dEaD"

# Where a new customer starts: (weight, plan family). A family with variants is an experiment.
FAMILIES: list[tuple[int, str]] = [
    (26, "starter"),
    (28, "pro"),  # pricing-2026q4: pro (a) / pro-b (b)
    (8, "business"),
    (8, "yearly"),  # yearly-2026: pro-yearly (a) / pro-yearly-b (b)
    (9, "pro-eth"),
    (9, "sprint-weekly"),
    (12, "legacy-pro-usdc"),  # public networks: ethereum (production) and base-sepolia (a testnet)
]
VARIANTS = {
    "pro": ("pricing-2026q4", {"a": "pro", "b": "pro-b"}),
    "yearly": ("yearly-2026", {"a": "pro-yearly", "b": "pro-yearly-b"}),
}
# Chance that a started checkout is paid, per plan (the experiments' variants differ on purpose).
CONVERSION = {
    "starter": 0.78,
    "pro": 0.74,
    "pro-b": 0.63,
    "business": 0.62,
    "pro-yearly": 0.52,
    "pro-yearly-b": 0.64,
    "pro-eth": 0.7,
    "sprint-weekly": 0.76,
    "legacy-pro-usdc": 0.72,
}
UPGRADE_TO = {"starter": "pro", "sprint-weekly": "pro", "pro": "business", "pro-b": "business"}
DOWNGRADE_TO = {"business": "pro", "pro": "starter", "pro-b": "starter"}


def variant_of(experiment: str, customer: int) -> str:
    """Deterministic assignment: the same customer always sees the same variant."""
    return "ab"[hashlib.sha256(f"{experiment}:{customer}".encode()).digest()[0] % 2]


@dataclass
class _Pay:
    customer: int
    plan: str
    network: str
    token: tuple[str, str]
    amount: int
    periods: int
    status: str
    created: datetime
    submitted: datetime | None = None
    confirmed: datetime | None = None
    refunded: datetime | None = None
    failure_reason: str = ""
    retry: bool = False  # a failed first attempt before the confirmation
    failed_at: datetime | None = None  # of that first attempt
    resubmitted: datetime | None = None
    reorged: datetime | None = None  # sent to review by a reorg at this time
    index: int = 0
    row: PaymentTransaction | None = None


@dataclass
class _Sub:
    customer: int
    plan: str
    created: datetime
    start: datetime
    end: datetime
    last: _Pay
    status: str = SubscriptionStatus.ACTIVE
    cancel: bool = False
    canceled_at: datetime | None = None
    pending_plan: str | None = None
    pending_end: datetime | None = None
    grace_until: datetime | None = None
    debt: int = 0
    ended: datetime | None = None


@dataclass
class _World:
    now: datetime
    origin: datetime
    catalog: DemoCatalog
    pays: list[_Pay] = field(default_factory=list)
    subs: list[_Sub] = field(default_factory=list)
    customers: dict[int, datetime] = field(default_factory=dict)
    provider_networks: dict[str, set[str]] = field(default_factory=dict)


def _period(world: _World, plan: str) -> timedelta:
    return world.catalog.plans[plan].period


def _price(world: _World, plan: str, token: tuple[str, str], at: datetime, periods: int = 1) -> int:
    """The plan's price in `token`: the same asset as priced, or the USD value in ETH at that day's rate."""
    p = world.catalog.plans[plan]
    amount = p.price_amount * periods
    if token[1] == "ETH" and not p.price_token.is_native:
        usd = Decimal(amount) / USD
        return int(usd / _eth_usd(at, world.origin) * 10**6) * 10**12
    return amount


def _checkout(
    world: _World,
    rng: random.Random,
    customer: int,
    plan: str,
    network: str,
    token,
    at: datetime,
    *,
    periods: int = 1,
    paid: bool = True,
) -> _Pay:
    """One checkout started at `at`; paid (confirmed a few minutes later), or abandoned / failed."""
    pay = _Pay(customer, plan, network, token, _price(world, plan, token, at, periods), periods, TxStatus.EXPIRED, at)
    if paid:
        pay.status = TxStatus.CONFIRMED
        pay.submitted = at + timedelta(seconds=rng.randint(20, 240))
        pay.retry = rng.random() < 0.07
        network_obj = world.catalog.networks[network]
        depth = network_obj.confirmation_depth * network_obj.block_time_seconds
        sent = pay.submitted
        if pay.retry:  # the wallet's first transaction reverts; it sends another one
            pay.failed_at = sent + timedelta(seconds=rng.randint(5, 60))
            pay.resubmitted = sent = pay.failed_at + timedelta(seconds=rng.randint(30, 240))
        pay.confirmed = sent + timedelta(seconds=depth + 1 + int(rng.expovariate(1 / 20)))
    elif rng.random() < 0.25:
        pay.status = TxStatus.FAILED
        pay.submitted = at + timedelta(seconds=rng.randint(20, 240))
        pay.failure_reason = rng.choice(FAILURE_REASONS)
    world.pays.append(pay)
    return pay


def _renewal(world: _World, rng: random.Random, sub: _Sub, plan: str, at: datetime, periods: int = 1) -> _Pay:
    """A payment of a live customer: the same plan is paid the way it was last time; another plan (an upgrade
    or a downgrade, all priced in the local stable token) in its own price token."""
    if plan == sub.last.plan:
        token = sub.last.token
    else:
        price_token = world.catalog.plans[plan].price_token
        token = (price_token.network.slug, price_token.symbol)
    if rng.random() < 0.03:  # a renewal attempt that fails before the one that works
        _checkout(world, rng, sub.customer, plan, token[0], token, at - timedelta(hours=2), paid=False)
    return _checkout(world, rng, sub.customer, plan, token[0], token, at, periods=periods)


def _simulate_customer(world: _World, customer: int, arrival: datetime) -> None:
    """One customer's story: the plan they come for, the checkout funnel, then period after period until the
    subscription ends or reaches today."""
    rng = random.Random(SEED * 1_000_003 + customer)
    plan, network, token = _first_choice(world, rng, customer)
    world.customers[customer] = arrival
    first = _funnel(world, rng, customer, plan, network, token, arrival)
    if first is None or first.confirmed >= world.now:
        if first is not None:
            first.status, first.confirmed = TxStatus.SUBMITTED, None
        return
    sub = _Sub(
        customer, plan, first.confirmed, first.confirmed, first.confirmed + _period(world, plan) * first.periods, first
    )
    world.subs.append(sub)
    _live(world, rng, sub)


def _first_choice(world: _World, rng: random.Random, customer: int) -> tuple[str, str, tuple[str, str]]:
    """The plan family the customer comes for (its experiment variant), and the network and token they pay in."""
    plans = world.catalog.plans
    family = rng.choices([f for _, f in FAMILIES], weights=[w for w, _ in FAMILIES])[0]
    plan = family
    if family in VARIANTS:
        experiment, mapping = VARIANTS[family]
        plan = mapping[variant_of(experiment, customer)]
    network = plans[plan].price_token.network.slug
    token = (network, plans[plan].price_token.symbol)
    if plan == "legacy-pro-usdc":
        network = "ethereum" if rng.random() < 0.6 else "base-sepolia"
        token = (network, "ETH" if rng.random() < 0.25 else "USDC")
    return plan, network, token


def _funnel(
    world: _World, rng: random.Random, customer: int, plan: str, network: str, token: tuple[str, str], at: datetime
) -> _Pay | None:
    """A checkout that is paid, or abandoned / failed (then maybe a second try a bit later). -> the paid one."""
    plans = world.catalog.plans
    for _attempt in range(2):
        paid = rng.random() < CONVERSION[plan]
        periods = 3 if plans[plan].interval in (Interval.MONTH, Interval.WEEK) and rng.random() < 0.07 else 1
        pay = _checkout(world, rng, customer, plan, network, token, at, periods=periods, paid=paid)
        if paid:
            return pay
        if rng.random() < 0.6:
            return None
        at = at + timedelta(hours=rng.randint(1, 30))
        if at >= world.now - timedelta(hours=1):
            return None
    return None


RENEW_PROBABILITY = {"day": 0.9, "week": 0.84, "month": 0.86, "year": 0.8}


def _live(world: _World, rng: random.Random, sub: _Sub) -> None:
    """Period after period: within each, maybe a refund (the end), an upgrade or a scheduled downgrade; at
    its end, the scheduled plan, a renewal, a cancellation or a lapse."""
    while True:
        if _refunded_within_period(world, rng, sub):
            return
        if _upgraded_within_period(world, rng, sub):
            continue
        _downgrade_within_period(world, rng, sub)
        if sub.end >= world.now:
            if rng.random() < 0.05:
                sub.cancel, sub.canceled_at = True, sub.start + (world.now - sub.start) * rng.random()
            return
        if not _next_period(world, rng, sub):
            return


def _refunded_within_period(world: _World, rng: random.Random, sub: _Sub) -> bool:
    """The latest payment refunded: the subscription ends there."""
    if rng.random() < 0.025 and sub.last.confirmed:
        refund_at = sub.last.confirmed + timedelta(hours=rng.randint(1, 96))
        if refund_at < world.now and refund_at < sub.end:
            sub.last.status, sub.last.refunded = TxStatus.REFUNDED, refund_at
            sub.status, sub.ended = SubscriptionStatus.EXPIRED, refund_at
            sub.end = max(refund_at, sub.start + timedelta(seconds=1))
            sub.pending_plan = sub.pending_end = None
            return True
    return False


def _upgraded_within_period(world: _World, rng: random.Random, sub: _Sub) -> bool:
    """An upgrade paid mid-period: the new plan starts at once (the customer keeps their experiment variant)."""
    if sub.plan in UPGRADE_TO and rng.random() < 0.07:
        at = sub.start + (sub.end - sub.start) * rng.uniform(0.2, 0.8)
        if at < world.now - timedelta(hours=1):
            target = UPGRADE_TO[sub.plan]
            if target in VARIANTS:
                experiment, mapping = VARIANTS[target]
                target = mapping[variant_of(experiment, sub.customer)]
            pay = _renewal(world, rng, sub, target, at)
            if pay.confirmed and pay.confirmed < world.now:
                sub.plan, sub.last = target, pay
                sub.start, sub.end = pay.confirmed, pay.confirmed + _period(world, target)
                sub.pending_plan = sub.pending_end = None
                return True
    return False


def _downgrade_within_period(world: _World, rng: random.Random, sub: _Sub) -> None:
    """A downgrade paid mid-period: the cheaper plan is scheduled after the current period."""
    if sub.plan in DOWNGRADE_TO and sub.pending_plan is None and rng.random() < 0.04:
        at = sub.start + (sub.end - sub.start) * rng.uniform(0.3, 0.9)
        if at < world.now - timedelta(hours=1):
            target = DOWNGRADE_TO[sub.plan]
            pay = _renewal(world, rng, sub, target, at)
            if pay.confirmed and pay.confirmed < world.now:
                sub.last = pay
                sub.pending_plan, sub.pending_end = target, sub.end + _period(world, target)


def _next_period(world: _World, rng: random.Random, sub: _Sub) -> bool:
    """The period is over: the scheduled plan starts, or the customer renews (early, on time or late inside
    the grace period), cancels or lapses. -> whether the story goes on."""
    plan_obj = world.catalog.plans[sub.plan]
    if sub.pending_plan:
        sub.plan, sub.start, sub.end = sub.pending_plan, sub.end, sub.pending_end
        sub.pending_plan = sub.pending_end = None
        return True
    roll = rng.random()
    p_renew = RENEW_PROBABILITY[plan_obj.interval]
    if roll < p_renew:
        early = timedelta(hours=rng.uniform(0, 36)) if plan_obj.interval != Interval.DAY else timedelta(0)
        at = max(sub.end - early, sub.start + timedelta(minutes=5))
        if roll < p_renew * 0.06:  # a late payment, inside the grace period
            at = sub.end + timedelta(hours=rng.uniform(1, 24 * plan_obj.grace_period_days))
        if at >= world.now - timedelta(minutes=30):
            _past_due(world, sub, plan_obj)
            return False
        pay = _renewal(world, rng, sub, sub.plan, at)
        if not pay.confirmed or pay.confirmed >= world.now:
            _past_due(world, sub, plan_obj)
            return False
        sub.last = pay
        sub.end = sub.end + _period(world, sub.plan)
        return True
    if roll < p_renew + 0.06:
        sub.cancel = True
        sub.canceled_at = sub.start + (sub.end - sub.start) * rng.uniform(0.1, 0.9)
        sub.status, sub.ended = SubscriptionStatus.CANCELED, sub.end
        return False
    _past_due(world, sub, plan_obj)
    return False


def _past_due(world: _World, sub: _Sub, plan_obj) -> None:
    sub.grace_until = sub.end + timedelta(days=plan_obj.grace_period_days)
    sub.debt = plan_obj.price_amount
    if sub.grace_until <= world.now:
        sub.status, sub.ended = SubscriptionStatus.EXPIRED, sub.grace_until
    else:
        sub.status = SubscriptionStatus.PAST_DUE


def simulate(*, days: int, now: datetime, catalog: DemoCatalog) -> _World:
    world = _World(now=now, origin=now - timedelta(days=days), catalog=catalog)
    rng = random.Random(SEED + days)
    customer = 0
    for day in range(days):
        start = world.origin + timedelta(days=day)
        expected = 3.2 * (1 + 1.4 * day / max(days, 1))  # a growing business
        arrivals = sorted(start + timedelta(seconds=rng.uniform(0, 86400)) for _ in range(_poisson(rng, expected)))
        for arrival in arrivals:
            if arrival >= now - timedelta(hours=1):
                continue
            customer += 1
            _simulate_customer(world, customer, arrival)
    _outage_day(world, rng, customer)
    _reorg(world)
    world.pays.sort(key=lambda p: (p.created, p.customer))
    for i, pay in enumerate(world.pays):
        pay.index = i
    return world


def _poisson(rng: random.Random, lam: float) -> int:
    n, p, threshold = 0, 1.0, pow(2.718281828459045, -lam)
    while True:
        p *= rng.random()
        if p <= threshold:
            return n
        n += 1


def _outage_day(world: _World, rng: random.Random, customers: int) -> None:
    """A provider outage 12 days ago: for three hours most payments on the local chain are dropped."""
    if world.now - world.origin < timedelta(days=13):
        return
    start = (world.now - timedelta(days=12)).replace(hour=14, minute=0, second=0, microsecond=0)
    for i in range(16):
        customer = customers + 1 + i
        world.customers[customer] = start + timedelta(minutes=10 * i)
        pay = _checkout(
            world,
            rng,
            customer,
            "starter",
            "anvil-local",
            ("anvil-local", "dUSD"),
            start + timedelta(minutes=11 * i),
            paid=False,
        )
        pay.status = TxStatus.FAILED
        pay.submitted = pay.created + timedelta(seconds=30)
        pay.failure_reason = "transaction dropped from the mempool"


def _reorg(world: _World) -> None:
    """Two recent renewals on the local chain whose logs a deep reorg removed: sent to review."""
    recent = [
        p
        for p in world.pays
        if p.status == TxStatus.CONFIRMED
        and p.network == "anvil-local"
        and p.confirmed
        and world.now - timedelta(days=9) < p.confirmed < world.now - timedelta(days=5)
    ]
    for pay in recent[:2]:
        pay.status = TxStatus.NEEDS_REVIEW
        pay.reorged = pay.confirmed + timedelta(minutes=7)


# --- rows ----------------------------------------------------------------------------------------------


def _payer(customer: int) -> str:
    return to_checksum_address(bytes.fromhex(_hex32("history-payer", customer)[2:42]))


def _chain_id_of(world: _World, pay: _Pay) -> int:
    return world.catalog.networks[pay.network].chain_id


def _rows_for(world: _World, pay: _Pay, user_id: int) -> tuple[PaymentTransaction, list[TransactionStatusChange]]:
    """The payment's ledger row and its status history, as the services would have written them."""
    rng = random.Random(SEED * 7 + pay.index)
    token = world.catalog.tokens[pay.token]
    actor = f"user:{user_id}"
    rate = (_eth_usd(pay.created, world.origin) if token.is_native else Decimal(1)).quantize(Decimal("0.00000001"))
    history: list[tuple[str, str, str, str, datetime, dict]] = [
        ("", TxStatus.PENDING, actor, "checkout created", pay.created, {})
    ]
    tx = _transaction_row(world, pay, rng, user_id, rate)
    if pay.status == TxStatus.EXPIRED:
        history.append(
            (TxStatus.PENDING, TxStatus.EXPIRED, "system:expiry", "checkout deadline passed", tx.expires_at, {})
        )
    elif pay.submitted is not None:
        tx.submitted_at = pay.submitted
        history.append((TxStatus.PENDING, TxStatus.SUBMITTED, actor, "transaction hash reported", pay.submitted, {}))
        if pay.status == TxStatus.FAILED:
            tx.failure_reason = pay.failure_reason
            failed = pay.submitted + timedelta(seconds=rng.randint(5, 60))
            if "reverted" in pay.failure_reason or pay.failure_reason == "out of gas":
                _mine(world, pay, tx, rng, failed, with_log=False)
            history.append((TxStatus.SUBMITTED, TxStatus.FAILED, "chain", pay.failure_reason, failed, {}))
        elif pay.confirmed is not None:
            history += _confirmed_history(world, pay, tx, rng, rate, actor)
    tx.updated_at = history[-1][4]
    changes = [
        TransactionStatusChange(from_status=f, to_status=t, actor=a, reason=r, created_at=when, details=d)
        for f, t, a, r, when, d in history
    ]
    return tx, changes


def _transaction_row(world: _World, pay: _Pay, rng: random.Random, user_id: int, rate: Decimal) -> PaymentTransaction:
    """The checkout's row as created (pending), before the chain says anything."""
    cat = world.catalog
    network = cat.networks[pay.network]
    plan = cat.plans[pay.plan]
    return PaymentTransaction(
        public_id=uuid.UUID(int=rng.getrandbits(128), version=4),
        user_id=user_id,
        product_id=plan.pk,
        plan=plan,
        provider=plan.provider
        if pay.network in world.provider_networks[plan.provider.slug]
        else cat.providers["evm-public"],
        contract=cat.contracts[f"pass-{pay.network}"],
        network=network,
        chain_id=network.chain_id,
        token=cat.tokens[pay.token],
        amount=pay.amount,
        periods=pay.periods,
        status=pay.status,
        order_id=_hex32("history-order", pay.index),
        payer_address=_payer(pay.customer),
        usd_rate_at_checkout=rate,
        expires_at=pay.created + timedelta(minutes=30),
        checkout_payload={HISTORY_KEY: pay.index, "source": "seed_demo --history"},
        created_at=pay.created,
    )


def _mine(world: _World, pay: _Pay, tx: PaymentTransaction, rng: random.Random, at: datetime, with_log: bool) -> None:
    tx_hash = _hex32("history-tx", pay.index, at.timestamp())
    network = world.catalog.networks[pay.network]
    _mine_row(tx, rng, network, at, since=world.origin - timedelta(days=2), tx_hash=tx_hash, with_log=with_log)


def _confirmed_history(
    world: _World, pay: _Pay, tx: PaymentTransaction, rng: random.Random, rate: Decimal, actor: str
) -> list[tuple[str, str, str, str, datetime, dict]]:
    """A confirmed payment (after a failed first try when the wallet retried), then maybe refunded or sent
    to review by a deep reorg."""
    network = world.catalog.networks[pay.network]
    history = []
    if pay.retry:
        reason = rng.choice(FAILURE_REASONS)
        history.append((TxStatus.SUBMITTED, TxStatus.FAILED, "chain", reason, pay.failed_at, {}))
        history.append((TxStatus.FAILED, TxStatus.SUBMITTED, actor, "wallet retried", pay.resubmitted, {}))
    depth = network.confirmation_depth * network.block_time_seconds
    _mine(world, pay, tx, rng, pay.confirmed - timedelta(seconds=depth), with_log=True)
    tx.confirmed_at = pay.confirmed
    tx.external_id = f"dlv-{tx.tx_hash[2:18]}"
    tx.usd_rate_at_confirmation = (
        _eth_usd(pay.confirmed, world.origin).quantize(Decimal("0.00000001")) if tx.token.is_native else rate
    )
    history.append(
        (
            TxStatus.SUBMITTED,
            TxStatus.CONFIRMED,
            "chain",
            f"{network.confirmation_depth} confirmations",
            pay.confirmed,
            {},
        )
    )
    if pay.refunded is not None:
        tx.refunded_at = pay.refunded
        tx.refund_tx_hash = _hex32("history-refund", pay.index)
        tx.refund_status = RefundStatus.MINED  # its refund operator transaction is mined
        history.append(
            (TxStatus.CONFIRMED, TxStatus.REFUNDED, "user:admin", rng.choice(REFUND_REASONS), pay.refunded, {})
        )
    if pay.reorged is not None:
        reason = f"reorg deeper than the confirmation depth removed block {tx.block_number}"
        history.append(
            (
                TxStatus.CONFIRMED,
                TxStatus.NEEDS_REVIEW,
                "chain:follower",
                reason,
                pay.reorged,
                {"fork_block": tx.block_number - 3},
            )
        )
    return history


def demo_history_seed_days(*, days: int, report: SeedReport, now: datetime | None = None) -> None:
    """Seed DAYS days of history once; a database that has one keeps it."""
    if days <= 0:
        return
    if PaymentTransaction.objects.filter(checkout_payload__has_key=HISTORY_KEY).exists():
        report.add_note("history already present: left as it is")
        return
    now = (now or timezone.now()).replace(microsecond=0)
    catalog = _catalog_for_history()
    world = simulate(days=days, now=now, catalog=catalog)
    world.provider_networks = {slug: {n.slug for n in p.networks.all()} for slug, p in catalog.providers.items()}
    with (
        transaction.atomic(),
        _explicit_timestamps(
            PaymentTransaction,
            TransactionStatusChange,
            Subscription,
            OperatorTransaction,
            ChainEvent,
            OutboxEvent,
            OutboxDelivery,
        ),
    ):
        users = _customers(world, report)
        # Each customer pays from one address, linked as a SIWE-verified wallet (what checkout requires).
        links = {}
        for pay in world.pays:
            links.setdefault(pay.customer, (users[pay.customer], _payer(pay.customer), _chain_id_of(world, pay)))
        report.add("wallets", wallets_link_verified_bulk(links=list(links.values())))
        built = [_rows_for(world, pay, users[pay.customer]) for pay in world.pays]
        txs = PaymentTransaction.objects.bulk_create([tx for tx, _ in built], batch_size=2000)
        changes = []
        for pay, tx, (_, rows) in zip(world.pays, txs, built, strict=True):
            pay.row = tx
            for row in rows:
                row.transaction_id = tx.pk
                changes.append(row)
        TransactionStatusChange.objects.bulk_create(changes, batch_size=5000)
        report.add("transactions", len(txs))
        report.add("status_changes", len(changes))
        _subscriptions(world, users, report)
        _unmatched(world, report)
        _operator_rows(world, report)
        _dead_letters(world, report)


def _customers(world: _World, report: SeedReport) -> dict[int, int]:
    return customer_users(world.customers, prefix=CLIENT_PREFIX, report=report)


def _subscriptions(world: _World, users: dict[int, int], report: SeedReport) -> None:
    plans = world.catalog.plans
    rows = []
    for sub in world.subs:
        plan = plans[sub.plan]
        rows.append(
            Subscription(
                user_id=users[sub.customer],
                plan=plan,
                status=sub.status,
                current_period_start=sub.start,
                current_period_end=sub.end,
                cancel_at_period_end=sub.cancel,
                canceled_at=sub.canceled_at,
                pending_plan=plans[sub.pending_plan] if sub.pending_plan else None,
                pending_period_end=sub.pending_end,
                grace_until=sub.grace_until,
                debt_amount=sub.debt,
                debt_token=plan.price_token if sub.debt else None,
                last_transaction=sub.last.row,
                ended_at=sub.ended,
                created_at=sub.created,
                updated_at=min(world.now, sub.ended or sub.last.confirmed or sub.created),
            )
        )
    Subscription.objects.bulk_create(rows, batch_size=2000)
    report.add("subscriptions", len(rows))


def _unmatched(world: _World, report: SeedReport) -> None:
    """Now and then someone sends stablecoins straight to the contract: no checkout, kept for review."""
    rng = random.Random(SEED * 11)
    cat = world.catalog
    rows, changes = [], []
    days = (world.now - world.origin).days
    for i in range(max(1, days // 12)):
        at = world.origin + timedelta(days=rng.uniform(1, days), hours=0)
        net = "anvil-local" if i % 3 else "ethereum"
        network = cat.networks[net]
        token = cat.tokens[(net, "dUSD" if net == "anvil-local" else "USDC")]
        tx = PaymentTransaction(
            public_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            contract=cat.contracts[f"pass-{net}"],
            network=network,
            chain_id=network.chain_id,
            token=token,
            amount=rng.randint(1, 300) * USD // 10,
            status=TxStatus.UNMATCHED,
            payer_address=to_checksum_address(bytes.fromhex(_hex32("stray", i)[2:42])),
            tx_hash=_hex32("history-stray", i),
            block_number=BLOCK_BASE[net] + int((at - world.origin).total_seconds() // network.block_time_seconds),
            block_hash=_hex32("stray-block", i),
            log_index=0,
            failure_reason="tokens sent to the contract without a checkout",
            usd_rate_at_confirmation=Decimal(1),
            checkout_payload={HISTORY_KEY: f"stray-{i}", "source": "seed_demo --history"},
            created_at=at,
            updated_at=at,
        )
        rows.append(tx)
    for tx in PaymentTransaction.objects.bulk_create(rows):
        changes.append(
            TransactionStatusChange(
                transaction_id=tx.pk,
                from_status="",
                to_status=TxStatus.UNMATCHED,
                actor="chain:follower",
                reason=tx.failure_reason,
                created_at=tx.created_at,
            )
        )
    TransactionStatusChange.objects.bulk_create(changes)
    report.add("transactions", len(rows))


def _operator_rows(world: _World, report: SeedReport) -> None:
    """Refund transactions with their fees, and a weekly withdrawal to the treasury from each production contract."""
    rows = _OperatorRows(world)
    for pay in world.pays:
        if pay.refunded is not None:
            rows.refund(pay)
    rows.weekly_sweeps()
    OperatorTransaction.objects.bulk_create(rows.ops)
    ChainEvent.objects.bulk_create(rows.events, ignore_conflicts=True)
    report.add("operator_transactions", len(rows.ops))
    report.add("chain_events", len(rows.events))


class _OperatorRows:
    """The operator transactions (mined, or reverted) and the contract logs the follower would have mirrored."""

    def __init__(self, world: _World):
        self.world = world
        self.rng = random.Random(SEED * 13)
        self.ops: list[OperatorTransaction] = []
        self.events: list[ChainEvent] = []

    def _block(self, net: str, at: datetime) -> int:
        network = self.world.catalog.networks[net]
        return BLOCK_BASE[net] + int((at - self.world.origin).total_seconds() // network.block_time_seconds)

    def send(self, kind: str, net: str, at: datetime, payment: PaymentTransaction | None = None, reverted=False) -> str:
        """One operator transaction mined (or reverted) at `at`, with its fee. -> its hash."""
        cat, rng = self.world.catalog, self.rng
        network = cat.networks[net]
        low, high = GAS_PRICE_WEI[net]
        gas, price = rng.randint(45_000, 90_000), rng.randint(low, high)
        tx_hash = (payment.refund_tx_hash if payment is not None else "") or _hex32(
            "history-op", kind, net, at.timestamp()
        )
        self.ops.append(
            OperatorTransaction(
                kind=kind,
                status=OperatorTransaction.Status.REVERTED if reverted else OperatorTransaction.Status.MINED,
                network=network,
                chain_id=network.chain_id,
                payment=payment,
                to=cat.contracts[f"pass-{net}"].address,
                tx_hashes=[tx_hash],
                mined_tx_hash=tx_hash,
                block_number=self._block(net, at),
                gas_used=gas,
                effective_gas_price=price,
                fee=gas * price,
                requested_by="user:admin",
                reason="weekly treasury sweep" if kind == "withdraw" else "refund requested by the customer",
                error="execution reverted" if reverted else "",
                last_sent_at=at - timedelta(seconds=30),
                mined_at=at,
                created_at=at - timedelta(seconds=40),
                updated_at=at,
            )
        )
        return tx_hash

    def refund(self, pay: _Pay) -> None:
        """The refund sent, and the contract's Refunded log, mirrored as the follower would have (like the
        Withdrawn ones): the event timeline shows it and billing_reconcile finds the refund's log on record."""
        tx_hash = self.send("refund", pay.network, pay.refunded, payment=pay.row)
        row, network = pay.row, self.world.catalog.networks[pay.network]
        block = self._block(pay.network, pay.refunded)
        self.events.append(
            ChainEvent(
                contract=row.contract,
                chain_id=network.chain_id,
                name="Refunded",
                block_number=block,
                block_hash=_hex32("block", pay.network, block),
                tx_hash=tx_hash,
                log_index=0,
                args={
                    "orderId": row.order_id,
                    "payer": row.payer_address,
                    "token": row.token.address or ZERO_ADDRESS,
                    "amount": str(row.amount),
                },
                amount=row.amount,
                token_address=row.token.address,
                transaction=row,
                created_at=pay.refunded,
            )
        )

    def weekly_sweeps(self) -> None:
        """Weekly sweeps of what the production contracts received (the local chain plays production here)."""
        world = self.world
        week = timedelta(days=7)
        cursor = world.origin + week
        while cursor < world.now:
            for net, symbol in (("anvil-local", "dUSD"), ("anvil-local", "ETH"), ("ethereum", "USDC")):
                received = sum(
                    p.amount
                    for p in world.pays
                    if p.network == net
                    and p.token == (net, symbol)
                    and p.confirmed
                    and cursor - week <= p.confirmed < cursor
                    and p.status in (TxStatus.CONFIRMED, TxStatus.REFUNDED)
                )
                if received:
                    self.withdraw(net, symbol, received * 8 // 10, cursor)
            cursor += week

    def withdraw(self, net: str, symbol: str, amount: int, week_end: datetime) -> None:
        """A withdrawal on the morning after `week_end` (on Ethereum it reverts now and then), and its log."""
        world, rng = self.world, self.rng
        at = week_end + timedelta(hours=rng.uniform(8, 11))
        if at >= world.now:
            return
        reverted = net == "ethereum" and rng.random() < 0.1
        tx_hash = self.send("withdraw", net, at, reverted=reverted)
        if reverted:
            return
        network = world.catalog.networks[net]
        token = world.catalog.tokens[(net, symbol)]
        block = self._block(net, at)
        self.events.append(
            ChainEvent(
                contract=world.catalog.contracts[f"pass-{net}"],
                chain_id=network.chain_id,
                name="Withdrawn",
                block_number=block,
                block_hash=_hex32("block", net, block),
                tx_hash=tx_hash,
                log_index=0,
                args={"token": token.address or ZERO_ADDRESS, "to": TREASURY, "amount": str(amount)},
                amount=amount,
                token_address=token.address,
                created_at=at + timedelta(seconds=network.confirmation_depth * network.block_time_seconds),
            )
        )


def _dead_letters(world: _World, report: SeedReport) -> None:
    """Two plan.changed.v1 deliveries an external CRM refused until the last attempt: dead letters to replay."""
    for i, days_ago in enumerate((6, 2)):
        at = world.now - timedelta(days=days_ago, hours=3 * i)
        event = OutboxEvent.objects.create(
            topic="plan.changed.v1",
            aggregate_type="user",
            aggregate_id=str(i),
            payload={"source": "seed_demo --history", "reason": "payment_confirmed"},
            created_at=at,
        )
        OutboxDelivery.objects.create(
            event=event,
            subscriber="crm-webhook",
            status=OutboxDelivery.Status.DEAD,
            attempts=8,
            max_attempts=8,
            last_error="HTTP 503 Service Unavailable",
            created_at=at,
            updated_at=at + timedelta(hours=9),
        )
    report.add("dead_letters", 2)
