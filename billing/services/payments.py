"""Apply what the chain says to the ledger. The webhook, the chain follower and receipt tracking all
end here, so a payment is recorded once whichever path sees it first: the ledger row of an order is
locked (`select_for_update`) and the chain log is unique on (chain_id, tx_hash, log_index)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import structlog
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from eth_utils import to_checksum_address

from billing import metrics
from billing.bulk_sql import bulk_cursor, json_list, json_rows
from billing.chain.abi import checksum
from billing.chain.logs import GasFacts, ObservedLog
from billing.fields import ZERO_ADDRESS
from billing.models import (
    ChainEvent,
    PaymentContract,
    PaymentTransaction,
    Plan,
    Token,
    TransactionStatusChange,
    TxStatus,
)
from billing.services.ledger import transaction_lock, transaction_record_created, transaction_set_status
from billing.services.notices import ops_notice
from billing.services.operator_txs import operator_tx_refund_unmined
from billing.services.subscriptions import (
    subscription_apply_payment,
    subscription_apply_refund,
    subscription_restore_payment,
    subscription_suspend_payment,
    subscriptions_apply_later,
    subscriptions_lock_live,
    subscriptions_write_payments,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Effect:
    kind: str  # confirmed | refunded | unmatched | duplicate | recorded
    transaction: PaymentTransaction | None = None


def chain_event_record(*, contract: PaymentContract, observed: ObservedLog) -> ChainEvent:
    """Insert the log once (ON CONFLICT DO NOTHING) and return the stored row, un-removing it when a
    reorg brought the same log back."""
    amount = observed.args.get("amount")
    token = observed.args.get("token") or ""
    ChainEvent.objects.bulk_create(
        [
            ChainEvent(
                contract=contract,
                chain_id=observed.chain_id,
                name=observed.name,
                block_number=observed.block_number,
                block_hash=observed.block_hash,
                tx_hash=observed.tx_hash,
                log_index=observed.log_index,
                args=_json_args(observed.args),
                amount=int(amount) if amount is not None else None,
                token_address=token if token != ZERO_ADDRESS else "",
            )
        ],
        ignore_conflicts=True,
    )
    event = ChainEvent.objects.select_for_update().get(
        chain_id=observed.chain_id, tx_hash=observed.tx_hash, log_index=observed.log_index
    )
    if event.removed or event.block_hash != observed.block_hash:
        event.removed = False
        event.block_hash = observed.block_hash
        event.block_number = observed.block_number
        event.save(update_fields=["removed", "block_hash", "block_number"])
    return event


def _json_args(args: dict) -> dict:
    return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in args.items()}


def _token_for(contract: PaymentContract, token_address: str | None) -> Token | None:
    if not token_address or token_address == ZERO_ADDRESS:
        return Token.objects.filter(network=contract.network, address="").first()
    return Token.objects.filter(network=contract.network, address=to_checksum_address(token_address)).first()


def _record_unmatched(
    *, contract: PaymentContract, observed: ObservedLog, order_id: str | None, gas: GasFacts, source: str, reason: str
) -> Effect:
    token = _token_for(contract, observed.args.get("token"))
    if token is None:
        log.warning("payment.unknown_token", tx_hash=observed.tx_hash, contract_slug=contract.slug)
        return Effect("recorded")
    plan = None
    if observed.args.get("planId") is not None:
        plan = Plan.objects.filter(pk=int(observed.args["planId"])).first()
    payer = observed.args.get("payer") or observed.args.get("from") or ""
    try:
        with transaction.atomic():
            tx = PaymentTransaction.objects.create(
                user=None,
                plan=plan,
                product_id=plan.pk if plan else None,
                provider=plan.provider if plan else None,
                contract=contract,
                network=contract.network,
                chain_id=observed.chain_id,
                token=token,
                amount=int(observed.args.get("amount") or observed.args.get("value") or 0),
                status=TxStatus.UNMATCHED,
                order_id=order_id,
                payer_address=to_checksum_address(payer) if payer else "",
                tx_hash=observed.tx_hash,
                block_number=observed.block_number,
                block_hash=observed.block_hash,
                log_index=observed.log_index,
                gas_used=gas.gas_used,
                effective_gas_price=gas.effective_gas_price,
                fee=gas.fee,
                failure_reason=reason,
                usd_rate_at_confirmation=token.usd_estimate,
            )
            transaction_record_created(tx=tx, actor=source, reason=reason)
    except IntegrityError:
        return Effect("duplicate")
    log.warning("payment.unmatched", tx_hash=observed.tx_hash, contract_slug=contract.slug, reason=reason)
    display = f"{token.display(tx.amount)} {token.symbol}"
    ops_notice(
        kind="unmatched_transfer" if order_id is None else "unmatched_payment",
        key=f"unmatched:tx:{tx.pk}",
        title=f"Unmatched value on {contract.slug}: {display}",
        body=f"{reason}. Transaction {observed.tx_hash}, block {observed.block_number}; kept for review and refund.",
        data={
            "transaction_id": tx.pk,
            "tx_hash": observed.tx_hash,
            "contract": contract.slug,
            "amount": str(tx.amount),
        },
    )
    return Effect("unmatched", tx)


@transaction.atomic
def payment_observe_paid(
    *,
    contract: PaymentContract,
    observed: ObservedLog,
    gas: GasFacts,
    source: str,
    external_id: str = "",
    now: datetime | None = None,
) -> Effect:
    """A `Paid` log at the network's depth: confirm the order's ledger row once."""
    event = chain_event_record(contract=contract, observed=observed)
    order_id = str(observed.args["orderId"]).lower()
    tx = (
        PaymentTransaction.objects.select_for_update(of=("self",))
        .select_related("plan", "token", "contract")
        .filter(contract=contract, order_id=order_id)
        .first()
    )
    if tx is None:
        effect = _record_unmatched(
            contract=contract,
            observed=observed,
            order_id=order_id,
            gas=gas,
            source=source,
            reason="payment for an order this ledger does not know",
        )
        if effect.transaction:
            ChainEvent.objects.filter(pk=event.pk).update(transaction=effect.transaction)
        return effect
    if event.transaction_id is None:
        ChainEvent.objects.filter(pk=event.pk).update(transaction=tx)

    if tx.status in (TxStatus.CONFIRMED, TxStatus.REFUNDED, TxStatus.UNMATCHED):
        if tx.tx_hash == observed.tx_hash and (
            tx.block_hash != observed.block_hash or tx.log_index != observed.log_index
        ):
            # The same transaction, mined again after a shallow reorg: keep the ledger's position true.
            PaymentTransaction.objects.filter(pk=tx.pk).update(
                block_number=observed.block_number, block_hash=observed.block_hash, log_index=observed.log_index
            )
        return Effect("duplicate", tx)

    amount = int(observed.args["amount"])
    token_address = observed.args.get("token") or ZERO_ADDRESS
    expected_token = tx.token.address or ZERO_ADDRESS
    problems = []
    if amount != tx.amount:
        problems.append(f"amount {amount} != {tx.amount}")
    if to_checksum_address(token_address) != to_checksum_address(expected_token):
        problems.append(f"token {token_address} != {expected_token}")
    if tx.payer_address and to_checksum_address(observed.args["payer"]) != tx.payer_address:
        problems.append("payer differs from the checkout")
    fields = {
        "tx_hash": observed.tx_hash,
        "block_number": observed.block_number,
        "block_hash": observed.block_hash,
        "log_index": observed.log_index,
        "payer_address": to_checksum_address(observed.args["payer"]),
        "usd_rate_at_confirmation": tx.token.usd_estimate,
        "external_id": external_id or tx.external_id,
        "failure_reason": "",
    }
    if gas.gas_used is not None:  # the follower reads no receipts for payments: a known fee stays
        fields.update(gas_used=gas.gas_used, effective_gas_price=gas.effective_gas_price, fee=gas.fee)
    if tx.status == TxStatus.NEEDS_REVIEW and _refund_in_doubt(tx):
        return Effect("duplicate", tx)  # its refund was removed by a reorg: ops decide, not a payment log
    if tx.status == TxStatus.NEEDS_REVIEW and not problems:
        transaction_set_status(
            tx=tx, status=TxStatus.CONFIRMED, actor=source, reason="seen on chain again", fields=fields
        )
        subscription_restore_payment(tx=tx, now=now)  # gives back what the reorg suspended
        return Effect("confirmed", tx)
    transaction_set_status(tx=tx, status=TxStatus.CONFIRMED, actor=source, reason="payment log at depth", fields=fields)
    if problems:
        # The contract checks the signed quote, so this should never happen: keep the money, flag it.
        transaction_set_status(tx=tx, status=TxStatus.NEEDS_REVIEW, actor=source, reason="; ".join(problems))
        log.error("payment.mismatch", tx_hash=observed.tx_hash, contract_slug=contract.slug, problems=problems)
        return Effect("recorded", tx)
    subscription_apply_payment(tx=tx, now=now)
    log.info(
        "payment.confirmed",
        transaction_id=tx.pk,
        tx_hash=observed.tx_hash,
        user_id=tx.user_id,
        contract_slug=contract.slug,
        source=source,
    )
    return Effect("confirmed", tx)


# A ledger row in one of these may be confirmed by a payment log (ALLOWED_TRANSITIONS), without review.
CONFIRMABLE = (TxStatus.PENDING, TxStatus.SUBMITTED, TxStatus.FAILED, TxStatus.EXPIRED)

# Bulk statements take their rows as one JSON document (json_to_recordset): one parameter, parsed by PostgreSQL,
# instead of one array per column that psycopg would quote element by element in Python. Each chain event is
# linked to its order's ledger row in the statement (an order's row never changes).
_INSERT_PAID_EVENTS = f"""
    INSERT INTO {ChainEvent._meta.db_table} (contract_id, chain_id, name, block_number, block_hash, tx_hash,
        log_index, args, amount, token_address, removed, apply_error, transaction_id, created_at)
    SELECT %s, %s, 'Paid', b, h, t, i, a, m, k, false, '',
        (SELECT p.id FROM {PaymentTransaction._meta.db_table} AS p WHERE p.contract_id = %s AND p.order_id = v.o), %s
    FROM jsonb_to_recordset(%s::jsonb) AS v(b bigint, h text, t text, i int, a jsonb, m numeric, k text, o text)
    ON CONFLICT (chain_id, tx_hash, log_index) DO NOTHING
    RETURNING tx_hash, log_index"""  # noqa: S608 (table names from the models)

# The ledger rows of the batch's orders, locked in id order (as the one-by-one path locks one).
_LOCK_ORDERS = f"""
    SELECT id, public_id::text, order_id, status, amount::text, token_id, payer_address, user_id, plan_id, periods,
        submitted_at, created_at, confirmed_at
    FROM {PaymentTransaction._meta.db_table}
    WHERE contract_id = %s AND order_id IN (SELECT json_array_elements_text(%s::json))
    ORDER BY id FOR UPDATE"""  # noqa: S608

_CONFIRM = f"""
    UPDATE {PaymentTransaction._meta.db_table} AS t
    SET status = %s, tx_hash = v.h, block_number = v.b, block_hash = v.bh, log_index = v.i, payer_address = v.p,
        usd_rate_at_confirmation = v.u, failure_reason = '', confirmed_at = COALESCE(t.confirmed_at, %s),
        updated_at = %s
    FROM json_to_recordset(%s::json) AS v(id bigint, h text, b bigint, bh text, i int, p text, u numeric)
    WHERE t.id = v.id"""  # noqa: S608

_HISTORY_IDS = f"""
    SELECT nextval(pg_get_serial_sequence('{TransactionStatusChange._meta.db_table}', 'id'))
    FROM generate_series(1, %s)"""  # noqa: S608

_HISTORY = f"""
    INSERT INTO {TransactionStatusChange._meta.db_table} (id, transaction_id, from_status, to_status, actor, reason,
        details, created_at)
    SELECT c, id, f, %s, %s, %s, '{{}}'::jsonb, %s FROM json_to_recordset(%s::json) AS v(c bigint, id bigint, f text)"""  # noqa: S608


class _Order(NamedTuple):
    """A locked ledger row of the batch, as the bulk path reads it (a tuple, no model instance)."""

    pk: int
    public_id: str
    order_id: str
    status: str
    amount: int
    token_id: int
    payer_address: str
    user_id: int | None
    plan_id: int | None
    periods: int
    submitted_at: datetime | None
    created_at: datetime | None
    confirmed_at: datetime | None


class PaidRow(NamedTuple):
    """What the bulk subscription path needs of a confirmed ledger row (no model instance per payment)."""

    pk: int
    user_id: int | None
    plan_id: int | None
    periods: int


def _order_of(o: ObservedLog) -> str | None:
    return str(o.args.get("orderId", "")).lower() if o.name in ("Paid", "Refunded") else None


def payments_apply_in_bulk(*, contract: PaymentContract, observed: list[ObservedLog], source: str) -> list[ObservedLog]:
    """Apply the plain `Paid` logs of a batch (in chain order) in bulk, with what `payment_observe_paid` writes
    for them: the chain event (linked to its ledger row), the ledger row confirmed with one status-history row,
    and the paid time (`subscriptions_apply_payments`). A plain payment: a new log for an order this ledger
    holds, not yet confirmed (`CONFIRMABLE`), paying what the checkout quoted, the only log of its order here,
    its user touched by no other kind of log in the batch. Returns the logs left for the one-by-one path
    (`payment_observe_paid` and the others), in chain order: unmatched or repeated payments, mismatches, rows
    under review, refunds, payouts, transfers, and everything of a user one of them concerns. Bulk writes
    skip django-auditlog: the status history is the ledger's record of a mirrored chain event.

    Locks in the order of the one-by-one path (the chain event first, then the ledger row), so a webhook worker
    racing the follower waits on one of them and then sees the other's effect. Rows are read as tuples through
    `bulk_cursor` (no ORM query building or model instances: a batch holds up to 2,000 payments)."""
    paid = [o for o in observed if o.name == "Paid"]
    if not paid:
        return list(observed)
    now = timezone.now()
    orders = [_order_of(o) for o in observed]
    with bulk_cursor() as cursor:
        cursor.execute(
            _INSERT_PAID_EVENTS,
            [
                contract.pk,
                paid[0].chain_id,
                contract.pk,
                now,
                json_rows(
                    [
                        {
                            "b": o.block_number,
                            "h": o.block_hash,
                            "t": o.tx_hash,
                            "i": o.log_index,
                            "a": _json_args(o.args),
                            "m": str(int(o.args["amount"])),
                            "k": o.args.get("token") if o.args.get("token") != ZERO_ADDRESS else "",
                            "o": order,
                        }
                        for o, order in zip(observed, orders, strict=True)
                        if o.name == "Paid"
                    ]
                ),
            ],
        )
        new_events = set(cursor.fetchall())
        cursor.execute(_LOCK_ORDERS, [contract.pk, json_list({order for order in orders if order is not None})])
        rows = {row[2]: _Order(*row[:4], int(row[4]), *row[5:]) for row in cursor.fetchall()}
    tokens = Token.objects.in_bulk({row.token_id for row in rows.values()})
    token_addresses = {pk: _token_address(token) for pk, token in tokens.items()}
    seen = Counter(order for o, order in zip(observed, orders, strict=True) if o.name == "Paid")
    candidates, held_users = [], set()
    for o, order in zip(observed, orders, strict=True):
        row = rows.get(order) if order is not None else None
        plain = (
            o.name == "Paid"
            and row is not None
            and (o.tx_hash, o.log_index) in new_events
            and row.status in CONFIRMABLE
            and seen[order] == 1
            and int(o.args["amount"]) == row.amount
            and checksum(o.args.get("token") or ZERO_ADDRESS) == token_addresses[row.token_id]
            and (not row.payer_address or checksum(o.args["payer"]) == row.payer_address)
        )
        if plain:
            candidates.append((o, row))
        elif row is not None and row.user_id is not None:
            held_users.add(row.user_id)
    bulk = [(o, row) for o, row in candidates if row.user_id is None or row.user_id not in held_users]
    if not bulk:
        return list(observed)
    rates = {pk: _str_or_none(token.usd_estimate) for pk, token in tokens.items()}
    plans = dict(Plan.objects.filter(pk__in={row.plan_id for _, row in bulk if row.plan_id}).values_list("pk", "slug"))
    symbols = {pk: token.symbol for pk, token in tokens.items()}
    decimals = {pk: token.decimals for pk, token in tokens.items()}
    with connection.cursor() as cursor:  # the history rows' ids, so nothing written below needs an answer
        cursor.execute(_HISTORY_IDS, [len(bulk)])
        change_ids = [change_id for (change_id,) in cursor.fetchall()]
    live = subscriptions_lock_live(txs=[PaidRow(row.pk, row.user_id, row.plan_id, row.periods) for _, row in bulk])
    # The writes go out in one psycopg pipeline: PostgreSQL applies the ledger UPDATE (the batch's largest
    # statement: the ledger's indexes) while this process works out the subscriptions and builds the next rows.
    with connection.wrap_database_errors, connection.connection.pipeline(), connection.cursor() as cursor:
        cursor.execute(
            _CONFIRM,
            [
                TxStatus.CONFIRMED,
                now,
                now,
                json_rows(
                    [
                        {
                            "id": row.pk,
                            "h": o.tx_hash,
                            "b": o.block_number,
                            "bh": o.block_hash,
                            "i": o.log_index,
                            "p": checksum(o.args["payer"]),
                            "u": rates[row.token_id],
                        }
                        for o, row in bulk
                    ]
                ),
            ],
        )
        cursor.execute(
            _HISTORY,
            [
                TxStatus.CONFIRMED,
                source,
                "payment log at depth",
                now,
                json_rows(
                    [
                        {"c": change_id, "id": row.pk, "f": row.status}
                        for change_id, (_, row) in zip(change_ids, bulk, strict=True)
                    ]
                ),
            ],
        )
        statuses = [  # what transaction_set_status tells the payer (payment.status.v1), one per history row
            (
                "payment.status.v1",
                {
                    "change_id": change_id,
                    "transaction_id": row.pk,
                    "public_id": row.public_id,
                    "user_id": row.user_id,
                    "status": TxStatus.CONFIRMED,
                    "from_status": row.status,
                    "failure_reason": "",
                    "amount": str(row.amount),
                    "token": symbols[row.token_id],
                    "decimals": decimals[row.token_id],
                    "plan": plans[row.plan_id] if row.plan_id else None,
                    "tx_hash": o.tx_hash,
                },
                "transaction",
                str(row.pk),
            )
            for change_id, (o, row) in zip(change_ids, bulk, strict=True)
            if row.user_id
        ]
        _, later = subscriptions_write_payments(state=live, now=now, extra_events=statuses)
    _count_on_commit(contract, [row for _, row in bulk], symbols, now)
    subscriptions_apply_later(later, now=now)
    log.info("payment.confirmed_in_bulk", contract_slug=contract.slug, count=len(bulk), source=source)
    done = {id(o) for o, _ in bulk}
    return [o for o in observed if id(o) not in done]


def _count_on_commit(contract: PaymentContract, rows: list[_Order], symbols: dict, now: datetime) -> None:
    """billing_transactions_total and the confirmation latency of the rows confirmed in bulk, counted when the
    batch commits (as `ledger.transaction_count_on_commit` does for one row)."""
    network = contract.network.slug
    counts = Counter(symbols[row.token_id] for row in rows)
    latencies = [
        ("submitted", row.submitted_at) if row.submitted_at else ("checkout", row.created_at)
        for row in rows
        if row.confirmed_at is None
    ]

    def count() -> None:
        for symbol, n in counts.items():
            metrics.TRANSACTIONS.labels(status=TxStatus.CONFIRMED, network=network, token=symbol).inc(n)
        latency = {since: metrics.CONFIRMATION_LATENCY.labels(network=network, since=since) for since, _ in latencies}
        for since, start in latencies:
            if start is not None:
                latency[since].observe(max((now - start).total_seconds(), 0.0))

    transaction.on_commit(count)


def _token_address(token: Token) -> str:
    return checksum(token.address or ZERO_ADDRESS)


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)


def _refund_in_doubt(tx: PaymentTransaction) -> bool:
    """The row is under review because a reorg removed its refund (not its payment)."""
    last = tx.status_history.filter(to_status=TxStatus.NEEDS_REVIEW).order_by("-created_at", "-id").first()
    return last is not None and last.from_status == TxStatus.REFUNDED


@transaction.atomic
def payment_observe_refunded(
    *, contract: PaymentContract, observed: ObservedLog, source: str, now: datetime | None = None
) -> Effect:
    event = chain_event_record(contract=contract, observed=observed)
    order_id = str(observed.args["orderId"]).lower()
    tx = PaymentTransaction.objects.select_for_update().filter(contract=contract, order_id=order_id).first()
    if tx is None:
        log.warning("payment.refund_unknown_order", tx_hash=observed.tx_hash, contract_slug=contract.slug)
        return Effect("recorded")
    if event.transaction_id is None:
        ChainEvent.objects.filter(pk=event.pk).update(transaction=tx)
    if tx.status == TxStatus.REFUNDED:
        return Effect("duplicate", tx)
    if tx.status not in (TxStatus.CONFIRMED, TxStatus.NEEDS_REVIEW, TxStatus.UNMATCHED):
        log.error("payment.refund_before_confirmation", transaction_id=tx.pk, status=tx.status)
        return Effect("recorded", tx)
    transaction_set_status(
        tx=tx,
        status=TxStatus.REFUNDED,
        actor=source,
        reason="refund log at depth",
        fields={"refund_tx_hash": observed.tx_hash, "refunded_at": timezone.now()},
    )
    subscription_apply_refund(tx=tx, now=now)
    log.info(
        "payment.refunded",
        transaction_id=tx.pk,
        tx_hash=observed.tx_hash,
        user_id=tx.user_id,
        contract_slug=contract.slug,
    )
    return Effect("refunded", tx)


@transaction.atomic
def payment_observe_transfer(*, contract: PaymentContract, observed: ObservedLog, gas: GasFacts, source: str) -> Effect:
    """An ERC-20 Transfer into the contract that is not part of a `pay` call: value without a checkout."""
    chain_event_record(contract=contract, observed=observed)
    args = dict(observed.args)
    args.setdefault("token", observed.address)
    args.setdefault("amount", args.get("value"))
    args.setdefault("payer", args.get("from"))
    return _record_unmatched(
        contract=contract,
        observed=ObservedLog(**{**observed.__dict__, "args": args}),
        order_id=None,
        gas=gas,
        source=source,
        reason="tokens sent to the contract without a checkout",
    )


@transaction.atomic
def payment_observe_withdrawn(*, contract: PaymentContract, observed: ObservedLog, source: str) -> Effect:
    chain_event_record(contract=contract, observed=observed)
    return Effect("recorded")


@transaction.atomic
def payment_mark_failed(*, tx: PaymentTransaction, reason: str, source: str, tx_hash: str | None = None) -> Effect:
    locked = transaction_lock(tx.pk)
    if locked.status not in (TxStatus.PENDING, TxStatus.SUBMITTED):
        return Effect("duplicate", locked)
    fields = {"failure_reason": reason[:500]}
    if tx_hash and not locked.tx_hash:
        fields["tx_hash"] = tx_hash
    transaction_set_status(
        tx=locked, status=TxStatus.FAILED, actor=source, reason=reason, fields=fields, details={"tx_hash": tx_hash}
    )
    log.info(
        "payment.failed",
        transaction_id=locked.pk,
        tx_hash=tx_hash,
        user_id=locked.user_id,
        contract_slug=locked.contract.slug,
        reason=reason,
    )
    return Effect("failed", locked)


@transaction.atomic
def payment_reorged_out(
    *,
    tx_id: int,
    event_name: str,
    tx_hash: str,
    log_index: int | None,
    actor: str,
    reason: str,
    details: dict | None = None,
    now: datetime | None = None,
) -> bool:
    """A log the ledger applied (`tx_hash`, `log_index`) is no longer on chain: a reorg deeper than the
    confirmation policy. If it is still the log the ledger row stands on, a payment (or unmatched value)
    goes to `needs_review` and the periods it bought are suspended; a refund goes to `needs_review` too (the
    refund is in doubt; its periods stay removed until ops decide). Ops are told (`transaction_set_status`).
    Returns whether the ledger changed."""
    tx = transaction_lock(tx_id)
    details = {"reorg": True, "tx_hash": tx_hash, "log_index": log_index, **(details or {})}
    if event_name == "Refunded":
        if tx.status != TxStatus.REFUNDED or (tx.refund_tx_hash or "").lower() != tx_hash.lower():
            return False
        transaction_set_status(
            tx=tx, status=TxStatus.NEEDS_REVIEW, actor=actor, reason=f"refund log gone: {reason}", details=details
        )
        # Our refund's operator transaction is in flight again (or, sent from outside, nothing is).
        operator_tx_refund_unmined(payment=tx, tx_hash=tx_hash, now=now)
        return True
    if tx.status not in (TxStatus.CONFIRMED, TxStatus.UNMATCHED):
        return False
    if tx.tx_hash != tx_hash or (log_index is not None and tx.log_index != log_index):
        return False  # the ledger already stands on the log's new position (mined again)
    transaction_set_status(tx=tx, status=TxStatus.NEEDS_REVIEW, actor=actor, reason=reason, details=details)
    subscription_suspend_payment(tx=tx, now=now)
    log.warning("payment.reorged_out", transaction_id=tx.pk, tx_hash=tx.tx_hash, user_id=tx.user_id, reason=reason)
    return True
