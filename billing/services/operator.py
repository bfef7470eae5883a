"""Operator actions on the ledger (refund, reprocess, outbox replay), each audited with the acting user.

django-auditlog's middleware only knows the session user; API calls authenticate by token inside DRF,
after the middleware ran, so every action here runs inside `acting_user(user)`, which sets the actor
explicitly for the LogEntry rows the write produces.

Without an operator key the refund is recorded (refund_requested) and nothing is sent, and the answer says so.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from auditlog.context import auditlog_value, set_actor
from auditlog.models import LogEntry
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q

from billing.models import (
    InboundEvent,
    OperatorTransaction,
    OutboxDelivery,
    PaymentTransaction,
    RefundStatus,
    TxStatus,
    can_transition,
)
from billing.services.webhooks import inbound_event_process
from billing_project.errors import ServiceError
from billing_project.logging import mask_url

log = structlog.get_logger(__name__)


class OperatorActionError(ServiceError):
    """The action is not allowed for this object (409 unless said otherwise)."""

    def __init__(self, code: str, message: str, *, status: int = 409):
        super().__init__(code, message, status=status)


@dataclass(frozen=True)
class ActionResult:
    result: str
    detail: str
    transaction: PaymentTransaction | None = None


@contextlib.contextmanager
def acting_user(user) -> Iterator[None]:
    """Attribute the audit entries written inside to `user`, then restore the middleware's context
    (set_actor replaces the context value; leaving ours behind would orphan the middleware's receiver)."""
    try:
        previous = auditlog_value.get()
    except LookupError:
        previous = None
    try:
        with set_actor(user):
            yield
    finally:
        if previous is not None:
            auditlog_value.set(previous)


def audit_note(*, instance, actor, note: str, details: dict) -> None:
    """An audit entry for an action that changes no field (yet): who asked for what, and why. `actor` is a
    user, or None for a command run from a shell (then `details["actor"]` says who)."""
    LogEntry.objects.log_create(
        instance,
        action=LogEntry.Action.UPDATE,
        changes={"operator_action": [None, note]},
        actor=actor,
        additional_data=details,
        force_log=True,
    )


_audit_note = audit_note  # the earlier private name, kept for callers on other branches


def _actor_label(user) -> str:
    return f"user:{user.pk}" if user is not None else "cli"


def _refund_calldata(tx: PaymentTransaction) -> str:
    """Calldata of the contract's burn method for this order (the reference contract: refund(bytes32))."""
    from web3 import Web3

    fn = tx.contract.abi_function(tx.contract.burn_method) or {}
    inputs = [i.get("type") for i in fn.get("inputs", [])]
    if inputs != ["bytes32"] or not tx.order_id:
        raise OperatorActionError(
            "refund_unsupported",
            f"Only orders refunded by {tx.contract.burn_method}(bytes32 orderId) can be refunded here; "
            "this one needs a manual transfer.",
        )
    contract = Web3().eth.contract(abi=tx.contract.abi)
    return contract.encode_abi(tx.contract.burn_method, args=[bytes.fromhex(tx.order_id.removeprefix("0x"))])


def transaction_refund(*, tx: PaymentTransaction, actor, reason: str) -> ActionResult:
    """Refund a confirmed (or under review) payment on chain through the contract's burn method.

    The refund transaction is signed by the operator sender (billing.chain.sender); the ledger moves to
    `refunded` when the chain shows the refund event (the chain is the truth), so here only
    `refund_tx_hash` is recorded. Without the sender module, or without an operator key, the request is
    validated and recorded as an audit entry (actor and reason), and the answer says nothing was sent.

    Runs outside any transaction: the operator transaction row is committed (with the payment locked and
    checked) before anything is signed or broadcast, so a crash or a timeout after the broadcast leaves a
    row the sweep settles (billing.services.operator_txs).

    A payment whose last refund failed (`refund_status` failed: reverted, stuck at the gas cap, or never
    sent) gets a new attempt: a new operator transaction that records which one it retries (a stuck one is
    replaced with the same nonce and a higher fee), audited as `refund_retry`. One still in flight, or
    mined and waiting for the ledger to see its log, answers `refund_in_flight`.
    """
    with acting_user(actor), transaction.atomic(durable=True):
        locked = PaymentTransaction.objects.select_for_update().select_related("contract__network").get(pk=tx.pk)
        if not can_transition(locked.status, TxStatus.REFUNDED):
            raise OperatorActionError("refund_not_allowed", f"A {locked.status} transaction cannot be refunded.")
        # A stuck refund still holds its nonce in the mempool: a retry must replace it, whatever failed since.
        refunds = locked.operator_transactions.filter(kind=OperatorTransaction.Kind.REFUND).order_by(
            "-created_at", "-id"
        )
        last = (
            refunds.filter(status=OperatorTransaction.Status.STUCK).first()
            or refunds.exclude(status=OperatorTransaction.Status.REPLACED).first()
        )
        retry_of = None
        if locked.refund_status == RefundStatus.FAILED:
            retry_of = last
        elif locked.refund_status or locked.refund_tx_hash:
            raise OperatorActionError("refund_in_flight", "A refund transaction was already sent for this payment.")
        calldata = _refund_calldata(locked)
        details = {"reason": reason, "actor": _actor_label(actor), "status": locked.status}
        if retry_of is not None:
            details.update(
                retry_of_operator_tx=retry_of.pk,
                retry_of_status=retry_of.status,
                retry_of_error=mask_url(retry_of.error or "")[:300],
            )
        try:
            sender = importlib.import_module("billing.chain.sender")
            sender.operator_account()
        except (ImportError, ImproperlyConfigured) as exc:
            audit_note(instance=locked, actor=actor, note="refund_requested", details=details)
            log.info("operator.refund_requested", transaction_id=locked.pk, tx_hash=locked.tx_hash, user_id=actor.pk)
            why = "no operator key is configured" if isinstance(exc, ImproperlyConfigured) else "no operator sender"
            return ActionResult("refund_requested", f"Recorded, not sent: {why}.", locked)
        from billing.services.operator_txs import operator_tx_create

        # The row first (committed with this transaction): the sweep finds it whatever happens next.
        row = operator_tx_create(
            kind=OperatorTransaction.Kind.REFUND,
            network=locked.contract.network,
            to=locked.contract.address,
            data=calldata,
            requested_by=_actor_label(actor),
            reason=reason,
            payment=locked,
            retry_of=retry_of,
        )
        if retry_of is not None:
            _audit_note(
                instance=locked, actor=actor, note="refund_retry", details={**details, "operator_tx_id": row.pk}
            )
    return _refund_broadcast(tx=locked, row=row, actor=actor, details=details)


def transaction_refund_retry(*, tx: PaymentTransaction, actor, reason: str) -> ActionResult:
    """Retry a refund that failed (reverted, stuck at the gas cap, never sent): transaction_refund, which
    starts a new attempt for such a payment; refused unless the last refund failed."""
    if tx.refund_status != RefundStatus.FAILED:
        raise OperatorActionError(
            "refund_not_failed", "Only a refund that failed (reverted, stuck or never sent) can be retried."
        )
    return transaction_refund(tx=tx, actor=actor, reason=reason)


def _refund_broadcast(*, tx: PaymentTransaction, row, actor, details: dict) -> ActionResult:
    from billing.chain.rpc import ChainClient
    from billing.services.operator_txs import OperatorTxRefused, operator_tx_broadcast

    client = ChainClient.for_network(tx.contract.network, contract=tx.contract)
    with acting_user(actor):
        try:
            row = operator_tx_broadcast(row=row, client=client)
        except OperatorTxRefused as exc:  # the chain refused (cap, revert, nonce, RPC): nothing was sent, say why
            with transaction.atomic():
                audit_note(
                    instance=tx, actor=actor, note="refund_refused", details={**details, "operator_tx_id": row.pk}
                )
            raise OperatorActionError("refund_failed", f"The refund was not sent: {str(exc)[:300]}")
        refund_tx_hash = row.tx_hashes[-1]
        retried = " (a retry)" if row.retry_of_id else ""
        with transaction.atomic():
            audit_note(
                instance=tx,
                actor=actor,
                note="refund_sent",
                details={**details, "refund_tx_hash": refund_tx_hash, "operator_tx_id": row.pk},
            )
    tx.refresh_from_db()
    log.info("operator.refund_sent", transaction_id=tx.pk, tx_hash=refund_tx_hash, user_id=actor.pk)
    result = "refund_retried" if row.retry_of_id else "refund_sent"
    if row.status == OperatorTransaction.Status.NEW:
        return ActionResult(
            result,
            f"The refund {refund_tx_hash} was signed and broadcast, but the node did not confirm receiving it; "
            "the operator transaction sweep checks it and sends the same transaction again if needed.",
            tx,
        )
    return ActionResult(result, f"The refund transaction was sent{retried}; the ledger follows the chain.", tx)


def transaction_reprocess(*, tx: PaymentTransaction, actor, reason: str) -> ActionResult:
    """Re-run the stored webhook deliveries of this transaction that did not apply (received or failed),
    through billing.services.webhooks.inbound_event_process (verified against the chain again)."""
    matches = Q(transaction=tx)
    if tx.tx_hash:
        # Deliveries that failed before they could be matched carry only the chain coordinates.
        matches |= Q(contract_id=tx.contract_id, tx_hash=tx.tx_hash)
    events = list(
        InboundEvent.objects.filter(matches).exclude(status=InboundEvent.Status.PROCESSED).distinct().order_by("pk")
    )
    if not events:
        raise OperatorActionError("nothing_to_reprocess", "This transaction has no unprocessed inbound events.")
    with acting_user(actor):
        outcomes = {event.pk: inbound_event_process(event_id=event.pk, force=True) for event in events}
        tx.refresh_from_db()
        audit_note(
            instance=tx,
            actor=actor,
            note="reprocessed",
            details={"reason": reason, "actor": _actor_label(actor), "inbound_events": outcomes},
        )
    log.info("operator.reprocessed", transaction_id=tx.pk, tx_hash=tx.tx_hash, user_id=actor.pk)
    summary = ", ".join(f"#{pk}: {outcome}" for pk, outcome in outcomes.items())
    return ActionResult("reprocessed", f"{len(events)} inbound event(s) re-run ({summary}).", tx)


def outbox_replay(*, delivery: OutboxDelivery, actor) -> OutboxDelivery:
    """Replay a dead or failing delivery through the outbox service (billing.services.outbox)."""
    from billing.services.outbox import outbox_delivery_replay

    with acting_user(actor), transaction.atomic():
        try:
            replayed = outbox_delivery_replay(delivery=delivery, actor=_actor_label(actor))
        except ValueError as exc:
            raise OperatorActionError("replay_not_allowed", str(exc))
        audit_note(
            instance=replayed,
            actor=actor,
            note="replayed",
            details={
                "actor": _actor_label(actor),
                "subscriber": replayed.subscriber,
                "topic": delivery.event.topic,
                "attempts": replayed.attempts,
            },
        )
    return replayed


def test_connection(*, actor) -> list[dict]:
    """Probe every RPC endpoint of every enabled network for real (billing.chain.probe), audited on the
    crypto configuration with the actor and each network's outcome (no URL). One broken network does not
    hide the others: [{"network": Network, "reports": [...], "error": masked text}]."""
    from billing.chain.probe import probe_endpoints
    from billing.models import CryptoConfig, Network

    results = []
    for network in Network.objects.filter(enabled=True).order_by("slug"):
        try:
            results.append({"network": network, "reports": probe_endpoints(network), "error": ""})
        except Exception as exc:  # one broken network must not hide the others
            results.append({"network": network, "reports": [], "error": mask_url(str(exc))[:300]})
    summary = {
        r["network"].slug: r["error"][:120] or f"{sum(1 for x in r['reports'] if _probe_ok(x))}/{len(r['reports'])} ok"
        for r in results
    }
    with acting_user(actor):
        audit_note(
            instance=CryptoConfig.load(),
            actor=actor,
            note="test_connection",
            details={"actor": _actor_label(actor), "networks": summary},
        )
    log.info("operator.test_connection", user_id=getattr(actor, "pk", None), networks=summary)
    return results


def _probe_ok(report) -> bool:
    value = report.get("ok") if isinstance(report, dict) else getattr(report, "ok", None)
    return bool(value)


def inbound_event_reprocess(*, event: InboundEvent, actor, reason: str = "") -> str:
    """Re-run one stored webhook delivery (failed or still waiting) through inbound_event_process, verified
    against the chain again; audited with the actor on the delivery. Returns processed | retry | failed."""
    if event.status == InboundEvent.Status.PROCESSED:
        raise OperatorActionError("already_processed", "This delivery was already applied.")
    with acting_user(actor):
        outcome = inbound_event_process(event_id=event.pk, force=True)
        audit_note(
            instance=event,
            actor=actor,
            note="reprocessed",
            details={"reason": reason, "actor": _actor_label(actor), "outcome": outcome},
        )
    log.info("operator.inbound_reprocessed", inbound_event_id=event.pk, tx_hash=event.tx_hash, user_id=actor.pk)
    return outcome
