"""Operator transactions (refunds, withdrawals) as rows, committed before anything reaches the chain, and
watched by a beat sweep that records the receipt, or re-signs the same nonce with a higher fee once it has
been pending for `CryptoConfig.stuck_tx_seconds`. Whichever version lands is the one recorded; the nonce is
used once.

Sending is three short transactions, none of them around a network call that can hang:
1. the row (`new`) is committed;
2. under the per-address nonce lock, the nonce is chosen, the transaction signed, and nonce, fees and hash
   written to the row, committed (the lock goes with it: a concurrent sender sees the nonce in the rows);
3. the broadcast, then the row becomes `pending`. A node that refuses it (a JSON-RPC error) makes it
   `failed` (nothing was sent, the nonce is free again); a timeout or a crash leaves it `new` with its hash,
   and the sweep finds out whether the node has it, broadcasts the same signed bytes again if not, and
   settles it like any other.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import structlog
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from billing.chain.rpc import JsonRpcError
from billing.chain.sender import (
    SentTx,
    broadcast,
    find_receipt,
    nonce_in_use,
    prepare_transaction,
    remember_broadcast,
    replace_once,
    reserve_nonce,
    sign_transaction,
)
from billing.models import CryptoConfig, Network, OperatorTransaction, PaymentTransaction
from billing_project.logging import error_text

log = structlog.get_logger(__name__)

# A `new` row younger than this may still be in its sender's hands; older, the sweep settles it.
NEW_ROW_GRACE_SECONDS = 60
# The statuses whose nonce is taken (a `failed` row never reached a node).
NONCE_HOLDING = (OperatorTransaction.Status.NEW, OperatorTransaction.Status.PENDING)


class OperatorTxRefused(Exception):
    """Nothing was sent: the row is `failed` with the reason (no secret in it)."""

    def __init__(self, row: OperatorTransaction, message: str):
        super().__init__(message)
        self.row = row


def _sent(row: OperatorTransaction) -> SentTx:
    return SentTx(
        tx_hash=row.tx_hashes[-1] if row.tx_hashes else "",
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


def _error_text(exc: Exception) -> str:
    return error_text(exc)


def _mark_failed(row: OperatorTransaction, error: str) -> None:
    with transaction.atomic(durable=True):
        OperatorTransaction.objects.filter(pk=row.pk).update(
            status=OperatorTransaction.Status.FAILED, error=error, updated_at=timezone.now()
        )
    row.status, row.error = OperatorTransaction.Status.FAILED, error


def _nonce_floor(sent: SentTx, *, exclude_pk: int) -> int:
    """One past the highest nonce our own rows hold for this sender (0 when none)."""
    top = (
        OperatorTransaction.objects.filter(
            chain_id=sent.chain_id, sender__iexact=sent.sender, status__in=NONCE_HOLDING, nonce__isnull=False
        )
        .exclude(pk=exclude_pk)
        .aggregate(top=Max("nonce"))["top"]
    )
    return 0 if top is None else top + 1


def _sign_into_row(row: OperatorTransaction, client, prepared: SentTx, *, floor: int = 0) -> tuple[SentTx, str]:
    """Step 2: choose the nonce under the lock, sign, record nonce/fees/hash on the row, commit."""
    with transaction.atomic(durable=True):
        nonce = reserve_nonce(client, prepared, floor=max(floor, _nonce_floor(prepared, exclude_pk=row.pk)))
        signed, raw = sign_transaction(replace(prepared, nonce=nonce, hashes=()))
        row.sender = signed.sender
        row.nonce = nonce
        row.gas = signed.gas
        row.max_fee_per_gas = signed.max_fee_per_gas
        row.max_priority_fee_per_gas = signed.max_priority_fee_per_gas
        row.tx_hashes = [signed.tx_hash]
        row.save(
            update_fields=[
                "sender",
                "nonce",
                "gas",
                "max_fee_per_gas",
                "max_priority_fee_per_gas",
                "tx_hashes",
                "updated_at",
            ]
        )
    return signed, raw


def _mark_pending(row: OperatorTransaction, signed: SentTx, *, now: datetime | None = None) -> None:
    remember_broadcast(signed)
    with transaction.atomic(durable=True):
        row.status = OperatorTransaction.Status.PENDING
        row.last_sent_at = now or timezone.now()
        row.save(update_fields=["status", "last_sent_at", "updated_at"])
        _after_broadcast(row)


def _after_broadcast(row: OperatorTransaction) -> None:
    """A refund's payment learns the hash of the refund on its way (the ledger still follows the chain)."""
    if row.kind == OperatorTransaction.Kind.REFUND and row.payment_id and row.tx_hashes:
        PaymentTransaction.objects.filter(pk=row.payment_id).update(
            refund_tx_hash=row.tx_hashes[-1], updated_at=timezone.now()
        )


