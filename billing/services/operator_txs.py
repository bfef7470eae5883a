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
    MIN_FEE_BUMP_PERCENT,
    SentTx,
    _gas_cap,
    _replacement_fees,
    broadcast,
    find_receipt,
    nonce_in_use,
    prepare_transaction,
    remember_broadcast,
    replace_once,
    reserve_nonce,
    sign_transaction,
)
from billing.models import CryptoConfig, Network, OperatorTransaction, PaymentTransaction, RefundStatus
from billing.services.notices import ops_notice
from billing_project.logging import error_text

log = structlog.get_logger(__name__)

# A `new` row younger than this may still be in its sender's hands; older, the sweep settles it.
NEW_ROW_GRACE_SECONDS = 60
# The statuses whose nonce is taken (a `failed` row never reached a node; a `replaced` one gave its nonce to
# the retry that replaced it). The sweep watches these.
NONCE_HOLDING = (OperatorTransaction.Status.NEW, OperatorTransaction.Status.PENDING, OperatorTransaction.Status.STUCK)
# What a refund's operator transaction says about the payment's refund (PaymentTransaction.refund_status).
REFUND_STATUS = {
    OperatorTransaction.Status.NEW: RefundStatus.IN_FLIGHT,
    OperatorTransaction.Status.PENDING: RefundStatus.IN_FLIGHT,
    OperatorTransaction.Status.MINED: RefundStatus.MINED,
    OperatorTransaction.Status.REVERTED: RefundStatus.FAILED,
    OperatorTransaction.Status.FAILED: RefundStatus.FAILED,
    OperatorTransaction.Status.STUCK: RefundStatus.FAILED,
}


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
    """Nothing was sent (the caller is told at once, so no ops notice)."""
    with transaction.atomic(durable=True):
        row.status, row.error = OperatorTransaction.Status.FAILED, error
        row.save(update_fields=["status", "error", "updated_at"])
        if row.retry_of_id:  # a refused replacement: the stuck one it meant to replace is still out there
            OperatorTransaction.objects.filter(pk=row.retry_of_id, status=OperatorTransaction.Status.REPLACED).update(
                status=OperatorTransaction.Status.STUCK, updated_at=timezone.now()
            )
        _settled(row, notify=False)


def _settled(row: OperatorTransaction, *, notify: bool = True) -> None:
    """After a row changed status, in the transaction that changed it: a refund's payment follows
    (`refund_status`, and the hash on its way), and a refund or withdrawal that reverted, failed in the
    sweep or is stuck at the gas cap is reported to ops once per operator transaction and status."""
    if row.kind == OperatorTransaction.Kind.REFUND and row.payment_id and row.status in REFUND_STATUS:
        fields = {"refund_status": REFUND_STATUS[row.status], "updated_at": timezone.now()}
        if row.status in (OperatorTransaction.Status.PENDING, OperatorTransaction.Status.MINED) and row.tx_hashes:
            fields["refund_tx_hash"] = row.mined_tx_hash or row.tx_hashes[-1]
        PaymentTransaction.objects.filter(pk=row.payment_id).update(**fields)
    failed = (OperatorTransaction.Status.REVERTED, OperatorTransaction.Status.FAILED, OperatorTransaction.Status.STUCK)
    if notify and row.status in failed:
        kind = f"{row.kind}_failed"
        what = "Refund" if row.kind == OperatorTransaction.Kind.REFUND else "Withdrawal"
        how = {
            OperatorTransaction.Status.REVERTED: "reverted on chain",
            OperatorTransaction.Status.FAILED: "was never sent",
            OperatorTransaction.Status.STUCK: "is stuck at the gas cap",
        }[row.status]
        ops_notice(
            kind=kind,
            key=f"{kind}:operator_tx:{row.pk}:{row.status}",
            title=f"{what} {how} (operator transaction {row.pk})",
            body=(row.error or "")[:1000]
            + " A billing admin can retry it (console, or POST /v1/billing/admin/transactions/{id}/refund).",
            data={
                "operator_tx_id": row.pk,
                "status": row.status,
                "payment_id": row.payment_id,
                "network": row.network_id,
                "tx_hash": row.mined_tx_hash or (row.tx_hashes[-1] if row.tx_hashes else ""),
            },
        )
        log.warning("operator_tx.failed", row_id=row.pk, kind=row.kind, status=row.status)


