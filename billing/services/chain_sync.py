"""The chain follower: read a contract's logs from its cursor up to the network's applicable block
(`billing.chain.confirmation.applicable_block`), roll back what a reorg removed, and apply every payment,
refund, payout and stray ERC-20 transfer through the same services the webhook uses. Each batch is one
database transaction that holds the cursor row (`select_for_update(skip_locked=True)`): the cursor and the
ledger move together, two workers never scan the same contract, and a worker killed between batches loses
nothing.

- A block the endpoint does not return (yet) is not a reorg: the run stops with `ChainNotReady` and the
  next one retries; no status moves.
- Every log another path (webhook, receipt) recorded in a scanned range must be among the logs the chain
  returns for that range; one that is gone was removed by a reorg deeper than the policy, and its ledger
  row goes to `needs_review` (`_check_recorded_logs`).
- When applying a batch raises, the batch is applied again event by event, each in its own savepoint; an
  event that still raises is recorded for review and the cursor moves on (`apply_events_one_by_one`).

Throughput (docs/performance.md, "Chain backfill"): logs are decoded by a `LogDecoder` compiled once per run
(eth_abi over the raw eth_getLogs answer, events matched by topic hash); receipts are read only for ERC-20
transfers into the contract that no payment explains (to tell a stray transfer from a contract call); a batch
of at least `BULK_MIN_EVENTS` logs applies its plain payments in bulk (`payments_apply_in_bulk`) and the rest
one by one; a batch is sized by blocks, by logs (`MAX_EVENTS_PER_BATCH`, cut at a block boundary) and by time
(`BATCH_SECONDS`: the next batch shrinks when one took longer), and a run starts no batch after
`RUN_SECONDS`, so every batch commits well inside the sync task's soft time limit."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing import metrics
from billing.attempts import claim_due, count_failure, parse_claim, take
from billing.bulk_sql import freeze_startup_heap, gc_paused
from billing.chain.abi import LogDecoder, event_topics
from billing.chain.confirmation import applicable_block
from billing.chain.logs import GasFacts, ObservedLog, hex_int, observed_from_raw
from billing.models import ChainBlock, ChainCursor, ChainEvent, PaymentContract, Token
from billing.services.notices import ops_notice
from billing.services.payments import (
    payment_observe_paid,
    payment_observe_refunded,
    payment_observe_transfer,
    payment_observe_withdrawn,
    payment_reorged_out,
    payments_apply_in_bulk,
)
from billing_project.logging import mask_url

log = structlog.get_logger(__name__)
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
BLOCKS_KEPT = 5000
BULK_MIN_EVENTS = 16  # a batch with fewer logs is applied one by one (as cheap, and no bulk statements)
MAX_EVENTS_PER_BATCH = 2000  # logs per batch; a batch is cut at the block boundary before the next one
BATCH_SECONDS = 20.0  # a batch that took longer makes the next one proportionally shorter (blocks and logs)
RUN_SECONDS = 120.0  # a run starts no batch after this (the sync task's soft time limit is 240 s)


# Failures of the database connection or of the worker itself (a lost connection, a deadlock, the task's soft
# time limit) say nothing about an event: the batch is rolled back and tried again, never skipped.
NOT_AN_EVENT_PROBLEM = (OperationalError, InterfaceError, SoftTimeLimitExceeded)


class ChainNotReady(Exception):
    """The endpoint does not return a block the follower needs (it lags behind): retry later."""


@dataclass
class SyncResult:
    contract_slug: str
    batches: int = 0
    logs: int = 0
    from_block: int | None = None
    to_block: int | None = None
    reorgs: int = 0
    failed_events: int = 0
    busy: bool = False


def _pad_address(address: str) -> str:
    return "0x" + "0" * 24 + address.lower()[2:]


def _block(client, number: int) -> dict:
    """The block at `number`; an endpoint that does not have it yet is lagging, which is not a reorg."""
    block = client.get_block(number)
    if block is None:
        raise ChainNotReady(f"the endpoint does not return block {number} yet")
    return block


def _find_fork(contract: PaymentContract, client) -> int:
    """Highest remembered block whose hash the chain still has (0 when none matches)."""
    for seen in ChainBlock.objects.filter(contract=contract).order_by("-number")[:500]:
        if _block(client, seen.number)["hash"].lower() == seen.hash:
            return seen.number
    return max(contract.deployment_block - 1, 0)


@transaction.atomic
def chain_events_gone(
    contract: PaymentContract, events: list[ChainEvent], *, why: str, actor: str = "chain:follower"
) -> int:
    """Logs the ledger applied that the chain no longer has: mark them removed and move their ledger rows
    to needs_review (payments: their periods suspended; refunds: the refund in doubt). Returns how many
    ledger rows moved."""
    if not events:
        return 0
    ChainEvent.objects.filter(pk__in=[e.pk for e in events]).update(removed=True)
    moved = 0
    for event in events:
        if event.transaction_id is None:
            continue
        moved += payment_reorged_out(
            tx_id=event.transaction_id,
            event_name=event.name,
            tx_hash=event.tx_hash,
            log_index=event.log_index,
            actor=actor,
            reason=f"reorg deeper than the confirmation policy ({why}): the {event.name} log of block "
            f"{event.block_number} is gone",
            details={"block_number": event.block_number, "block_hash": event.block_hash},
        )
    first = min(events, key=lambda e: e.block_number)
    ops_notice(
        kind="deep_reorg",
        key=f"deep_reorg:{contract.pk}:{first.block_number}:{first.block_hash}",
        title=f"Reorg deeper than the confirmation policy on {contract.slug} at block {first.block_number}",
        body=f"{len(events)} applied log(s) gone, {moved} ledger row(s) moved to needs_review. {why}.",
        data={"contract": contract.slug, "block_number": first.block_number, "transactions": moved},
    )
    return moved


def _rollback(contract: PaymentContract, cursor: ChainCursor, client) -> int:
    fork = _find_fork(contract, client)
    removed = list(ChainEvent.objects.filter(contract=contract, block_number__gt=fork, removed=False))
    moved = chain_events_gone(contract, removed, why=f"blocks after {fork} were replaced")
    ChainBlock.objects.filter(contract=contract, number__gt=fork).delete()
    log.warning(
        "chain.reorg",
        contract_slug=contract.slug,
        fork_block=fork,
        from_block=cursor.last_block,
        transactions=moved,
    )
    cursor.last_block = fork
    seen = ChainBlock.objects.filter(contract=contract, number=fork).first()
    cursor.last_block_hash = seen.hash if seen else ""
    cursor.save(update_fields=["last_block", "last_block_hash", "updated_at"])
    return fork


def _receipts_by_tx(client, tx_hashes: set[str]) -> dict[str, dict]:
    """Receipts of the transactions whose logs need one: the ERC-20 transfers into the contract that no payment
    log of the batch explains (a stray transfer is told from a contract call by the receipt's other logs, and
    its ledger row records the fee). Payments need none: the ledger row's fee is filled by receipt tracking."""
    receipts: dict[str, dict] = {}
    for tx_hash in sorted(tx_hashes):
        receipt = client.get_transaction_receipt(tx_hash)
        if receipt is None:
            raise ChainNotReady(f"the endpoint does not return the receipt of {tx_hash} yet")
        receipts[tx_hash] = receipt
    return receipts


