"""Thin Celery tasks: take ids, call a service. Messages are only triggers: each sweep below finds in
the database whatever a lost message or a killed worker left, so every task is safe to run twice."""

from __future__ import annotations

import structlog
from celery import shared_task

from billing.metrics import sweep_error

log = structlog.get_logger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def contract_sync_dispatch() -> int:
    """Beat: claim the followers due for a run (enabled contracts, new ones included; SKIP LOCKED, the claim
    moved forward in the same transaction) and send one sync message per claimed contract, with its claim."""
    from billing.services.chain_sync import contract_sync_claim_due

    claimed = contract_sync_claim_due()
    for pk, claim in claimed:
        contract_sync_task.delay(pk, claim.isoformat())
    return len(claimed)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, soft_time_limit=240, time_limit=300)
def contract_sync_task(contract_id: int, claim: str | None = None) -> None:
    """One follower run. With the dispatch's claim: only while it is still the cursor's (a duplicate message
    is a no-op). Without (an explicit trigger): at once; the cursor's row lock still keeps runs apart."""
    from billing.services.chain_sync import (
        contract_sync,
        contract_sync_record_error,
        contract_sync_record_success,
        contract_sync_take,
    )
    from billing.services.notices import sweep_error_notice

    if claim is not None and not contract_sync_take(contract_id=contract_id, claim=claim):
        return
    try:
        contract_sync(contract_id=contract_id)
        contract_sync_record_success(contract_id=contract_id)
    except Exception as exc:  # recorded on the cursor (and told to ops); the next beat tick retries
        log.warning("chain.sync_failed", contract_id=contract_id, error=f"{type(exc).__name__}: {exc}")
        sweep_error("contract_sync")
        contract_sync_record_error(contract_id=contract_id, error=f"{type(exc).__name__}: {exc}")
        sweep_error_notice(
            sweep="contract_sync", subject=f"contract:{contract_id}", error=f"{type(exc).__name__}: {exc}"
        )


@shared_task(ignore_result=True, soft_time_limit=90, time_limit=120)
def inbound_events_claim() -> dict:
    """Beat, every second: claim due webhook deliveries in batches (SKIP LOCKED), verify them on chain and
    apply them. The webhook request only stores them; this is the only place they are processed (besides
    an operator's reprocess). Two of these running at once take different rows."""
    from billing.services.webhooks import inbound_events_process_due

    report = inbound_events_process_due()
    return {"claimed": report.claimed, **report.outcomes}


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def outbox_deliver(delivery_id: int, claim: str | None = None) -> None:
    from billing.services.outbox import outbox_delivery_attempt

    outbox_delivery_attempt(delivery_id=delivery_id, claim=claim)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def outbox_sweep() -> int:
    """Beat: claim due deliveries (SKIP LOCKED, next_attempt_at moved forward in the same transaction) and
    send one message per claimed row, carrying its claim."""
    from billing.services.outbox import outbox_claim_due

    claimed = outbox_claim_due()
    for pk, claim in claimed:
        outbox_deliver.delay(pk, claim.isoformat())
    return len(claimed)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def transaction_track_receipt(transaction_id: int, claim: str | None = None) -> str:
    from billing.services.receipts import transaction_check_receipt

    return transaction_check_receipt(transaction_id=transaction_id, claim=claim, force=False)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def receipts_sweep() -> int:
    """Reported hashes whose receipt is not final yet (submitted, or failed ones that may still land), due for
    a check: claimed (SKIP LOCKED, next check moved forward in the same transaction), one message each."""
    from billing.services.receipts import receipts_claim_due

    claimed = receipts_claim_due()
    for pk, claim in claimed:
        transaction_track_receipt.delay(pk, claim.isoformat())
    return len(claimed)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, soft_time_limit=90, time_limit=120)
def payment_fees_fill() -> int:
    """Beat: the network fee of payments the chain follower confirmed (it reads no receipts for them)."""
    from billing.services.receipts import payment_fees_fill as fill

    return fill()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def checkouts_expire() -> int:
    from billing.services.receipts import checkouts_expire as expire

    return expire()


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def subscriptions_advance() -> int:
    from billing.services.subscriptions import subscription_advance, subscriptions_due_ids

    ids = subscriptions_due_ids()
    for pk in ids:
        subscription_advance(subscription_id=pk)
    return len(ids)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def operator_txs_sweep() -> int:
    """Pending refunds and withdrawals: record receipts, replace the stuck ones with a higher fee."""
    from billing.services.notices import sweep_error_notice
    from billing.services.operator_txs import operator_tx_watch, operator_txs_pending_ids

    ids = operator_txs_pending_ids()
    for pk in ids:
        try:
            operator_tx_watch(row_id=pk)
        except Exception as exc:  # the next sweep tries again
            log.warning("operator_tx.watch_failed", row_id=pk, error=f"{type(exc).__name__}: {exc}")
            sweep_error("operator_txs_sweep")
            sweep_error_notice(
                sweep="operator_txs_sweep", subject=f"operator_tx:{pk}", error=f"{type(exc).__name__}: {exc}"
            )
    return len(ids)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, soft_time_limit=240, time_limit=300)
def payments_reverify() -> int:
    """Recent confirmations the follower has not passed yet, checked against the chain again (reorgs)."""
    from billing.services.notices import sweep_error_notice
    from billing.services.reverify import payments_reverify_run

    try:
        return sum(payments_reverify_run().values())
    except Exception as exc:
        sweep_error_notice(sweep="payments_reverify", subject="all", error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, soft_time_limit=1700, time_limit=1800)
def contracts_reconcile() -> dict:
    """Beat, daily: the ledger against the chain for every contract; ops get a notice when anything differs."""
    from billing.services.reconcile import contracts_reconcile_all

    return contracts_reconcile_all()
