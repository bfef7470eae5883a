"""Apply what the chain says to the ledger. The webhook, the chain follower and receipt tracking all
end here, so a payment is recorded once whichever path sees it first: the ledger row of an order is
locked (`select_for_update`) and the chain log is unique on (chain_id, tx_hash, log_index)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone
from eth_utils import to_checksum_address

from billing.fields import ZERO_ADDRESS
from billing.models import ChainEvent, PaymentContract, PaymentTransaction, Plan, Token, TxStatus
from billing.services.ledger import transaction_lock, transaction_record_created, transaction_set_status
from billing.services.notices import ops_notice
from billing.services.subscriptions import (
    subscription_apply_payment,
    subscription_apply_refund,
    subscription_restore_payment,
    subscription_suspend_payment,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ObservedLog:
    """One decoded log, read from the chain (never from a webhook body)."""

    name: str  # Paid | Refunded | Withdrawn | Transfer
    chain_id: int
    address: str  # emitting contract
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GasFacts:
    gas_used: int | None = None
    effective_gas_price: int | None = None

    @property
    def fee(self) -> int | None:
        if self.gas_used is None or self.effective_gas_price is None:
            return None
        return self.gas_used * self.effective_gas_price

    @classmethod
    def from_receipt(cls, receipt: dict | None) -> GasFacts:
        if not receipt:
            return cls()
        gas = receipt.get("gasUsed")
        price = receipt.get("effectiveGasPrice")
        return cls(int(gas, 16) if gas else None, int(price, 16) if price else None)


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
        "gas_used": gas.gas_used,
        "effective_gas_price": gas.effective_gas_price,
        "fee": gas.fee,
        "usd_rate_at_confirmation": tx.token.usd_estimate,
        "external_id": external_id or tx.external_id,
        "failure_reason": "",
    }
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
        return True
    if tx.status not in (TxStatus.CONFIRMED, TxStatus.UNMATCHED):
        return False
    if tx.tx_hash != tx_hash or (log_index is not None and tx.log_index != log_index):
        return False  # the ledger already stands on the log's new position (mined again)
    transaction_set_status(tx=tx, status=TxStatus.NEEDS_REVIEW, actor=actor, reason=reason, details=details)
    subscription_suspend_payment(tx=tx, now=now)
    log.warning("payment.reorged_out", transaction_id=tx.pk, tx_hash=tx.tx_hash, user_id=tx.user_id, reason=reason)
    return True