def _in_order(observed: list[ObservedLog]) -> list[ObservedLog]:
    return sorted(observed, key=lambda o: (o.block_number, o.log_index))


def _apply_event(contract: PaymentContract, item: ObservedLog, receipts: dict[str, dict], paid_txs: set[str]) -> None:
    gas = GasFacts.from_receipt(receipts.get(item.tx_hash))
    if item.name == "Paid":
        payment_observe_paid(contract=contract, observed=item, gas=gas, source="chain:follower")
    elif item.name == "Refunded":
        payment_observe_refunded(contract=contract, observed=item, source="chain:follower")
    elif item.name == "Withdrawn":
        payment_observe_withdrawn(contract=contract, observed=item, source="chain:follower")
    elif item.name == "Transfer" and item.tx_hash not in paid_txs:
        receipt = receipts.get(item.tx_hash) or {}
        if any((lg.get("address") or "").lower() == contract.address.lower() for lg in receipt.get("logs", [])):
            return  # part of a contract call (a payment or a refund), not a stray transfer
        payment_observe_transfer(contract=contract, observed=item, gas=gas, source="chain:follower")


def _apply(contract: PaymentContract, observed: list[ObservedLog], receipts: dict[str, dict]) -> None:
    paid_txs = {o.tx_hash for o in observed if o.name == "Paid"}
    ordered = _in_order(observed)
    if len(ordered) >= BULK_MIN_EVENTS:
        ordered = payments_apply_in_bulk(contract=contract, observed=ordered, source="chain:follower")
    for item in ordered:
        _apply_event(contract, item, receipts, paid_txs)


