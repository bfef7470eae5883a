"""Re-verification of recent confirmations (docs/lifecycle.md, "Reorgs"). The webhook worker and receipt
tracking may confirm a payment in a block the chain follower has not reached yet; if a reorg deeper than the
confirmation policy then replaces that block, nothing else would ever look at it again. A beat task
(`billing.tasks.payments_reverify`) therefore checks every payment confirmed in the last
`BILLING_REVERIFY_WINDOW` whose block the follower has not passed (the follower checks the blocks it scans
itself), and every recent reorg victim:

- the block is not returned by the endpoint: it lags, which is no evidence; try again later;
- the block still has the payment's hash: nothing to do;
- the payment's log is on chain at or below the policy's block (same or new position): the ledger follows
  it (`payment_observe_paid`: a new position is recorded, a `needs_review` victim is confirmed again and
  its periods are restored);
- otherwise a confirmed payment goes to `needs_review`, its periods are suspended and ops are told."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from billing import metrics
from billing.attempts import claim_due, count_failure
from billing.chain.confirmation import applicable_block
from billing.chain.logs import GasFacts, observed_from_raw
from billing.models import ChainEvent, PaymentTransaction, TransactionStatusChange, TxStatus
from billing.services.chain_sync import chain_events_gone
from billing.services.payments import payment_observe_paid, payment_reorged_out

log = structlog.get_logger(__name__)
ACTOR = "chain:reverify"


def _window() -> timedelta:
    return settings.BILLING_REVERIFY_WINDOW


def payments_reverify_due_ids(*, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Recent confirmations the follower has not passed yet, and recent reorg victims, oldest first (a read:
    a pass claims them with payments_reverify_claim_due)."""
    return list(_due_rows(now=now).order_by("block_number", "pk").values_list("pk", flat=True)[:limit])


def _due_rows(*, now: datetime | None = None):
    now = now or timezone.now()
    since = now - _window()
    reorged = TransactionStatusChange.objects.filter(
        transaction=OuterRef("pk"), to_status=TxStatus.NEEDS_REVIEW, details__reorg=True, created_at__gte=since
    )
    not_followed = Q(contract__cursor__isnull=True) | Q(block_number__gt=F("contract__cursor__last_block"))
    return (
        PaymentTransaction.objects.filter(tx_hash__isnull=False, block_number__isnull=False)
        .filter(
            (Q(status=TxStatus.CONFIRMED, confirmed_at__gte=since) & not_followed)
            | Q(Exists(reorged), status=TxStatus.NEEDS_REVIEW, refund_tx_hash="")
        )
        .filter(Q(reverify_next_at__isnull=True) | Q(reverify_next_at__lte=now))
    )


REVERIFY_CLAIM_LEASE = timedelta(minutes=5)  # longer than a pass can take (the task's time limit)
REVERIFY_BACKOFF_BASE_SECONDS = 30.0
REVERIFY_BACKOFF_MAX_SECONDS = 600.0


def payments_reverify_claim_due(*, now: datetime | None = None, limit: int = 200) -> list[int]:
    """Claim the due payments for one pass: locked with SKIP LOCKED (a concurrent pass takes others) and made
    not-due for the lease, in the same transaction; each is released (due at the next pass) or backed off
    once checked."""
    now = now or timezone.now()
    return claim_due(
        _due_rows(now=now),
        column="reverify_next_at",
        claim=now + REVERIFY_CLAIM_LEASE,
        order_by=("block_number", "pk"),
        limit=limit,
        of=("self",),
    )


def _release(pk: int, outcome: str) -> None:
    """Checked: due again at the next pass; a check that could not be made (chain unavailable, an error)
    waits billing.retry.backoff_seconds(failures in a row)."""
    if outcome in ("unavailable", "error"):
        count_failure(
            PaymentTransaction,
            pk,
            counter="reverify_failures",
            column="reverify_next_at",
            base=REVERIFY_BACKOFF_BASE_SECONDS,
            cap=REVERIFY_BACKOFF_MAX_SECONDS,
        )
    else:
        PaymentTransaction.objects.filter(pk=pk).update(reverify_failures=0, reverify_next_at=None)


