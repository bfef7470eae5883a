"""Contract webhooks from an indexer (api.md "Webhook signature"). The order matters:

1. the signature, over the raw bytes (nothing is stored for a bad one, only a counter);
2. the body's shape (400);
3. the raw payload, stored once: the delivery id and (chain_id, tx_hash, log_index) are unique in the
   database, so a repeat is a `duplicate` however many arrive at once;
4. the method against the contract's ABI (422);
5. processing. The webhook is a hint and the chain is the truth: the receipt and the log are read from
   the chain, at the network's depth, before the ledger moves. If the chain cannot answer yet, the
   stored event is retried (202 `accepted`). A leaked secret alone therefore cannot mint anything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from eth_utils import is_address

from billing.adapters.registry import get_adapter
from billing.models import InboundEvent, PaymentContract, PaymentTransaction
from billing.services.chain_sync import observed_from_raw
from billing.services.payments import (
    GasFacts,
    payment_mark_failed,
    payment_observe_paid,
    payment_observe_refunded,
)

log = structlog.get_logger(__name__)
EVENT_TYPES = ("payment.confirmed", "payment.failed", "payment.refunded")
MAX_ATTEMPTS = 40


@dataclass(frozen=True)
class WebhookResult:
    status_code: int
    body: dict
    event_id: int | None = None


def _error(status: int, code: str, message: str, fields: dict | None = None) -> WebhookResult:
    return WebhookResult(status, {"error": {"code": code, "message": message, "fields": fields or {}}})


def _is_hash(value) -> bool:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def _validate(body) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not isinstance(body, dict):
        return {"non_field_errors": "The body must be a JSON object."}
    if not isinstance(body.get("id"), str) or not 0 < len(body["id"]) <= 128:
        errors["id"] = "A delivery id (1-128 characters) is required."
    if body.get("type") not in EVENT_TYPES:
        errors["type"] = f"One of {', '.join(EVENT_TYPES)}."
    if not isinstance(body.get("chain_id"), int) or isinstance(body.get("chain_id"), bool):
        errors["chain_id"] = "An integer chain id is required."
    if not _is_hash(body.get("tx_hash")):
        errors["tx_hash"] = "0x followed by 64 hex digits."
    if not _is_hash(body.get("order_id")):
        errors["order_id"] = "The bytes32 order id of the checkout, 0x-hex."
    if not isinstance(body.get("method"), str) or not body.get("method"):
        errors["method"] = "The ABI function that was called."
    if body.get("log_index") is not None and (not isinstance(body["log_index"], int) or body["log_index"] < 0):
        errors["log_index"] = "A non-negative integer."
    if body.get("contract_address") is not None and not is_address(body.get("contract_address")):
        errors["contract_address"] = "An EVM address."
    if body.get("amount") is not None and not (isinstance(body["amount"], str) and body["amount"].isdigit()):
        errors["amount"] = "An integer string in the token's smallest unit."
    return errors


def webhook_receive(*, contract_slug: str, raw_body: bytes, signature_header: str) -> WebhookResult:
    from billing import metrics

    contract = PaymentContract.objects.select_related("network").filter(slug=contract_slug).first()
    if contract is None:
        return _error(404, "unknown_contract", f"No contract '{contract_slug}'.")
    grace_until = (
        contract.secret_rotated_at + settings.BILLING_WEBHOOK_SECRET_GRACE if contract.secret_rotated_at else None
    )
    verification = get_adapter("evm").verify_webhook(
        raw_body=raw_body,
        signature_header=signature_header,
        secret=contract.webhook_secret,
        previous_secret=contract.previous_webhook_secret,
        previous_valid_until=grace_until,
        now=timezone.now(),
    )
    if not contract.webhook_secret or not verification.ok:
        metrics.WEBHOOK_REJECTED.labels(contract=contract.slug, reason="signature").inc()
        log.warning("webhook.bad_signature", contract_slug=contract.slug, reason=verification.reason)
        return _error(401, "invalid_signature", verification.reason or "No webhook secret is configured.")
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "malformed", "The body is not JSON.")
    errors = _validate(body)
    if errors:
        return _error(400, "malformed", "The webhook body is not valid.", errors)
    if body["chain_id"] != contract.network.chain_id:
        return _error(400, "malformed", "chain_id is not the contract's chain.", {"chain_id": "Wrong chain."})
    if body.get("contract_address") and body["contract_address"].lower() != contract.address.lower():
        return _error(400, "malformed", "contract_address is not this contract.", {"contract_address": "Wrong."})

    try:
        with transaction.atomic():
            event = InboundEvent.objects.create(
                contract=contract,
                delivery_id=body["id"],
                event_type=body["type"],
                chain_id=body["chain_id"],
                tx_hash=body["tx_hash"].lower(),
                log_index=body.get("log_index"),
                raw_body=raw_body.decode("utf-8", errors="replace"),
                payload=body,
                signature_header=signature_header[:512],
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:
        metrics.WEBHOOK_RECEIVED.labels(contract=contract.slug, outcome="duplicate").inc()
        return WebhookResult(200, {"status": "duplicate"})

    if not contract.has_method(body["method"]):
        InboundEvent.objects.filter(pk=event.pk).update(
            status=InboundEvent.Status.FAILED, error=f"method '{body['method']}' is not in the contract's ABI"
        )
        metrics.WEBHOOK_RECEIVED.labels(contract=contract.slug, outcome="bad_method").inc()
        return _error(
            422,
            "unknown_method",
            f"'{body['method']}' is not a function in the contract's ABI.",
            {"method": "Not in the ABI."},
        )

    outcome = "accepted"
    try:
        outcome = inbound_event_process(event_id=event.pk)
    except Exception as exc:  # the event is stored; the sweep retries it
        log.warning("webhook.process_deferred", contract_slug=contract.slug, error=f"{type(exc).__name__}: {exc}")
    metrics.WEBHOOK_RECEIVED.labels(contract=contract.slug, outcome=outcome).inc()
    if outcome == "processed":
        return WebhookResult(200, {"status": "processed"}, event.pk)
    if outcome == "retry":

        def kick() -> None:
            from billing.tasks import inbound_event_process_task

            inbound_event_process_task.apply_async((event.pk,), countdown=2)

        transaction.on_commit(kick)
    return WebhookResult(202, {"status": "accepted"}, event.pk)


def _retry_later(event: InboundEvent, error: str) -> str:
    event.attempts += 1
    event.error = error[:2000]
    if event.attempts >= MAX_ATTEMPTS:
        event.status = InboundEvent.Status.FAILED
        event.next_attempt_at = None
    else:
        event.next_attempt_at = timezone.now() + timedelta(seconds=min(300, 2 ** min(event.attempts, 8)))
    event.save(update_fields=["attempts", "error", "status", "next_attempt_at"])
    return "retry" if event.status == InboundEvent.Status.RECEIVED else "failed"


def _finish(event: InboundEvent, status: str, error: str = "", tx: PaymentTransaction | None = None) -> str:
    event.status = status
    event.error = error[:2000]
    event.processed_at = timezone.now()
    event.next_attempt_at = None
    if tx is not None:
        event.transaction = tx
    event.save(update_fields=["status", "error", "processed_at", "next_attempt_at", "transaction"])
    return "processed" if status in (InboundEvent.Status.PROCESSED, InboundEvent.Status.IGNORED) else "failed"


def inbound_event_process(*, event_id: int, client=None, force: bool = False) -> str:
    """Verify one stored delivery against the chain and apply it. Returns processed | retry | failed."""
    from billing.chain.rpc import ChainClient, RpcError

    with transaction.atomic():
        event = (
            # of=self: FOR UPDATE on the joined contract row would block every ledger insert's foreign-key
            # check on that contract until we commit, and deadlock with the follower inserting the same log.
            InboundEvent.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("contract__network")
            .filter(pk=event_id)
            .first()
        )
        if event is None:
            return "retry"  # another worker holds it
        if event.status != InboundEvent.Status.RECEIVED and not force:
            return "processed" if event.status == InboundEvent.Status.PROCESSED else "failed"
        if force:
            event.status = InboundEvent.Status.RECEIVED
        contract = event.contract
        body = event.payload
        client = client or ChainClient.for_network(contract.network, contract=contract)
        try:
            receipt = client.get_transaction_receipt(body["tx_hash"])
            head = client.block_number() if receipt else None
        except RpcError as exc:
            return _retry_later(event, f"chain unavailable: {exc}")
        if receipt is None:
            return _retry_later(event, "no receipt on chain yet")
        block_number = int(receipt["blockNumber"], 16)
        if head - block_number < contract.network.confirmation_depth:
            return _retry_later(
                event, f"waiting for depth: {head - block_number}/{contract.network.confirmation_depth}"
            )
        order_id = body["order_id"].lower()
        tx = PaymentTransaction.objects.filter(contract=contract, order_id=order_id).first()
        logs = [
            o
            for o in (
                observed_from_raw(contract.network.chain_id, contract.abi, raw)
                for raw in receipt.get("logs", [])
                if (raw.get("address") or "").lower() == contract.address.lower()
            )
            if o is not None and str(o.args.get("orderId", "")).lower() == order_id
        ]
        status_ok = int(receipt.get("status", "0x1"), 16) == 1
        gas = GasFacts.from_receipt(receipt)

        if not status_ok:
            if tx is None:
                return _finish(event, InboundEvent.Status.IGNORED, "reverted transaction for an unknown order")
            reason = body.get("failure_reason") or revert_reason(client, contract, body["tx_hash"]) or "reverted"
            payment_mark_failed(tx=tx, reason=reason, source=f"webhook:{event.delivery_id}", tx_hash=body["tx_hash"])
            return _finish(event, InboundEvent.Status.PROCESSED, tx=tx)

        paid = next((o for o in logs if o.name == "Paid"), None)
        refunded = next((o for o in logs if o.name == "Refunded"), None)
        if event.event_type == "payment.refunded":
            if refunded is None:
                return _finish(event, InboundEvent.Status.FAILED, "the transaction has no refund log for this order")
            effect = payment_observe_refunded(
                contract=contract, observed=refunded, source=f"webhook:{event.delivery_id}"
            )
            return _finish(event, InboundEvent.Status.PROCESSED, tx=effect.transaction)
        if paid is None:
            note = "the chain shows no payment for this order in that transaction"
            return _finish(event, InboundEvent.Status.FAILED, note)
        # payment.confirmed, or a payment.failed the chain contradicts: the chain wins.
        effect = payment_observe_paid(
            contract=contract,
            observed=paid,
            gas=gas,
            source=f"webhook:{event.delivery_id}",
            external_id=event.delivery_id,
        )
        note = "" if event.event_type == "payment.confirmed" else "reported failed, but the chain shows it paid"
        return _finish(event, InboundEvent.Status.PROCESSED, note, tx=effect.transaction)


def _error_item(name: str, *types: str) -> dict:
    return {"type": "error", "name": name, "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(types)]}


# A payment that pulls an ERC-20 bubbles up the token's own error (no approve, too little balance): the
# standard ERC-6093 errors and SafeERC20's, so the reason names them instead of showing raw hex.
TOKEN_ERRORS = [
    _error_item("ERC20InsufficientAllowance", "address", "uint256", "uint256"),
    _error_item("ERC20InsufficientBalance", "address", "uint256", "uint256"),
    _error_item("ERC20InvalidSender", "address"),
    _error_item("ERC20InvalidReceiver", "address"),
    _error_item("ERC20InvalidSpender", "address"),
    _error_item("ERC20InvalidApprover", "address"),
    _error_item("SafeERC20FailedOperation", "address"),
]


def revert_reason(client, contract: PaymentContract, tx_hash: str) -> str | None:
    """Replay a reverted transaction with eth_call at its block to read the custom error."""
    from billing.chain.abi import decode_error
    from billing.chain.rpc import RpcError

    try:
        original = client.get_transaction(tx_hash)
        if not original:
            return None
        call = {"from": original["from"], "to": original["to"], "data": original["input"], "value": original["value"]}
        client.call("eth_call", [call, original["blockNumber"]])
    except RpcError as exc:
        data = getattr(exc, "data", None)
        name = decode_error([*contract.abi, *TOKEN_ERRORS], data) if data else None
        return name or str(exc)[:200]
    return None


def inbound_events_due_ids(*, limit: int = 200) -> list[int]:
    return list(
        InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