def apply_events_one_by_one(contract: PaymentContract, observed: list[ObservedLog], receipts: dict[str, dict]) -> int:
    """The batch raised: apply its events again one by one, each in its own savepoint. An event that still
    raises is recorded for review (`ChainEvent.apply_error`, ops told once, counted) and skipped, so the
    cursor moves on. Returns how many events failed. Keep this behaviour when the follower is rewritten."""
    paid_txs = {o.tx_hash for o in observed if o.name == "Paid"}
    failed = 0
    for item in _in_order(observed):
        try:
            with transaction.atomic():
                _apply_event(contract, item, receipts, paid_txs)
        except NOT_AN_EVENT_PROBLEM:
            raise
        except Exception as exc:  # recorded below; the others go on
            failed += 1
            _record_failed_event(contract, item, f"{type(exc).__name__}: {exc}")
    return failed


def _record_failed_event(contract: PaymentContract, item: ObservedLog, error: str) -> None:
    from billing.services.payments import chain_event_record

    event_id = None
    try:
        with transaction.atomic():
            event_id = chain_event_record(contract=contract, observed=item).pk
            ChainEvent.objects.filter(pk=event_id).update(apply_error=mask_url(error)[:2000])
    except Exception as exc:  # even the raw log cannot be stored: ops still hear of it below
        error = f"{error}; recording it failed too: {type(exc).__name__}: {exc}"
    with transaction.atomic():
        ops_notice(
            kind="chain_event_failed",
            key=f"chain_event_failed:{item.chain_id}:{item.tx_hash}:{item.log_index}",
            title=f"A {item.name} log on {contract.slug} could not be applied",
            body=f"Block {item.block_number}, transaction {item.tx_hash}, log {item.log_index}: {error[:500]}",
            data={"contract": contract.slug, "chain_event_id": event_id, "tx_hash": item.tx_hash},
        )
    metrics.CHAIN_EVENTS_FAILED.labels(contract=contract.slug).inc()
    log.error(
        "chain.event_failed",
        contract_slug=contract.slug,
        tx_hash=item.tx_hash,
        log_index=item.log_index,
        error=error[:500],
    )


def _check_recorded_logs(contract: PaymentContract, start: int, end: int, observed: list[ObservedLog]) -> int:
    """Logs recorded in [start, end] by another path (a webhook or a receipt, possibly before the follower
    got here) that the chain does not return for that range any more: a reorg deeper than the policy
    removed them after they were applied."""
    seen = {(o.tx_hash, o.log_index) for o in observed}
    recorded = ChainEvent.objects.filter(
        contract=contract, block_number__gte=start, block_number__lte=end, removed=False, name__in=("Paid", "Refunded")
    ).values_list("pk", "tx_hash", "log_index")
    gone = [pk for pk, tx_hash, index in recorded if (tx_hash, index) not in seen]
    if not gone:
        return 0
    events = list(ChainEvent.objects.filter(pk__in=gone))
    return chain_events_gone(contract, events, why=f"not among the logs of blocks {start}-{end}")


_REMEMBER_BLOCKS = f"""
    INSERT INTO {ChainBlock._meta.db_table} (contract_id, number, hash)
    SELECT %s, n, h FROM json_to_recordset(%s::json) AS v(n bigint, h text)
    ON CONFLICT (contract_id, number) DO UPDATE SET hash = EXCLUDED.hash"""  # noqa: S608 (the model's table)


def _remember_blocks(contract: PaymentContract, blocks: dict[int, str], end: int) -> None:
    """The hashes of the blocks with logs and of the batch's last block (reorg detection), one statement."""
    rows = json.dumps([{"n": n, "h": blocks[n]} for n in sorted(blocks)], separators=(",", ":"))
    with connection.cursor() as cursor:
        cursor.execute(_REMEMBER_BLOCKS, [contract.pk, rows])
    ChainBlock.objects.filter(contract=contract, number__lt=end - BLOCKS_KEPT).delete()