def operator_tx_refund_unmined(*, payment: PaymentTransaction, tx_hash: str, now: datetime | None = None) -> str:
    """A refund log the ledger applied is gone (a reorg deeper than the policy), in the transaction that
    flags its payment for review. If our operator transaction sent it, that row is `pending` again (its
    receipt is no longer on chain): the sweep records it when a version is mined again, re-signs the same
    nonce with a higher fee once it has waited `stuck_tx_seconds`, or marks it failed when the nonce went to
    another transaction, so the payment's `refund_status` follows and ops can retry a failed one. A refund
    sent from outside (no row of ours) has nothing to put back in flight: ops may refund the payment under
    review (billing.services.operator.transaction_refund; the contract refuses a second refund of the same
    order if the first one comes back). Returns pending | outside."""
    now = now or timezone.now()
    row = (
        OperatorTransaction.objects.select_for_update()
        .filter(
            kind=OperatorTransaction.Kind.REFUND,
            payment_id=payment.pk,
            status=OperatorTransaction.Status.MINED,
            mined_tx_hash=tx_hash.lower(),
        )
        .first()
    )
    if row is None:  # not ours: the payment keeps the gone refund's hash, and nothing of ours is in flight
        return "outside"
    row.status = OperatorTransaction.Status.PENDING
    row.error = f"Mined in block {row.block_number} ({row.mined_tx_hash}), then removed by a reorg."
    row.mined_tx_hash, row.block_number, row.mined_at = "", None, None
    row.gas_used = row.effective_gas_price = row.fee = None
    row.last_sent_at = now  # counts as just sent: a version may be mined again before any replacement
    row.save()
    _settled(row, notify=False)
    log.warning("operator_tx.unmined", row_id=row.pk, kind=row.kind, payment_id=payment.pk, tx_hash=tx_hash)
    return "pending"


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
        _settled(row)


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
    retry_of: OperatorTransaction | None = None,
) -> OperatorTransaction:
    """Step 1, in the caller's transaction: the row, `new`. The caller commits it, then operator_tx_broadcast.
    `retry_of`: the failed, reverted or stuck row this one retries (a stuck one is replaced: same nonce)."""
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
        retry_of=retry_of,
    )
    _settled(row)
    return row


def operator_tx_broadcast(*, row: OperatorTransaction, client) -> OperatorTransaction:
    """Steps 2 and 3 for a committed `new` row, outside any transaction (each step commits on its own).

    Returns the row `pending`, or still `new` when the broadcast's outcome is unknown (a timeout: the sweep
    settles it). Raises OperatorTxRefused (the row `failed`) when nothing was sent."""
    if row.retry_of_id and row.retry_of.status == OperatorTransaction.Status.STUCK:
        return _broadcast_replacement(row=row, client=client)
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


def _broadcast_replacement(*, row: OperatorTransaction, client) -> OperatorTransaction:
    """A retry of a stuck transaction: the same nonce, fees at least 10 % (fee_bump_percent) above the stuck
    version and within the gas cap as it is now (an admin raised it, or the network calmed down). The stuck
    row becomes `replaced`; this row carries every version's hash, so whichever lands is recorded here."""
    config = CryptoConfig.load()
    error = ""
    with transaction.atomic(durable=True):
        stuck = OperatorTransaction.objects.select_for_update().get(pk=row.retry_of_id)
        percent = max(MIN_FEE_BUMP_PERCENT, int(config.fee_bump_percent))
        fees = None
        if stuck.status != OperatorTransaction.Status.STUCK:
            error = f"Operator transaction {stuck.pk} is {stuck.status} now, no longer stuck: nothing to replace."
        else:
            fees = _replacement_fees(client, _sent(stuck), percent=percent, cap=_gas_cap(config))
            if fees is None:
                error = (
                    f"The gas cap ({config.gas_cap_wei} wei) leaves no room for a fee {percent} % above the stuck "
                    f"version ({stuck.max_fee_per_gas} wei): raise CryptoConfig.gas_cap_wei, then retry."
                )
        if error:
            row.status, row.error = OperatorTransaction.Status.FAILED, error
            row.save(update_fields=["status", "error", "updated_at"])
            _settled(row, notify=False)
        else:
            stuck.status = OperatorTransaction.Status.REPLACED
            stuck.save(update_fields=["status", "updated_at"])
            signed, raw = sign_transaction(
                replace(
                    _sent(stuck),
                    max_fee_per_gas=fees.max_fee_per_gas,
                    max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
                )
            )
            row.sender, row.nonce, row.gas = signed.sender, signed.nonce, signed.gas
            row.max_fee_per_gas = signed.max_fee_per_gas
            row.max_priority_fee_per_gas = signed.max_priority_fee_per_gas
            row.tx_hashes = list(signed.hashes)
            row.save()
    if error:
        raise OperatorTxRefused(row, error)
    try:
        broadcast(client, raw, signed.tx_hash)
    except JsonRpcError as exc:
        if "nonce too low" in str(exc).lower():
            # A version of the stuck one was mined meanwhile: this row holds its hash, the sweep records it.
            _mark_pending(row, signed)
            return row
        _mark_failed(row, _error_text(exc))
        raise OperatorTxRefused(row, row.error) from exc
    except Exception as exc:  # unknown outcome: the sweep settles the `new` row
        row.error = _error_text(exc)
        OperatorTransaction.objects.filter(pk=row.pk).update(error=row.error, updated_at=timezone.now())
        return row
    _mark_pending(row, signed)
    log.info("operator_tx.replacement_sent", row_id=row.pk, replaces=row.retry_of_id, tx_hash=signed.tx_hash)
    return row


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
        _settled(row)
        return "failed"
    if find_receipt(client, tuple(row.tx_hashes)) is not None:
        return ""  # the receipt branch records it
    if client.call("eth_getTransactionByHash", [row.tx_hashes[-1]]) is None:
        mined_count = int(client.call("eth_getTransactionCount", [row.sender, "latest"]), 16)
        if mined_count > row.nonce:
            row.status = OperatorTransaction.Status.FAILED
            row.error = f"Never broadcast, and nonce {row.nonce} was used by another transaction."
            row.save(update_fields=["status", "error", "updated_at"])
            _settled(row)
            return "failed"
        signed, raw = sign_transaction(replace(_sent(row), hashes=()))
        if signed.tx_hash.lower() != row.tx_hashes[-1].lower():
            row.status = OperatorTransaction.Status.FAILED
            row.error = "Never broadcast, and the operator key changed: cannot sign the same transaction again."
            row.save(update_fields=["status", "error", "updated_at"])
            _settled(row)
            return "failed"
        broadcast(client, raw, signed.tx_hash)
        remember_broadcast(signed)
    row.status = OperatorTransaction.Status.PENDING
    row.last_sent_at = now
    row.save(update_fields=["status", "last_sent_at", "updated_at"])
    _settled(row)
    log.info("operator_tx.recovered", row_id=row.pk, kind=row.kind, tx_hash=row.tx_hashes[-1])
    return "recovered"


