"""The chain follower: read a contract's logs from its cursor up to head minus the network's depth,
roll back what a reorg removed, and apply every payment, refund, payout and stray ERC-20 transfer
through the same services the webhook uses. Each batch is one database transaction that holds the
cursor row (`select_for_update(skip_locked=True)`): the cursor and the ledger move together, two
workers never scan the same contract, and a worker killed between batches loses nothing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import structlog
from django.db import transaction
from django.utils import timezone
from eth_utils import to_checksum_address

from billing.chain.abi import decode_log, event_topics
from billing.models import ChainBlock, ChainCursor, ChainEvent, PaymentContract, PaymentTransaction, Token, TxStatus
from billing.services.ledger import transaction_set_status
from billing.services.payments import (
    GasFacts,
    ObservedLog,
    payment_observe_paid,
    payment_observe_refunded,
    payment_observe_transfer,
    payment_observe_withdrawn,
)

log = structlog.get_logger(__name__)
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
BLOCKS_KEPT = 5000


@dataclass
class SyncResult:
    contract_slug: str
    batches: int = 0
    logs: int = 0
    from_block: int | None = None
    to_block: int | None = None
    reorgs: int = 0
    busy: bool = False


def _int(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def observed_from_raw(chain_id: int, abi: list, raw: dict) -> ObservedLog | None:
    decoded = decode_log(abi, raw)
    if decoded is None:
        return None
    name, args = decoded
    return ObservedLog(
        name=name,
        chain_id=chain_id,
        address=to_checksum_address(raw["address"]),
        tx_hash=raw["transactionHash"].lower(),
        log_index=_int(raw["logIndex"]),
        block_number=_int(raw["blockNumber"]),
        block_hash=raw["blockHash"].lower(),
        args=args,
    )


def _pad_address(address: str) -> str:
    return "0x" + "0" * 24 + address.lower()[2:]


def _find_fork(contract: PaymentContract, client) -> int:
    """Highest remembered block whose hash the chain still has (0 when none matches)."""
    for seen in ChainBlock.objects.filter(contract=contract).order_by("-number")[:500]:
        block = client.get_block(seen.number)
        if block is not None and block["hash"].lower() == seen.hash:
            return seen.number
    return max(contract.deployment_block - 1, 0)


def _rollback(contract: PaymentContract, cursor: ChainCursor, client) -> int:
    fork = _find_fork(contract, client)
    removed = ChainEvent.objects.filter(contract=contract, block_number__gt=fork, removed=False)
    tx_ids = set(removed.exclude(transaction=None).values_list("transaction_id", flat=True))
    removed.update(removed=True)
    for tx in PaymentTransaction.objects.filter(
        pk__in=tx_ids, status__in=[TxStatus.CONFIRMED, TxStatus.UNMATCHED], block_number__gt=fork
    ):
        transaction_set_status(
            tx=tx,
            status=TxStatus.NEEDS_REVIEW,
            actor="chain:follower",
            reason=f"reorg deeper than the confirmation depth removed block {tx.block_number}",
            details={"fork_block": fork},
        )
    ChainBlock.objects.filter(contract=contract, number__gt=fork).delete()
    log.warning(
        "chain.reorg",
        contract_slug=contract.slug,
        fork_block=fork,
        from_block=cursor.last_block,
        transactions=len(tx_ids),
    )
    cursor.last_block = fork
    seen = ChainBlock.objects.filter(contract=contract, number=fork).first()
    cursor.last_block_hash = seen.hash if seen else ""
    cursor.save(update_fields=["last_block", "last_block_hash", "updated_at"])
    return fork


def _receipts_by_tx(client, blocks: set[int]) -> dict[str, dict]:
    receipts: dict[str, dict] = {}
    for number in sorted(blocks):
        for receipt in client.get_block_receipts(number):
            receipts[receipt["transactionHash"].lower()] = receipt
    return receipts


def _apply(contract: PaymentContract, observed: list[ObservedLog], receipts: dict[str, dict]) -> None:
    paid_txs = {o.tx_hash for o in observed if o.name == "Paid"}
    for item in sorted(observed, key=lambda o: (o.block_number, o.log_index)):
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
                continue  # part of a contract call (a payment or a refund), not a stray transfer
            payment_observe_transfer(contract=contract, observed=item, gas=gas, source="chain:follower")


def contract_sync(*, contract_id: int, client=None, max_batches: int = 20, batch_size: int | None = None) -> SyncResult:
    from billing.chain.rpc import ChainClient
    from billing.models import CryptoConfig

    contract = PaymentContract.objects.select_related("network").get(pk=contract_id)
    result = SyncResult(contract_slug=contract.slug)
    if not contract.enabled or not contract.address:
        return result
    ChainCursor.objects.get_or_create(contract=contract, defaults={"last_block": max(contract.deployment_block - 1, 0)})
    client = client or ChainClient.for_network(contract.network, contract=contract)
    batch_size = batch_size or CryptoConfig.load().get_logs_max_range
    depth = contract.network.confirmation_depth
    chain_id = contract.network.chain_id
    token_addresses = list(
        Token.objects.filter(network=contract.network).exclude(address="").values_list("address", flat=True)
    )
    topics = event_topics(contract.abi, ("Paid", "Refunded", "Withdrawn"))

    for _ in range(max_batches):
        with transaction.atomic():
            cursor = ChainCursor.objects.select_for_update(skip_locked=True).filter(contract=contract).first()
            if cursor is None:
                result.busy = True
                return result
            if cursor.last_block_hash:
                block = client.get_block(cursor.last_block)
                if block is None or block["hash"].lower() != cursor.last_block_hash:
                    _rollback(contract, cursor, client)
                    result.reorgs += 1
                    continue
            head = client.block_number()
            safe = head - depth
            if safe <= cursor.last_block:
                cursor.last_run_at = timezone.now()
                cursor.last_error = ""
                cursor.save(update_fields=["last_run_at", "last_error", "updated_at"])
                break
            start = cursor.last_block + 1
            end = min(safe, start + batch_size - 1)
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
            observed = [o for o in (observed_from_raw(chain_id, contract.abi, r) for r in raw) if o is not None]
            receipt_blocks = {o.block_number for o in observed if o.name in ("Paid", "Transfer")}
            receipts = _receipts_by_tx(client, receipt_blocks)
            _apply(contract, observed, receipts)

            end_block = client.get_block(end)
            if end_block is None:
                raise RuntimeError(f"block {end} vanished while syncing {contract.slug}")
            blocks: dict[int, str] = defaultdict(str)
            for o in observed:
                blocks[o.block_number] = o.block_hash
            blocks[end] = end_block["hash"].lower()
            ChainBlock.objects.bulk_create(
                [ChainBlock(contract=contract, number=n, hash=h) for n, h in blocks.items()],
                update_conflicts=True,
                unique_fields=["contract", "number"],
                update_fields=["hash"],
            )
            ChainBlock.objects.filter(contract=contract, number__lt=end - BLOCKS_KEPT).delete()
            cursor.last_block = end
            cursor.last_block_hash = blocks[end]
            cursor.last_run_at = timezone.now()
            cursor.last_error = ""
            cursor.save()
            result.batches += 1
            result.logs += len(observed)
            result.from_block = result.from_block or start
            result.to_block = end
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


def contract_sync_record_error(*, contract_id: int, error: str) -> None:
    ChainCursor.objects.filter(contract_id=contract_id).update(last_error=error[:2000], last_run_at=timezone.now())