def _paid_log(tx: PaymentTransaction, receipt: dict | None):
    if not receipt or int(receipt.get("status", "0x1"), 16) != 1:
        return None
    contract = tx.contract
    for raw in receipt.get("logs", []):
        if (raw.get("address") or "").lower() != contract.address.lower():
            continue
        observed = observed_from_raw(contract.network.chain_id, contract.abi, raw)
        if observed and observed.name == "Paid" and str(observed.args.get("orderId", "")).lower() == tx.order_id:
            return observed
    return None


def payment_reverify(*, transaction_id: int, client=None) -> str:
    """Check one payment against the chain. Returns ok | lagging | unavailable | moved | restored | waiting |
    reorged | skipped."""
    from billing.chain.rpc import ChainClient, RpcError

    tx = (
        PaymentTransaction.objects.select_related("contract__network", "token")
        .filter(pk=transaction_id, status__in=[TxStatus.CONFIRMED, TxStatus.NEEDS_REVIEW])
        .first()
    )
    if tx is None or not tx.tx_hash or tx.block_number is None or not tx.order_id:
        return "skipped"
    contract = tx.contract
    client = client or ChainClient.for_network(contract.network, contract=contract)
    try:
        block = client.get_block(tx.block_number)
        if block is None:
            return "lagging"  # the endpoint is behind: not evidence of anything
        if tx.status == TxStatus.CONFIRMED and block["hash"].lower() == tx.block_hash.lower():
            return "ok"
        receipt = client.get_transaction_receipt(tx.tx_hash)
        paid = _paid_log(tx, receipt)
        applicable = applicable_block(contract.network, client) if paid else None
    except RpcError as exc:
        log.info("reverify.chain_unavailable", transaction_id=tx.pk, error=str(exc)[:200])
        return "unavailable"
    if paid is not None and paid.block_number <= applicable:
        was = tx.status
        payment_observe_paid(contract=contract, observed=paid, gas=GasFacts.from_receipt(receipt), source=ACTOR)
        return "restored" if was == TxStatus.NEEDS_REVIEW else "moved"
    if tx.status == TxStatus.NEEDS_REVIEW:
        return "waiting"  # not back on chain (at the policy's block) yet
    why = f"block {tx.block_number} was replaced and the payment is not on chain at the confirmation policy"
    event = ChainEvent.objects.filter(chain_id=tx.chain_id, tx_hash=tx.tx_hash, log_index=tx.log_index).first()
    if event is not None and not event.removed:
        chain_events_gone(contract, [event], why=why, actor=ACTOR)
    else:
        payment_reorged_out(
            tx_id=tx.pk, event_name="Paid", tx_hash=tx.tx_hash, log_index=tx.log_index, actor=ACTOR, reason=why
        )
    return "reorged"


def payments_reverify_run(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """One pass of the sweep: each due payment checked on its own (one chain client per contract); a row
    that raises is logged, counted and left for the next pass."""
    from billing.chain.rpc import ChainClient

    outcomes: dict[str, int] = {}
    clients: dict[int, object] = {}
    for pk in payments_reverify_claim_due(now=now, limit=limit):
        try:
            tx = PaymentTransaction.objects.select_related("contract__network").get(pk=pk)
            client = clients.get(tx.contract_id)
            if client is None:
                client = clients[tx.contract_id] = ChainClient.for_network(tx.contract.network, contract=tx.contract)
            outcome = payment_reverify(transaction_id=pk, client=client)
        except Exception as exc:  # one row never stops the others
            log.warning("reverify.failed", transaction_id=pk, error=f"{type(exc).__name__}: {exc}"[:500])
            outcome = "error"
        _release(pk, outcome)
        metrics.PAYMENTS_REVERIFIED.labels(outcome=outcome).inc()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if outcomes:
        log.info("reverify.done", **outcomes)
    return outcomes