def operator_tx_create(
    *,
    kind: str,
    network: Network,
    to: str,
    data: str,
    requested_by: str,
    reason: str = "",
    value: int = 0,
    payment: PaymentTransaction | None = None,
) -> OperatorTransaction:
    """Step 1, in the caller's transaction: the row, `new`. The caller commits it, then operator_tx_broadcast."""
    return OperatorTransaction.objects.create(
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


def operator_tx_broadcast(*, row: OperatorTransaction, client) -> OperatorTransaction:
    """Steps 2 and 3 for a committed `new` row, outside any transaction (each step commits on its own).

    Returns the row `pending`, or still `new` when the broadcast's outcome is unknown (a timeout: the sweep
    settles it). Raises OperatorTxRefused (the row `failed`) when nothing was sent."""
    try:
        prepared = prepare_transaction(client=client, to=row.to, data=row.data, value=int(row.value))
    except Exception as exc:  # fees above the cap, a call that would revert, RPC down: nothing signed
        _mark_failed(row, _error_text(exc))
        raise OperatorTxRefused(row, row.error) from exc
    floor = 0
    for _attempt in range(3):
        signed, raw = _sign_into_row(row, client, prepared, floor=floor)
        try:
            broadcast(client, raw, signed.tx_hash)
        except JsonRpcError as exc:  # the node answered: refused
            if nonce_in_use(exc):  # someone else's transaction holds it: sign the next one
                log.warning("operator_tx.nonce_in_use", row_id=row.pk, nonce=signed.nonce, error=str(exc))
                floor = signed.nonce + 1
                continue
            _mark_failed(row, _error_text(exc))
            raise OperatorTxRefused(row, row.error) from exc
        except Exception as exc:  # timeout, dropped connection: the node may have it
            log.warning("operator_tx.broadcast_unknown", row_id=row.pk, tx_hash=signed.tx_hash, error=_error_text(exc))
            with transaction.atomic(durable=True):
                OperatorTransaction.objects.filter(pk=row.pk).update(error=_error_text(exc), updated_at=timezone.now())
            row.error = _error_text(exc)
            return row
        _mark_pending(row, signed)
        log.info("operator_tx.sent", row_id=row.pk, kind=row.kind, tx_hash=signed.tx_hash, nonce=signed.nonce)
        return row
    _mark_failed(row, f"No free nonce for {prepared.sender} on chain {prepared.chain_id} after 3 tries.")
    raise OperatorTxRefused(row, row.error)


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
    """Commit the row, then sign and broadcast it (operator_tx_broadcast). Must run outside a transaction:
    `transaction.atomic(durable=True)` refuses otherwise, since a row that a caller's rollback could take
    back after the broadcast is what this design exists to prevent."""
    with transaction.atomic(durable=True):
        row = operator_tx_create(
            kind=kind,
            network=network,
            to=to,
            data=data,
            requested_by=requested_by,
            reason=reason,
            value=value,
            payment=payment,
        )
    return operator_tx_broadcast(row=row, client=client)


def _settle_new(row: OperatorTransaction, client, now: datetime) -> str:
    """A `new` row the sender left behind (crash, timeout). Without a hash nothing was ever signed: failed.
    With one: mined already, known to the node (pending), or never received (the same signed bytes go out
    again, unless its nonce went to another transaction: failed)."""
    if not row.tx_hashes:
        row.status = OperatorTransaction.Status.FAILED
        row.error = "The sender stopped before signing: nothing was sent."
        row.save(update_fields=["status", "error", "updated_at"])
        return "failed"
    if find_receipt(client, tuple(row.tx_hashes)) is not None:
        return ""  # the receipt branch records it
    if client.call("eth_getTransactionByHash", [row.tx_hashes[-1]]) is None:
        mined_count = int(client.call("eth_getTransactionCount", [row.sender, "latest"]), 16)
        if mined_count > row.nonce:
            row.status = OperatorTransaction.Status.FAILED
            row.error = f"Never broadcast, and nonce {row.nonce} was used by another transaction."
            row.save(update_fields=["status", "error", "updated_at"])
            return "failed"
        signed, raw = sign_transaction(replace(_sent(row), hashes=()))
        if signed.tx_hash.lower() != row.tx_hashes[-1].lower():
            row.status = OperatorTransaction.Status.FAILED
            row.error = "Never broadcast, and the operator key changed: cannot sign the same transaction again."
            row.save(update_fields=["status", "error", "updated_at"])
            return "failed"
        broadcast(client, raw, signed.tx_hash)
        remember_broadcast(signed)
    row.status = OperatorTransaction.Status.PENDING
    row.last_sent_at = now
    row.save(update_fields=["status", "last_sent_at", "updated_at"])
    _after_broadcast(row)
    log.info("operator_tx.recovered", row_id=row.pk, kind=row.kind, tx_hash=row.tx_hashes[-1])
    return "recovered"


def operator_tx_watch(*, row_id: int, client=None, now: datetime | None = None) -> str:
    """One look at a pending operator transaction: mined | reverted | replaced | waiting | skipped."""
    from billing.chain.rpc import ChainClient

    now = now or timezone.now()
    with transaction.atomic():
        row = (
            OperatorTransaction.objects.select_for_update(skip_locked=True)
            .select_related("network")
            .filter(pk=row_id, status__in=NONCE_HOLDING)
            .first()
        )
        if row is None:
            return "skipped"
        if row.status == OperatorTransaction.Status.NEW and now - row.created_at < timedelta(
            seconds=NEW_ROW_GRACE_SECONDS
        ):
            return "skipped"  # its sender may still be at it
        client = client or ChainClient.for_network(row.network)
        if row.status == OperatorTransaction.Status.NEW:
            settled = _settle_new(row, client, now)
            if settled:
                return settled
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


def operator_txs_pending_ids(*, limit: int = 200, now: datetime | None = None) -> list[int]:
    """Rows the sweep looks at: pending ones, and `new` ones their sender left behind (older than the grace)."""
    left_behind = (now or timezone.now()) - timedelta(seconds=NEW_ROW_GRACE_SECONDS)
    return list(
        OperatorTransaction.objects.filter(
            Q(status=OperatorTransaction.Status.PENDING)
            | Q(status=OperatorTransaction.Status.NEW, created_at__lte=left_behind)
        )
        .order_by("last_sent_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