def operator_tx_watch(*, row_id: int, client=None, now: datetime | None = None) -> str:
    """One look at an unsettled operator transaction:
    mined | reverted | replaced | waiting | stuck | recovered | failed | skipped."""
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
            return _record_mined(row, receipt, now)
        return _replace_or_wait(row, client, now)


def _record_mined(row: OperatorTransaction, receipt: dict, now: datetime) -> str:
    """A version of the row is mined: which one, where, its fee; reverted if the call failed. -> mined | reverted"""
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
    if not ok:
        row.error = f"Reverted on chain in block {row.block_number} ({row.mined_tx_hash})."
    row.save()
    _settled(row)
    log.info(
        "operator_tx.mined",
        tx_hash=row.mined_tx_hash,
        kind=row.kind,
        status=row.status,
        versions=len(row.tx_hashes),
    )
    return "mined" if ok else "reverted"


def _replace_or_wait(row: OperatorTransaction, client, now: datetime) -> str:
    """Not mined yet: after `stuck_tx_seconds`, send it again with a bumped fee (same nonce), stuck at the gas
    cap, or failed when its nonce went to another transaction. -> waiting | replaced | stuck | failed"""
    config = CryptoConfig.load()
    if row.last_sent_at and now - row.last_sent_at < timedelta(seconds=config.stuck_tx_seconds):
        return "waiting"
    try:
        current = replace_once(client=client, sent=_sent(row), fee_bump_percent=config.fee_bump_percent, config=config)
    except JsonRpcError as exc:
        if "nonce too low" not in str(exc).lower() or find_receipt(client, tuple(row.tx_hashes)) is not None:
            raise  # a version was mined meanwhile: the next look records it
        # The nonce went to another transaction and none of our versions is on chain (a reorg dropped
        # the one that was mined): it can never land now. Failed, so ops can retry it.
        row.status = OperatorTransaction.Status.FAILED
        row.error = f"Nonce {row.nonce} was used by another transaction; no version of this one is on chain."
        row.save()
        _settled(row)
        return "failed"
    replaced = len(current.hashes) > len(row.tx_hashes)
    capped = not replaced and (current.max_fee_per_gas, current.max_priority_fee_per_gas) == (
        row.max_fee_per_gas,
        row.max_priority_fee_per_gas,
    )
    row.max_fee_per_gas = current.max_fee_per_gas
    row.max_priority_fee_per_gas = current.max_priority_fee_per_gas
    row.tx_hashes = list(current.hashes)
    row.last_sent_at = now
    was = row.status
    if replaced:
        row.replacements += 1
        row.status = OperatorTransaction.Status.PENDING
    elif capped:
        row.status = OperatorTransaction.Status.STUCK
        row.error = (
            f"Pending for over {config.stuck_tx_seconds} s at {row.max_fee_per_gas} wei per gas, and the gas cap "
            f"({config.gas_cap_wei} wei) leaves no room for a higher fee."
        )
    row.save()
    if row.status != was:
        _settled(row)
    if capped:
        return "stuck"
    return "replaced" if replaced else "waiting"


def operator_txs_pending_ids(*, limit: int = 200, now: datetime | None = None) -> list[int]:
    """Rows the sweep looks at: pending and stuck ones, and `new` ones their sender left behind (older than
    the grace)."""
    left_behind = (now or timezone.now()) - timedelta(seconds=NEW_ROW_GRACE_SECONDS)
    return list(
        OperatorTransaction.objects.filter(
            Q(status__in=[OperatorTransaction.Status.PENDING, OperatorTransaction.Status.STUCK])
            | Q(status=OperatorTransaction.Status.NEW, created_at__lte=left_behind)
        )
        .order_by("last_sent_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