def _cut(raw: list[dict], start: int, end: int, limit: int) -> tuple[list[dict], int]:
    """At most `limit` raw logs (more only when one block alone has more), ending at a block boundary; cut before
    decoding, so the logs past the cut cost only their share of the eth_getLogs answer."""
    if len(raw) <= limit:
        return raw, end
    numbers = sorted(hex_int(r["blockNumber"]) for r in raw)
    cut = numbers[limit]  # the first block that does not fit whole
    end = cut - 1 if cut > start else cut
    return [r for r in raw if hex_int(r["blockNumber"]) <= end], end


def contract_sync(*, contract_id: int, client=None, max_batches: int = 20, batch_size: int | None = None) -> SyncResult:
    """Follow one contract from its cursor (the module's docstring). The run holds the garbage collector's full
    collections off (`gc_paused`; the process's startup heap frozen once, `freeze_startup_heap`): a batch's
    thousands of short-lived rows would otherwise set off full collections that walk the whole process."""
    freeze_startup_heap()
    with gc_paused():
        return _contract_sync(contract_id=contract_id, client=client, max_batches=max_batches, batch_size=batch_size)


def _contract_sync(*, contract_id: int, client, max_batches: int, batch_size: int | None) -> SyncResult:
    from billing.chain.rpc import ChainClient
    from billing.models import CryptoConfig

    contract = PaymentContract.objects.select_related("network").get(pk=contract_id)
    result = SyncResult(contract_slug=contract.slug)
    if not contract.enabled or not contract.address:
        return result
    ChainCursor.objects.get_or_create(contract=contract, defaults={"last_block": max(contract.deployment_block - 1, 0)})
    client = client or ChainClient.for_network(contract.network, contract=contract)
    batch_size = max(1, batch_size or CryptoConfig.load().get_logs_max_range)  # 0 would never advance
    chain_id = contract.network.chain_id
    token_addresses = list(
        Token.objects.filter(network=contract.network).exclude(address="").values_list("address", flat=True)
    )
    topics = event_topics(contract.abi, ("Paid", "Refunded", "Withdrawn"))
    decoder = LogDecoder(contract.abi)
    blocks_per_batch, events_per_batch = batch_size, MAX_EVENTS_PER_BATCH
    started = time.monotonic()

    safe = None
    for _ in range(max_batches):
        if result.batches and time.monotonic() - started > RUN_SECONDS:
            break  # the next run goes on from the cursor
        batch_started = time.monotonic()
        with transaction.atomic():
            cursor = ChainCursor.objects.select_for_update(skip_locked=True).filter(contract=contract).first()
            if cursor is None:
                result.busy = True
                return result
            if cursor.last_block_hash:
                block = _block(client, cursor.last_block)
                if block["hash"].lower() != cursor.last_block_hash:
                    _rollback(contract, cursor, client)
                    result.reorgs += 1
                    continue
            safe = applicable_block(contract.network, client)
            if safe <= cursor.last_block:
                cursor.last_run_at = timezone.now()
                cursor.last_error = ""
                cursor.save(update_fields=["last_run_at", "last_error", "updated_at"])
                break
            start = cursor.last_block + 1
            end = min(safe, start + blocks_per_batch - 1)
            raw = client.get_logs(
                address=contract.address, from_block=start, to_block=end, topics=[list(topics.values())]
            )
            if token_addresses:
                raw += client.get_logs(
                    address=token_addresses,
                    from_block=start,
                    to_block=end,
                    topics=[TRANSFER_TOPIC, None, _pad_address(contract.address)],
                )
            wanted = end
            raw, end = _cut(raw, start, end, events_per_batch)
            observed = [o for o in (observed_from_raw(chain_id, contract.abi, r, decoder) for r in raw) if o]
            paid_txs = {o.tx_hash for o in observed if o.name == "Paid"}
            receipts = _receipts_by_tx(client, {o.tx_hash for o in observed if o.name == "Transfer"} - paid_txs)
            end_block = _block(client, end)
            try:
                with transaction.atomic():
                    _apply(contract, observed, receipts)
            except NOT_AN_EVENT_PROBLEM:
                raise  # the database or the worker, not an event: the whole batch is tried again next run
            except Exception as exc:  # one bad event must not stop the contract: retry them one by one
                log.warning("chain.batch_failed", contract_slug=contract.slug, error=f"{type(exc).__name__}: {exc}")
                result.failed_events += apply_events_one_by_one(contract, observed, receipts)
            _check_recorded_logs(contract, start, end, observed)

            blocks = {o.block_number: o.block_hash for o in observed}
            blocks[end] = end_block["hash"].lower()
            _remember_blocks(contract, blocks, end)
            cursor.last_block = end
            cursor.last_block_hash = blocks[end]
            cursor.last_run_at = timezone.now()
            cursor.last_error = ""
            cursor.save()
            result.batches += 1
            result.logs += len(observed)
            result.from_block = result.from_block or start
            result.to_block = end
        took = time.monotonic() - batch_started
        if took > BATCH_SECONDS:  # shorter next time, in proportion; longer again (up to the limits) when quick
            blocks_per_batch = max(1, int((end - start + 1) * BATCH_SECONDS / took))
            events_per_batch = max(BULK_MIN_EVENTS, int(max(len(observed), 1) * BATCH_SECONDS / took))
        elif end < wanted:  # cut by the number of logs: read about as many blocks next time
            blocks_per_batch = max(1, end - start + 1)
        else:
            blocks_per_batch = min(batch_size, blocks_per_batch * 2)
            events_per_batch = min(MAX_EVENTS_PER_BATCH, events_per_batch * 2)
    if safe is not None:
        last = ChainCursor.objects.filter(contract=contract).values_list("last_block", flat=True).first()
        if last is not None:
            metrics.FOLLOWER_LAG.labels(contract=contract.slug).set(max(safe - last, 0))
    if result.batches:
        log.info(
            "chain.synced",
            contract_slug=contract.slug,
            batches=result.batches,
            logs=result.logs,
            from_block=result.from_block,
            to_block=result.to_block,
        )
    return result


