"""Ledger writes: every status change goes through `transaction_set_status`, which enforces the allowed
transitions and appends the history row in the same database transaction."""

from __future__ import annotations

import structlog
from django.db import transaction
from django.utils import timezone

from billing import metrics
from billing.models import PaymentTransaction, TransactionStatusChange, TxStatus, can_transition
from billing.services.notices import ops_notice
from billing.services.outbox import outbox_emit

log = structlog.get_logger(__name__)


class TransitionNotAllowed(ValueError):
    def __init__(self, old: str, new: str):
        super().__init__(f"A transaction cannot go from '{old}' to '{new}'.")
        self.old = old
        self.new = new


# Payment statuses a payer hears about (payment.status.v1 -> notifications): received, failed, refunded.
USER_FACING_STATUSES = frozenset({TxStatus.CONFIRMED, TxStatus.FAILED, TxStatus.REFUNDED})


def _emit_payment_status(tx: PaymentTransaction, *, old: str, change: TransactionStatusChange) -> None:
    """One event per status change (its history row's id is the dedupe key downstream)."""
    token = tx.token
    outbox_emit(
        topic="payment.status.v1",
        aggregate_type="transaction",
        aggregate_id=str(tx.pk),
        payload={
            "change_id": change.pk,
            "transaction_id": tx.pk,
            "public_id": str(tx.public_id),
            "user_id": tx.user_id,
            "status": tx.status,
            "from_status": old,
            "failure_reason": tx.failure_reason if tx.status == TxStatus.FAILED else "",
            "amount": str(tx.amount),
            "token": token.symbol if token else "",
            "decimals": token.decimals if token else 0,
            "plan": tx.plan.slug if tx.plan_id else None,
            "tx_hash": tx.tx_hash,
        },
    )


@transaction.atomic
def transaction_lock(pk: int, *related: str) -> PaymentTransaction:
    """The ledger row `pk`, locked FOR UPDATE until the caller's transaction ends. Only that row is locked
    (`of=self`): the `related` rows are read along, not locked. The one way services lock a ledger row."""
    rows = PaymentTransaction.objects.select_for_update(of=("self",))
    if related:
        rows = rows.select_related(*related)
    return rows.get(pk=pk)


def transaction_set_status(
    *,
    tx: PaymentTransaction,
    status: str,
    actor: str,
    reason: str = "",
    details: dict | None = None,
    fields: dict | None = None,
) -> PaymentTransaction:
    """Move `tx` to `status` (locking its row), set extra `fields`, append one history row."""
    # Network, token and contract come along (not locked) for the log and metrics.
    locked = transaction_lock(tx.pk, "contract", "network", "token", "plan")
    old = locked.status
    if status not in TxStatus.values:
        raise TransitionNotAllowed(old, status)
    if not can_transition(old, status):
        raise TransitionNotAllowed(old, status)
    now = timezone.now()
    locked.status = status
    for name, value in (fields or {}).items():
        setattr(locked, name, value)
    newly_confirmed = status == TxStatus.CONFIRMED and locked.confirmed_at is None
    if newly_confirmed:
        locked.confirmed_at = now
    if status == TxStatus.SUBMITTED and locked.submitted_at is None:
        locked.submitted_at = now
    if status == TxStatus.REFUNDED and locked.refunded_at is None:
        locked.refunded_at = now
    locked.save()
    change = TransactionStatusChange.objects.create(
        transaction=locked, from_status=old, to_status=status, actor=actor, reason=reason[:500], details=details or {}
    )
    if status == TxStatus.NEEDS_REVIEW:
        ops_notice(
            kind="needs_review",
            key=f"needs_review:tx:{locked.pk}:{change.pk}",
            title=f"Payment {locked.pk} needs review",
            body=f"{old} -> needs_review ({actor}): {reason[:500]}",
            data={"transaction_id": locked.pk, "tx_hash": locked.tx_hash, "from_status": old, "actor": actor},
        )
    transaction_count_on_commit(locked, status, confirmed=newly_confirmed)
    if status in USER_FACING_STATUSES and locked.user_id:
        _emit_payment_status(locked, old=old, change=change)
    log.info(
        "transaction.status_changed",
        transaction_id=locked.pk,
        tx_hash=locked.tx_hash,
        user_id=locked.user_id,
        contract_slug=locked.contract.slug,
        from_status=old,
        to_status=status,
        actor=actor,
    )
    tx.__dict__.update({k: v for k, v in locked.__dict__.items() if not k.startswith("_")})
    return locked


@transaction.atomic
def transaction_record_created(*, tx: PaymentTransaction, actor: str, reason: str = "") -> None:
    """The first history row of a new ledger row."""
    TransactionStatusChange.objects.create(
        transaction=tx, from_status="", to_status=tx.status, actor=actor, reason=reason[:500]
    )
    confirmed = tx.status == TxStatus.CONFIRMED and tx.confirmed_at is not None
    transaction_count_on_commit(tx, tx.status, confirmed=confirmed)


def transaction_count_on_commit(tx: PaymentTransaction, status: str, *, confirmed: bool) -> None:
    """billing_transactions_total (and the confirmation latency) move when the change commits: a rolled
    back change is not counted. Labels are read now, from objects already loaded."""
    labels = {"status": status, "network": tx.network.slug, "token": tx.token.symbol}
    latency = None
    if confirmed and tx.confirmed_at is not None:
        since, start = ("submitted", tx.submitted_at) if tx.submitted_at else ("checkout", tx.created_at)
        if start is not None:
            latency = (labels["network"], since, max((tx.confirmed_at - start).total_seconds(), 0.0))

    def count() -> None:
        metrics.TRANSACTIONS.labels(**labels).inc()
        if latency is not None:
            metrics.CONFIRMATION_LATENCY.labels(network=latency[0], since=latency[1]).observe(latency[2])

    transaction.on_commit(count)
