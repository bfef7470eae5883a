"""The client reports the hash it sent; from then on its receipt is tracked, so a reverted payment
becomes `failed` with its revert reason even though it emits no event, and a successful one confirms
as soon as its block is at the network's confirmation policy (`billing.chain.confirmation`), without
waiting for the webhook or the follower."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.attempts import claim_due, count_failure, parse_claim, take
from billing.chain.confirmation import applicable_block
from billing.chain.logs import GasFacts, observed_from_raw
from billing.chain.receipts import mined_receipt
from billing.chain.reverts import revert_reason
from billing.dispatch import enqueue_on_commit
from billing.models import PaymentTransaction, TransactionStatusChange, TxStatus
from billing.services.ledger import transaction_lock, transaction_set_status
from billing.services.payments import payment_mark_failed, payment_observe_paid
from billing.validators import validate_tx_hash
from billing_project.errors import ServiceError

log = structlog.get_logger(__name__)
# A payment mined right at its deadline may be seen a little later: wait this long before expiring.
EXPIRY_MARGIN = timedelta(minutes=2)


class SubmitError(ServiceError):
    """A reported transaction hash refused (code, message, HTTP status, field)."""


def reported_tx_hashes(*, transaction_id: int) -> set[str]:
    """The distinct hashes the client reported for one checkout (each report is a `submitted` history row)."""
    return {
        h
        for h in TransactionStatusChange.objects.filter(
            transaction_id=transaction_id, to_status=TxStatus.SUBMITTED
        ).values_list("details__tx_hash", flat=True)
        if h
    }


@transaction.atomic
def transaction_submit(*, tx: PaymentTransaction, tx_hash: str, actor: str) -> PaymentTransaction:
    from django.core.exceptions import ValidationError

    try:
        validate_tx_hash(tx_hash)
    except ValidationError as exc:
        raise SubmitError("invalid_tx_hash", exc.messages[0], field="tx_hash") from exc
    tx_hash = tx_hash.lower()
    locked = transaction_lock(tx.pk)
    if locked.tx_hash == tx_hash and locked.status != TxStatus.FAILED:
        return locked  # a repeat of the same report
    if locked.status in (TxStatus.PENDING, TxStatus.SUBMITTED, TxStatus.FAILED):
        if locked.expires_at and locked.status == TxStatus.FAILED and locked.expires_at < timezone.now():
            raise SubmitError("checkout_expired", "The checkout's deadline has passed.", status=409)
        reported = reported_tx_hashes(transaction_id=locked.pk)
        limit = settings.BILLING_CHECKOUT_MAX_TX_HASHES
        if tx_hash not in reported and len(reported) >= limit:
            # Each new hash is a status-history row and a receipt check: a client may not make them unbounded.
            raise SubmitError(
                "too_many_tx_hashes",
                f"This checkout already has {len(reported)} reported transactions (at most {limit}); "
                "start a new checkout.",
                field="tx_hash",
                status=409,
            )
        transaction_set_status(
            tx=locked,
            status=TxStatus.SUBMITTED,
            actor=actor,
            reason="client reported the transaction hash",
            fields={"tx_hash": tx_hash, "failure_reason": ""},
            details={"tx_hash": tx_hash},
        )
        # The new hash is checked by this message (its claim); a sweep takes it only if the message is lost.
        claim = timezone.now() + RECEIPT_CLAIM_LEASE
        PaymentTransaction.objects.filter(pk=locked.pk).update(receipt_next_check_at=claim, receipt_checks=0)
        enqueue_on_commit("billing.tasks.transaction_track_receipt", (locked.pk, claim.isoformat()), countdown=2)
        return locked
    raise SubmitError(
        "invalid_state", f"The transaction is {locked.status}; a hash can no longer be reported.", status=409
    )


RECEIPT_CLAIM_LEASE = timedelta(minutes=2)  # longer than one check can take (a few RPC calls with deadlines)
RECEIPT_BACKOFF_BASE_SECONDS = 4.0
RECEIPT_BACKOFF_MAX_SECONDS = 120.0


def _receipt_rows(now):
    return PaymentTransaction.objects.filter(
        Q(status=TxStatus.SUBMITTED) | Q(status=TxStatus.FAILED, expires_at__gt=now), tx_hash__isnull=False
    ).filter(Q(receipt_next_check_at__isnull=True) | Q(receipt_next_check_at__lte=now))


def receipts_claim_due(*, limit: int = 500, lease: timedelta = RECEIPT_CLAIM_LEASE) -> list[tuple[int, datetime]]:
    """Claim reported hashes due for a receipt check: locked with SKIP LOCKED and made not-due until the lease
    ends, in the same transaction. -> [(id, claim)]: one message per row, carrying its claim."""
    now = timezone.now()
    claim = now + lease
    ids = claim_due(
        _receipt_rows(now),
        column="receipt_next_check_at",
        claim=claim,
        order_by=("receipt_next_check_at",),
        limit=limit,
        of=("self",),
    )
    return [(pk, claim) for pk in ids]


def transaction_check_receipt(
    *, transaction_id: int, client=None, claim: datetime | str | None = None, force: bool = True
) -> str:
    """Returns waiting | confirmed | failed | duplicate | skipped.

    Messages pass `force=False` and their `claim` (billing.tasks.transaction_track_receipt): a check runs only
    while the claim is the row's (or, without one, when the row is due), and a "waiting" outcome schedules the
    next check with billing.retry.backoff_seconds. Direct calls (tests, operator tools) check at once."""
    # One check at a time: taking the turn moves the row's next check a lease ahead (billing.attempts.take).
    if not force and not take(
        PaymentTransaction.objects.filter(pk=transaction_id),
        column="receipt_next_check_at",
        claim=parse_claim(claim),
        lease=RECEIPT_CLAIM_LEASE,
    ):
        return "skipped"
    outcome = _check_receipt(transaction_id=transaction_id, client=client)
    if outcome == "waiting":
        count_failure(
            PaymentTransaction,
            transaction_id,
            counter="receipt_checks",
            column="receipt_next_check_at",
            base=RECEIPT_BACKOFF_BASE_SECONDS,
            cap=RECEIPT_BACKOFF_MAX_SECONDS,
        )
    return outcome


def _check_receipt(*, transaction_id: int, client=None) -> str:
    from billing.chain.rpc import ChainClient, RpcError

    tx = PaymentTransaction.objects.select_related("contract__network").filter(pk=transaction_id).first()
    if tx is None or not tx.tx_hash or tx.status not in (TxStatus.SUBMITTED, TxStatus.FAILED):
        return "skipped"
    contract = tx.contract
    client = client or ChainClient.for_network(contract.network, contract=contract)
    try:
        mined = mined_receipt(client, tx.tx_hash, lambda _block: applicable_block(contract.network, client))
    except RpcError as exc:
        log.info("receipt.chain_unavailable", transaction_id=tx.pk, tx_hash=tx.tx_hash, error=str(exc)[:200])
        return "waiting"
    now = timezone.now()
    if mined is None:
        if tx.status == TxStatus.SUBMITTED and tx.expires_at and tx.expires_at + EXPIRY_MARGIN < now:
            payment_mark_failed(tx=tx, reason="not mined before the checkout's deadline", source="chain:receipt")
            return "failed"
        return "waiting"
    receipt = mined.receipt
    if mined.reverted:
        if tx.status == TxStatus.FAILED:
            return "duplicate"
        reason = revert_reason(client, contract, tx.tx_hash) or "reverted"
        payment_mark_failed(tx=tx, reason=reason, source="chain:receipt", tx_hash=tx.tx_hash)
        return "failed"
    if not mined.deep_enough:
        return "waiting"  # not at the network's confirmation policy yet
    for raw in receipt.get("logs", []):
        if (raw.get("address") or "").lower() != contract.address.lower():
            continue
        observed = observed_from_raw(contract.network.chain_id, contract.abi, raw)
        if observed and observed.name == "Paid" and str(observed.args["orderId"]).lower() == tx.order_id:
            effect = payment_observe_paid(
                contract=contract, observed=observed, gas=GasFacts.from_receipt(receipt), source="chain:receipt"
            )
            return effect.kind
    payment_mark_failed(
        tx=tx, reason="the transaction succeeded but paid no order of this checkout", source="chain:receipt"
    )
    return "failed"


def checkouts_expire(*, now=None) -> int:
    """Pending checkouts (and failed ones, whose wallet retries have run out) past their deadline."""
    now = now or timezone.now()
    count = 0
    for tx in PaymentTransaction.objects.filter(
        status__in=[TxStatus.PENDING, TxStatus.FAILED], expires_at__lt=now - EXPIRY_MARGIN
    ).only("pk", "status")[:1000]:
        try:
            transaction_set_status(tx=tx, status=TxStatus.EXPIRED, actor="system:expiry", reason="deadline passed")
            count += 1
        except Exception as exc:  # a concurrent confirmation won the row: nothing to expire
            log.info("checkout.expire_skipped", transaction_id=tx.pk, error=str(exc)[:200])
    return count


def payment_fees_fill(*, limit: int = 200) -> int:
    """The network fee of paid ledger rows confirmed without a receipt (the chain follower reads none for
    payments, to keep its batches fast): gas used and price from the mined receipt, `limit` rows per run, newest
    first. Mirrored chain data: a plain UPDATE (not audited). A network that does not answer is tried next run.
    Returns how many rows got their fee."""
    from billing.chain.rpc import ChainClient, RpcError

    rows = list(
        PaymentTransaction.objects.filter(
            gas_used__isnull=True,
            tx_hash__isnull=False,
            status__in=(TxStatus.CONFIRMED, TxStatus.REFUNDED, TxStatus.NEEDS_REVIEW, TxStatus.UNMATCHED),
        )
        .select_related("contract__network")
        .order_by("-pk")[:limit]
    )
    clients: dict[int, ChainClient | None] = {}
    filled = 0
    for tx in rows:
        network = tx.contract.network
        if network.pk not in clients:
            clients[network.pk] = ChainClient.for_network(network, contract=tx.contract)
        client = clients[network.pk]
        if client is None:
            continue
        try:
            receipt = client.get_transaction_receipt(tx.tx_hash)
        except RpcError as exc:
            log.info("receipt.fees_unavailable", network=network.slug, error=str(exc)[:200])
            clients[network.pk] = None
            continue
        gas = GasFacts.from_receipt(receipt)
        if gas.gas_used is None:
            continue
        filled += PaymentTransaction.objects.filter(pk=tx.pk, gas_used__isnull=True).update(
            gas_used=gas.gas_used, effective_gas_price=gas.effective_gas_price, fee=gas.fee
        )
    return filled
