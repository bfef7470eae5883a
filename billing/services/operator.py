"""Operator actions on the ledger (refund, reprocess, outbox replay), each audited with the acting user.

django-auditlog's middleware only knows the session user; API calls authenticate by token inside DRF,
after the middleware ran, so every action here runs inside `acting_user(user)`, which sets the actor
explicitly for the LogEntry rows the write produces.

Without an operator key the refund is recorded (refund_requested) and nothing is sent, and the answer says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from auditlog.context import auditlog_value, set_actor
from auditlog.models import LogEntry
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q

from billing.chain.sender import operator_account
from billing.fields import ZERO_ADDRESS
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
    `refund_tx_hash` is recorded. Without an operator key the request is
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
        elif locked.refund_outstanding:
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
            operator_account()
        except ImproperlyConfigured:
            audit_note(instance=locked, actor=actor, note="refund_requested", details=details)
            log.info("operator.refund_requested", transaction_id=locked.pk, tx_hash=locked.tx_hash, user_id=actor.pk)
            return ActionResult("refund_requested", "Recorded, not sent: no operator key is configured.", locked)
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


# --- withdrawals -------------------------------------------------------------------------------------


class OperatorInputError(OperatorActionError):
    """The request itself is wrong (400)."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message, status=400)


@dataclass(frozen=True)
class WithdrawPlan:
    """What a withdrawal sends: the contract's withdraw method to the treasury, for one token."""

    contract_slug: str
    network: str
    token: str  # SYMBOL@network
    token_address: str  # zero for the native coin
    treasury: str
    amount: int
    balance: int
    reserved: int  # in-flight refunds of this token the withdrawal leaves in the contract
    to: str
    data: str

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, int) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class WithdrawResult:
    result: str
    detail: str
    plan: WithdrawPlan
    operator_transaction: object | None = None


def _withdraw_token(contract, token: str):
    """A token of the contract's network by symbol (case-insensitive) or address; the native coin by its
    symbol or the zero address."""
    from billing.models import Token

    wanted = (token or "").strip()
    if not wanted:
        raise OperatorInputError("validation_error", "Name the token to withdraw (symbol or address).")
    tokens = Token.objects.filter(network=contract.network)
    if wanted.lower().startswith("0x"):
        address = "" if wanted.lower() == ZERO_ADDRESS else wanted
        found = tokens.filter(address__iexact=address).first()
    else:
        found = tokens.filter(symbol__iexact=wanted).first()
    if found is None and wanted.lower() in (contract.network.native_symbol.lower(), ZERO_ADDRESS):
        found = Token(network=contract.network, symbol=contract.network.native_symbol, address="", decimals=18)
    if found is None:
        raise OperatorInputError(
            "unknown_token", f"No token {wanted!r} on network {contract.network.slug} (symbol or address)."
        )
    return found


def _withdraw_calldata(contract, *, token_address: str, to: str, amount: int) -> str:
    from web3 import Web3

    fn = contract.abi_function(contract.withdraw_method) if contract.withdraw_method else None
    inputs = [i.get("type") for i in (fn or {}).get("inputs", [])]
    if inputs != ["address", "address", "uint256"]:
        raise OperatorActionError(
            "withdraw_unsupported",
            "Only contracts whose withdraw method is withdraw(address token, address to, uint256 amount) can be "
            "withdrawn from here.",
        )
    w3c = Web3().eth.contract(abi=contract.abi)
    return w3c.encode_abi(
        contract.withdraw_method,
        args=[Web3.to_checksum_address(token_address), Web3.to_checksum_address(to), amount],
    )


