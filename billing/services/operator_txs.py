"""Operator transactions (refunds, withdrawals) as rows: written before the broadcast, watched by a beat
sweep that records the receipt, or re-signs the same nonce with a higher fee once it has been pending
for `CryptoConfig.stuck_tx_seconds`. Whichever version lands is the one recorded; the nonce is used once."""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.db import transaction
from django.utils import timezone

from billing.chain.sender import SentTx, find_receipt, replace_once, send_transaction
from billing.models import CryptoConfig, Network, OperatorTransaction, PaymentTransaction
from billing_project.logging import mask_url

log = structlog.get_logger(__name__)


def _sent(row: OperatorTransaction) -> SentTx:
    return SentTx(
        tx_hash=row.tx_hashes[-1],
        nonce=row.nonce,
        max_fee_per_gas=row.max_fee_per_gas,
        max_priority_fee_per_gas=row.max_priority_fee_per_gas,
        sender=row.sender,
        to=row.to,
        data=row.data,
        value=row.value,
        gas=row.gas,
        chain_id=row.chain_id,
        hashes=tuple(row.tx_hashes),
    )


def operator_tx_send(
    *,
    kind: str,
    network: Network,
    to: str,
    data: str,
    client,
    requested_by: str,
    reason: str = "",
    value: int = 0,
    payment: PaymentTransaction | None = None,
) -> OperatorTransaction:
    """Write the row, broadcast, record what was sent. A refused broadcast leaves the row `failed`."""
    row = OperatorTransaction.objects.create(
        kind=kind,
        network=network,
        chain_id=network.chain_id,
        to=to,
        data=data,
        value=value,
        payment=payment,
        requested_by=requested_by,
        reason=reason[:500],
    )
    try:
        sent = send_transaction(client=client, to=to, data=data, value=value)
    except Exception as exc:
        OperatorTransaction.objects.filter(pk=row.pk).update(
            status=OperatorTransaction.Status.FAILED, error=mask_url(str(exc))[:2000]
        )
        raise
    row.status = OperatorTransaction.Status.PENDING
    row.sender = sent.sender
    row.nonce = sent.nonce
    row.gas = sent.gas
    row.max_fee_per_gas = sent.max_fee_per_gas
    row.max_priority_fee_per_gas = sent.max_priority_fee_per_gas
    row.tx_hashes = list(sent.hashes or (sent.tx_hash,))
    row.last_sent_at = timezone.now()
    row.save()
    return row


def operator_tx_watch(*, row_id: int, client=None, now: datetime | None = None) -> str:
    """One look at a pending operator transaction: mined | reverted | replaced | waiting | skipped."""
    from billing.chain.rpc import ChainClient

    now = now or timezone.now()
    with transaction.atomic():
        row = (
            OperatorTransaction.objects.select_for_update(skip_locked=True)
            .select_related("network")
            .filter(pk=row_id, status=OperatorTransaction.Status.PENDING)
            .first()
        )
        if row is None:
            return "skipped"
        client = client or ChainClient.for_network(row.network)
        receipt = find_receipt(client, tuple(row.tx_hashes))
        if receipt is not None:
            ok = int(receipt["status"], 16) == 1
            row.status = OperatorTransaction.Status.MINED if ok else OperatorTransaction.Status.REVERTED
            row.mined_tx_hash = receipt["transactionHash"].lower()
            row.block_number = int(receipt["blockNumber"], 16)
            row.mined_at = now
            gas_used, gas_price = receipt.get("gasUsed"), receipt.get("effectiveGasPrice")
            if gas_used and gas_price:
                row.gas_used = int(gas_used, 16)
                row.effective_gas_price = int(gas_price, 16)
                row.fee = row.gas_used * row.effective_gas_price
            row.save()
            log.info(
                "operator_tx.mined",
                tx_hash=row.mined_tx_hash,
                kind=row.kind,
                status=row.status,
                versions=len(row.tx_hashes),
            )
            return "mined" if ok else "reverted"
        config = CryptoConfig.load()
        if row.last_sent_at and now - row.last_sent_at < timedelta(seconds=config.stuck_tx_seconds):
            return "waiting"
        current = replace_once(client=client, sent=_sent(row), fee_bump_percent=config.fee_bump_percent, config=config)
        row.max_fee_per_gas = current.max_fee_per_gas
        row.max_priority_fee_per_gas = current.max_priority_fee_per_gas
        replaced = len(current.hashes) > len(row.tx_hashes)
        row.tx_hashes = list(current.hashes)
        row.last_sent_at = now
        if replaced:
            row.replacements += 1
        row.save()
        return "replaced" if replaced else "waiting"


def operator_txs_pending_ids(*, limit: int = 200) -> list[int]:
    return list(
        OperatorTransaction.objects.filter(status=OperatorTransaction.Status.PENDING)
        .order_by("last_sent_at")
        .values_list("pk", flat=True)[:limit]
    )