SYNC_CLAIM_LEASE = timedelta(seconds=60)  # a longer run meets its own cursor lock, not a second sync
SYNC_BACKOFF_BASE_SECONDS = 5.0
SYNC_BACKOFF_MAX_SECONDS = 300.0


def contract_sync_claim_due(*, lease: timedelta = SYNC_CLAIM_LEASE) -> list[tuple[int, datetime]]:
    """The beat's dispatch: claim the followers due for a run (enabled contracts with an address; a cursor is
    created for a new one), locked with SKIP LOCKED (a running sync holds its cursor) and made not-due until
    the lease ends, in the same transaction. -> [(contract_id, claim)]: one message per contract."""
    contracts = PaymentContract.objects.filter(enabled=True).exclude(address="")
    for contract in contracts.filter(cursor__isnull=True):
        ChainCursor.objects.get_or_create(
            contract=contract, defaults={"last_block": max(contract.deployment_block - 1, 0)}
        )
    now = timezone.now()
    claim = now + lease
    ids = claim_due(
        ChainCursor.objects.filter(contract__in=contracts).filter(
            Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now)
        ),
        column="next_sync_at",
        claim=claim,
        order_by=("pk",),
        of=("self",),
        key="contract_id",
    )
    return [(pk, claim) for pk in ids]


def contract_sync_take(*, contract_id: int, claim: datetime | str) -> bool:
    """A claimed message starts its run only while its claim is the cursor's (compare-and-set): a duplicate
    or stale message is a no-op."""
    return take(
        ChainCursor.objects.filter(contract_id=contract_id),
        column="next_sync_at",
        claim=parse_claim(claim),
        lease=SYNC_CLAIM_LEASE,
    )


def contract_sync_record_success(*, contract_id: int) -> None:
    ChainCursor.objects.filter(contract_id=contract_id).update(next_sync_at=None, sync_errors=0)


def contract_sync_record_error(*, contract_id: int, error: str) -> None:
    """Recorded on the cursor; the next run waits billing.retry.backoff_seconds(failed runs in a row)
    (billing.attempts.count_failure)."""
    count_failure(
        ChainCursor,
        contract_id,
        key="contract_id",
        counter="sync_errors",
        column="next_sync_at",
        base=SYNC_BACKOFF_BASE_SECONDS,
        cap=SYNC_BACKOFF_MAX_SECONDS,
        also={"last_error": mask_url(error)[:2000], "last_run_at": timezone.now()},
    )