def contract_withdraw_plan(*, contract, token: str, amount: int | None) -> WithdrawPlan:
    """Validate a withdrawal and work out what it sends (reads the contract's balance from the chain).

    `amount` None: the whole balance minus what in-flight refunds of that token still need. Refused: no
    treasury (409 treasury_not_configured), an amount under 1 (400), more than that (409
    insufficient_balance), nothing to withdraw (409 nothing_to_withdraw)."""
    from django.conf import settings
    from django.db.models import Sum
    from eth_utils import is_address, to_checksum_address

    from billing.chain.balances import read_balances
    from billing.models import Token

    treasury = (getattr(settings, "BILLING_TREASURY_ADDRESS", "") or "").strip()
    if not treasury:
        raise OperatorActionError(
            "treasury_not_configured", "No treasury address: set BILLING_TREASURY_ADDRESS to withdraw."
        )
    if not is_address(treasury) or treasury.lower() == ZERO_ADDRESS:
        raise OperatorActionError(
            "treasury_not_configured", "BILLING_TREASURY_ADDRESS is not a valid, non-zero address."
        )
    treasury = to_checksum_address(treasury)
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount < 1):
        raise OperatorInputError("validation_error", "The amount is a positive integer in the token's smallest unit.")
    tok = _withdraw_token(contract, token)
    token_address = tok.address or ZERO_ADDRESS
    key = f"{tok.symbol}@{contract.network.slug}"
    probe = tok if tok.pk is not None else Token(pk=0, network=contract.network, symbol=tok.symbol, address="")
    try:
        balance = read_balances(network=contract.network, holder=contract.address, tokens=[probe])[probe.pk]
    except Exception as exc:
        raise OperatorActionError(
            "chain_unavailable", f"The contract's balance cannot be read: {mask_url(str(exc))[:300]}"
        ) from None
    if isinstance(balance, Exception):
        raise OperatorActionError("chain_unavailable", f"The contract's balance cannot be read: {balance}")
    reserved = 0
    if tok.pk is not None:
        reserved = int(
            PaymentTransaction.objects.filter(
                contract=contract, token=tok, refund_status=RefundStatus.IN_FLIGHT
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
    available = max(balance - reserved, 0)
    if amount is None:
        if available == 0:
            raise OperatorActionError(
                "nothing_to_withdraw",
                f"The contract holds {balance} of {key} (smallest unit), {reserved} of it for refunds in flight.",
            )
        amount = available
    elif amount > available:
        raise OperatorActionError(
            "insufficient_balance",
            f"The contract holds {balance} of {key} (smallest unit), {reserved} of it for refunds in flight: "
            f"{amount} cannot be withdrawn.",
        )
    data = _withdraw_calldata(contract, token_address=token_address, to=treasury, amount=amount)
    return WithdrawPlan(
        contract_slug=contract.slug,
        network=contract.network.slug,
        token=key,
        token_address=to_checksum_address(token_address),
        treasury=treasury,
        amount=amount,
        balance=balance,
        reserved=reserved,
        to=to_checksum_address(contract.address),
        data=data,
    )


def _refuse_withdraw_in_flight(contract) -> None:
    from billing.services.operator_txs import NONCE_HOLDING

    if OperatorTransaction.objects.filter(
        kind=OperatorTransaction.Kind.WITHDRAW,
        to__iexact=contract.address,
        network_id=contract.network_id,
        status__in=NONCE_HOLDING,
    ).exists():
        raise OperatorActionError(
            "withdraw_in_flight", "A withdrawal from this contract is still in flight: wait until it is settled."
        )


def contract_withdraw(
    *, contract, actor, token: str, amount: int | None = None, reason: str = "", dry_run: bool = False
) -> WithdrawResult:
    """Withdraw a token from a payment contract to the treasury (BILLING_TREASURY_ADDRESS) through the
    contract's withdraw(token, to, amount), sent as an operator transaction (committed before the
    broadcast, watched and replaced by the sweep like a refund), audited on the contract with the actor and
    reason. One withdrawal per contract at a time (409 withdraw_in_flight). `dry_run`: validate and return
    the plan, send and write nothing. Runs outside any transaction."""
    from billing.models import PaymentContract

    if not (reason or "").strip() and not dry_run:
        raise OperatorInputError("validation_error", "A reason is required (it is kept in the audit log).")
    if not dry_run:
        _refuse_withdraw_in_flight(contract)
    plan = contract_withdraw_plan(contract=contract, token=token, amount=amount)
    if dry_run:
        return WithdrawResult("withdraw_planned", "Dry run: nothing was sent.", plan)
    try:
        operator_account()
    except ImproperlyConfigured as exc:
        raise OperatorActionError("not_available", f"Withdrawals need the operator key: {exc}") from None
    from billing.services.operator_txs import (
        OperatorTxRefused,
        operator_tx_broadcast,
        operator_tx_create,
    )

    details = {"reason": reason, "actor": _actor_label(actor), **plan.as_dict()}
    with acting_user(actor), transaction.atomic(durable=True):
        locked = PaymentContract.objects.select_for_update().select_related("network").get(pk=contract.pk)
        _refuse_withdraw_in_flight(locked)
        row = operator_tx_create(
            kind=OperatorTransaction.Kind.WITHDRAW,
            network=locked.network,
            to=plan.to,
            data=plan.data,
            requested_by=_actor_label(actor),
            reason=reason,
        )
        _audit_note(
            instance=locked, actor=actor, note="withdraw_requested", details={**details, "operator_tx_id": row.pk}
        )
    from billing.chain.rpc import ChainClient

    client = ChainClient.for_network(locked.network, contract=locked)
    try:
        row = operator_tx_broadcast(row=row, client=client)
    except OperatorTxRefused as exc:
        with transaction.atomic():
            _audit_note(
                instance=locked,
                actor=actor,
                note="withdraw_refused",
                details={**details, "operator_tx_id": row.pk, "error": str(exc)[:300]},
            )
        raise OperatorActionError("withdraw_failed", f"The withdrawal was not sent: {str(exc)[:300]}")
    with transaction.atomic():
        _audit_note(
            instance=locked,
            actor=actor,
            note="withdraw_sent",
            details={**details, "operator_tx_id": row.pk, "tx_hash": row.tx_hashes[-1]},
        )
    log.info(
        "operator.withdraw_sent", contract_slug=locked.slug, token=plan.token, amount=str(plan.amount), user_id=actor.pk
    )
    detail = (
        f"Withdrawing {plan.amount} of {plan.token} (smallest unit) to the treasury {plan.treasury}: "
        f"{row.tx_hashes[-1]}."
    )
    if row.status == OperatorTransaction.Status.NEW:
        detail += " The node did not confirm receiving it; the operator transaction sweep checks it."
    return WithdrawResult("withdraw_sent", detail, plan, row)
