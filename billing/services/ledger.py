"""Ledger writes: every status change goes through `transaction_set_status`, which enforces the allowed
transitions and appends the history row in the same database transaction."""

from __future__ import annotations

import structlog
from django.db import transaction
from django.utils import timezone

from billing.models import PaymentTransaction, TransactionStatusChange, TxStatus, can_transition
from billing.services.notices import ops_notice

log = structlog.get_logger(__name__)


class TransitionNotAllowed(ValueError):
    def __init__(self, old: str, new: str):
        super().__init__(f"A transaction cannot go from '{old}' to '{new}'.")
        self.old = old
        self.new = new


@transaction.atomic
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
    locked = PaymentTransaction.objects.select_for_update().get(pk=tx.pk)
    old = locked.status
    if status not in TxStatus.values:
        raise TransitionNotAllowed(old, status)
    if not can_transition(old, status):
        raise TransitionNotAllowed(old, status)
    now = timezone.now()
    locked.status = status
    for name, value in (fields or {}).items():
        setattr(locked, name, value)
    if status == TxStatus.CONFIRMED and locked.confirmed_at is None:
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
