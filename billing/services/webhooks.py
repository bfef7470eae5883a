"""Contract webhooks from an indexer (docs/reference/api/contract.md, "Webhook signature"), in two halves.

The request (`webhook_receive`) only stores the delivery; it never calls the chain, publishes no broker
message and builds no web3 object, ABI or adapter:

1. the contract, from a per-process cache (`webhook_contract`, TTL `BILLING_WEBHOOK_CONTRACT_CACHE_SECONDS`,
   5 s by default, and dropped at once in the process that saves a contract or a network), so a secret
   rotation takes effect everywhere within seconds without a query per request; unknown slug: 404;
2. the signature, over the raw bytes (401; nothing is stored for a bad one, only a counter);
3. the body's shape (400 with field errors);
4. one `INSERT ... ON CONFLICT DO NOTHING`: the delivery id (per contract) and (chain_id, tx_hash,
   log_index) are unique in the database, so a repeat is a `duplicate` (200) however many arrive at once;
   a new one is `accepted` (202), or stored as `failed` and answered 422 when the method is not in the
   contract's ABI.

Workers verify what was stored (`inbound_events_process_due`, run by the beat every second): they claim due
deliveries in batches (`SELECT ... FOR UPDATE SKIP LOCKED`, moving `next_attempt_at` forward in the same
transaction, so no row is attempted twice at once), read the receipt and the log from the chain at the
network's depth with one chain client per contract and batch, and apply them. The webhook is a hint and the
chain is the truth: a leaked secret alone cannot mint anything."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from eth_utils import is_address

from billing.adapters.registry import get_adapter
from billing.attempts import Attempts
from billing.chain.confirmation import applicable_block
from billing.chain.logs import observed_from_raw
from billing.chain.receipts import mined_receipt
from billing.chain.reverts import revert_reason, reverted_call_mismatch
from billing.models import InboundEvent, PaymentContract, PaymentTransaction
from billing.services.payments import (
    GasFacts,
    payment_mark_failed,
    payment_observe_paid,
    payment_observe_refunded,
)
from billing.validators import abi_functions
from billing_project.errors import ServiceError
from billing_project.logging import mask_url

log = structlog.get_logger(__name__)
EVENT_TYPES = ("payment.confirmed", "payment.failed", "payment.refunded")
MAX_ATTEMPTS = 40
RETRY_BASE_SECONDS = 2.0
RETRY_CAP_SECONDS = 300.0
CLAIM_BATCH = 50
# A claimed row is not due again before the lease ends: longer than the claim task's hard time limit, so a
# worker killed mid-batch leaves rows that come back on their own, and a live one never sees them twice.
CLAIM_LEASE = timedelta(seconds=180)
CLAIM_BUDGET_SECONDS = 30.0
# The delivery-attempt state machine (billing.attempts) over stored deliveries; a finished one is processed,
# ignored or failed (`_finish`).
ATTEMPTS = Attempts(
    model=InboundEvent,
    pending=InboundEvent.Status.RECEIVED,
    done=InboundEvent.Status.PROCESSED,
    dead=InboundEvent.Status.FAILED,
    done_at="processed_at",
    error="error",
)


@dataclass(frozen=True)
class WebhookResult:
    status_code: int
    body: dict
    event_id: int | None = None


def _refused(status: int, code: str, message: str, fields: dict | None = None) -> ServiceError:
    """A delivery refused at the door; the API answers it with its one error body (billing_project.api_errors)."""
    return ServiceError(code, message, status=status, fields=fields or {})


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
    log_index = body.get("log_index")
    if log_index is not None and (
        not isinstance(log_index, int) or isinstance(log_index, bool) or not 0 <= log_index < 2**31
    ):
        errors["log_index"] = "A non-negative integer."
    if body.get("contract_address") is not None and not is_address(body.get("contract_address")):
        errors["contract_address"] = "An EVM address."
    if body.get("amount") is not None and not (isinstance(body["amount"], str) and body["amount"].isdigit()):
        errors["amount"] = "An integer string in the token's smallest unit."
    return errors


# --- the contract, cached per process ------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookContract:
    """What the webhook request needs of a contract: plain values, no model instance."""

    pk: int
    slug: str
    chain_id: int
    address: str  # lower case
    secret: str
    previous_secret: str
    grace_until: datetime | None
    methods: frozenset[str]
    loaded_at: float = field(default=0.0, compare=False)


_CONTRACTS: dict[str, WebhookContract] = {}


def webhook_contracts_forget(**_kwargs) -> None:
    """Drop this process's cached contracts (receiver of PaymentContract/Network saves and deletes)."""
    _CONTRACTS.clear()


def webhook_contract(slug: str) -> WebhookContract | None:
    """The contract's webhook facts, from this process's cache when younger than the TTL; one query otherwise.

    Unknown slugs are not cached (the cache stays bounded by the number of contracts)."""
    now = time.monotonic()
    cached = _CONTRACTS.get(slug)
    if cached is not None and now - cached.loaded_at < settings.BILLING_WEBHOOK_CONTRACT_CACHE_SECONDS:
        return cached
    row = (
        PaymentContract.objects.filter(slug=slug)
        .values_list(
            "pk",
            "network__chain_id",
            "address",
            "abi",
            "webhook_secret",
            "previous_webhook_secret",
            "secret_rotated_at",
        )
        .first()
    )
    if row is None:
        _CONTRACTS.pop(slug, None)
        return None
    pk, chain_id, address, abi, secret, previous, rotated_at = row
    facts = WebhookContract(
        pk=pk,
        slug=slug,
        chain_id=chain_id,
        address=(address or "").lower(),
        secret=secret,
        previous_secret=previous,
        grace_until=rotated_at + settings.BILLING_WEBHOOK_SECRET_GRACE if rotated_at else None,
        methods=frozenset(abi_functions(abi or [])),
        loaded_at=now,
    )
    _CONTRACTS[slug] = facts
    return facts


@cache
def _verifier():
    """The EVM adapter's signature check; one instance per process."""
    return get_adapter("evm")


# Table name from the model, values as parameters. Without a conflict target, ON CONFLICT DO NOTHING covers
# both unique constraints (delivery id per contract, and the partial (chain_id, tx_hash, log_index) one).
_INSERT_SQL = (
    f"INSERT INTO {InboundEvent._meta.db_table} "  # noqa: S608
    "(contract_id, delivery_id, event_type, chain_id, tx_hash, log_index, raw_body, payload, "
    "signature_header, status, error, attempts, next_attempt_at, received_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, 0, %s, %s) "
    "ON CONFLICT DO NOTHING RETURNING id"
)


def webhook_receive(*, contract_slug: str, raw_body: bytes, signature_header: str) -> WebhookResult:
    """Check, validate and store one delivery (see the module docstring). One SQL statement for a known
    contract whose cache entry is fresh; autocommit, so it is its own transaction (a delivery stored as failed
    stays stored when the 422 is raised). A refused delivery raises ServiceError (404, 401, 400, 422)."""
    from billing import metrics

    contract = webhook_contract(contract_slug)
    if contract is None:
        raise _refused(404, "unknown_contract", f"No contract '{contract_slug}'.")
    now = timezone.now()
    verification = _verifier().verify_webhook(
        raw_body=raw_body,
        signature_header=signature_header,
        secret=contract.secret,
        previous_secret=contract.previous_secret,
        previous_valid_until=contract.grace_until,
        now=now,
    )
    if not contract.secret or not verification.ok:
        metrics.WEBHOOK_REJECTED.labels(contract=contract.slug, reason="signature").inc()
        log.warning("webhook.bad_signature", contract_slug=contract.slug, reason=verification.reason)
        raise _refused(401, "invalid_signature", verification.reason or "No webhook secret is configured.")
    if b"\x00" in raw_body or b"\\u0000" in raw_body:
        # PostgreSQL text and jsonb cannot hold NUL: refuse it here rather than fail the INSERT.
        raise _refused(400, "malformed", "The body contains a NUL character.")
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise _refused(400, "malformed", "The body is not JSON.")
    except RecursionError:  # nesting deeper than the interpreter's recursion limit: hostile, not a 500
        raise _refused(400, "malformed", "The body is nested too deeply.")
    errors = _validate(body)
    if errors:
        raise _refused(400, "malformed", "The webhook body is not valid.", errors)
    if body["chain_id"] != contract.chain_id:
        raise _refused(400, "malformed", "chain_id is not the contract's chain.", {"chain_id": "Wrong chain."})
    if body.get("contract_address") and body["contract_address"].lower() != contract.address:
        raise _refused(400, "malformed", "contract_address is not this contract.", {"contract_address": "Wrong."})

    known_method = body["method"] in contract.methods
    params = [
        contract.pk,
        body["id"],
        body["type"],
        body["chain_id"],
        body["tx_hash"].lower(),
        body.get("log_index"),
        raw_body.decode("utf-8", errors="replace"),
        json.dumps(body),
        signature_header[:512],
        InboundEvent.Status.RECEIVED if known_method else InboundEvent.Status.FAILED,
        "" if known_method else f"method '{body['method']}' is not in the contract's ABI"[:2000],
        now if known_method else None,
        now,
    ]
    try:
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_SQL, params)
            row = cursor.fetchone()
    except IntegrityError:
        # Not a uniqueness conflict (ON CONFLICT absorbs those): the cached contract row is gone.
        webhook_contracts_forget()
        raise _refused(404, "unknown_contract", f"No contract '{contract_slug}'.")
    if row is None:
        metrics.WEBHOOK_RECEIVED.labels(contract=contract.slug, outcome="duplicate").inc()
        return WebhookResult(200, {"status": "duplicate"})
    if not known_method:
        metrics.WEBHOOK_RECEIVED.labels(contract=contract.slug, outcome="bad_method").inc()
        raise _refused(
            422,
            "unknown_method",
            f"'{body['method']}' is not a function in the contract's ABI.",
            {"method": "Not in the ABI."},
        )
    metrics.WEBHOOK_RECEIVED.labels(contract=contract.slug, outcome="accepted").inc()
    return WebhookResult(202, {"status": "accepted"}, row[0])


# --- workers: claim, verify on chain, apply ----------------------------------------------------------------


def _retry_later(event: InboundEvent, error: str) -> str:
    """Record why the delivery could not be applied yet and when it is due again (billing.retry backoff)."""
    event.attempts += 1
    ATTEMPTS.failed(
        event,
        error=mask_url(error)[:2000],
        now=timezone.now(),
        max_attempts=MAX_ATTEMPTS,
        base=RETRY_BASE_SECONDS,
        cap=RETRY_CAP_SECONDS,
    )
    # Only over a row nobody finished meanwhile (an operator's reprocess may have applied it).
    InboundEvent.objects.filter(pk=event.pk).exclude(status=InboundEvent.Status.PROCESSED).update(
        attempts=event.attempts, error=event.error, status=event.status, next_attempt_at=event.next_attempt_at
    )
    return "retry" if event.status == InboundEvent.Status.RECEIVED else "failed"


def _finish(event: InboundEvent, status: str, error: str = "", tx: PaymentTransaction | None = None) -> str:
    fields = ATTEMPTS.succeeded(event, now=timezone.now(), status=status, error=error[:2000])
    if tx is not None:
        event.transaction = tx
    event.save(update_fields=[*fields, "transaction"])
    return "processed" if status in (InboundEvent.Status.PROCESSED, InboundEvent.Status.IGNORED) else "failed"


class ChainView:
    """One chain client for a batch of deliveries of one contract, and the head and the network's applicable
    block it saw (`billing.chain.confirmation`; read once, again only when a receipt is newer than the head).
    After the network failed on every endpoint, the rest of the batch is not sent to it: those deliveries
    are retried later with the same error."""

    def __init__(self, client):
        self.client = client
        self._head: int | None = None
        self._applicable: int | None = None
        self.down: str = ""

    def head(self, at_least: int = 0) -> int:
        if self._head is None or self._head < at_least:
            self._head = self.client.block_number()
            self._applicable = None
        return self._head

    def applicable(self, network, at_least: int = 0) -> int:
        """The highest block payments may be applied at on `network` (the confirmation policy)."""
        head = self.head(at_least)
        if self._applicable is None:
            self._applicable = applicable_block(network, self.client, head=head)
        return self._applicable


@dataclass(frozen=True)
class _ChainFacts:
    """What the chain says about one delivery, read outside any database transaction."""

    retry: str = ""  # non-empty: not applicable yet, why
    receipt: dict | None = None
    revert_reason: str | None = None
    not_this_order: str = ""  # reverted, but not a call to this contract's pay method for this order: why


def _read_chain(event: InboundEvent, chain: ChainView, tx: PaymentTransaction | None) -> _ChainFacts:
    from billing.chain.rpc import AllEndpointsFailed, RpcError

    contract = event.contract
    body = event.payload
    if chain.down:
        return _ChainFacts(retry=chain.down)
    try:
        mined = mined_receipt(
            chain.client, body["tx_hash"], lambda block: chain.applicable(contract.network, at_least=block)
        )
        if mined is None:
            return _ChainFacts(retry="no receipt on chain yet")
    except RpcError as exc:
        error = f"chain unavailable: {exc}"
        if isinstance(exc, AllEndpointsFailed):
            chain.down = error
        return _ChainFacts(retry=error)
    if not mined.deep_enough:
        network = contract.network
        return _ChainFacts(
            retry=f"waiting for the confirmation policy ({network.confirmation_policy}, depth "
            f"{network.confirmation_depth}): block {mined.block_number} > {mined.applicable}"
        )
    receipt = mined.receipt
    reason = None
    if mined.reverted and tx is not None:
        try:
            mismatch = reverted_call_mismatch(chain.client, contract, body["tx_hash"], tx.order_id)
        except RpcError as exc:
            return _ChainFacts(retry=f"chain unavailable: {exc}")
        if mismatch:
            return _ChainFacts(receipt=receipt, not_this_order=mismatch)
        if not body.get("failure_reason"):
            reason = revert_reason(chain.client, contract, body["tx_hash"])
    return _ChainFacts(receipt=receipt, revert_reason=reason)


def _apply(event: InboundEvent, facts: _ChainFacts, tx: PaymentTransaction | None) -> str:
    """Move the ledger as the chain says, inside the caller's transaction (the duplicate and reorg rules
    live in billing.services.payments: one effect per log and per order)."""
    contract = event.contract
    body = event.payload
    receipt = facts.receipt
    order_id = body["order_id"].lower()
    if int(receipt.get("status", "0x1"), 16) != 1:
        if tx is None:
            return _finish(event, InboundEvent.Status.IGNORED, "reverted transaction for an unknown order")
        if facts.not_this_order:
            log.warning("webhook.failed_not_this_order", event_id=event.pk, reason=facts.not_this_order)
            return _finish(event, InboundEvent.Status.IGNORED, facts.not_this_order)
        reason = body.get("failure_reason") or facts.revert_reason or "reverted"
        payment_mark_failed(tx=tx, reason=reason, source=f"webhook:{event.delivery_id}", tx_hash=body["tx_hash"])
        return _finish(event, InboundEvent.Status.PROCESSED, tx=tx)
    logs = [
        o
        for o in (
            observed_from_raw(contract.network.chain_id, contract.abi, raw)
            for raw in receipt.get("logs", [])
            if (raw.get("address") or "").lower() == contract.address.lower()
        )
        if o is not None and str(o.args.get("orderId", "")).lower() == order_id
    ]
    gas = GasFacts.from_receipt(receipt)
    paid = next((o for o in logs if o.name == "Paid"), None)
    refunded = next((o for o in logs if o.name == "Refunded"), None)
    if event.event_type == "payment.refunded":
        if refunded is None:
            return _finish(event, InboundEvent.Status.FAILED, "the transaction has no refund log for this order")
        effect = payment_observe_refunded(contract=contract, observed=refunded, source=f"webhook:{event.delivery_id}")
        return _finish(event, InboundEvent.Status.PROCESSED, tx=effect.transaction)
    if paid is None:
        return _finish(
            event, InboundEvent.Status.FAILED, "the chain shows no payment for this order in that transaction"
        )
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


def _outcome_of(status: str) -> str:
    return "processed" if status in (InboundEvent.Status.PROCESSED, InboundEvent.Status.IGNORED) else "failed"


def _process(event: InboundEvent, chain: ChainView, *, force: bool = False) -> str:
    """Verify one delivery on the chain (no transaction open), then apply it under its row lock."""
    if event.status != InboundEvent.Status.RECEIVED and not force:
        return _outcome_of(event.status)
    order_id = str(event.payload.get("order_id", "")).lower()
    tx = PaymentTransaction.objects.filter(contract_id=event.contract_id, order_id=order_id).first()
    facts = _read_chain(event, chain, tx)
    with transaction.atomic():
        # of=self: FOR UPDATE on the joined contract row would block every ledger insert's foreign-key check
        # on that contract until we commit, and deadlock with the follower inserting the same log.
        locked = ATTEMPTS.lock(event.pk, related=("contract__network",), pending_only=False)
        if locked is None:
            return "retry"  # someone else (an operator's reprocess) holds it right now
        if locked.status != InboundEvent.Status.RECEIVED and not force:
            return _outcome_of(locked.status)
        if facts.retry:
            return _retry_later(locked, facts.retry)
        return _apply(locked, facts, tx)


def inbound_event_process(*, event_id: int, client=None, force: bool = False) -> str:
    """Verify one stored delivery against the chain and apply it. Returns processed | retry | failed.

    `force` re-runs a delivery that already finished (operator reprocess). Workers go through
    `inbound_events_process_due`, which calls the same code for each claimed delivery."""
    from billing.chain.rpc import ChainClient

    event = InboundEvent.objects.select_related("contract__network").filter(pk=event_id).first()
    if event is None:
        return "failed"
    if event.status != InboundEvent.Status.RECEIVED and not force:
        return _outcome_of(event.status)
    try:
        client = client or ChainClient.for_network(event.contract.network, contract=event.contract)
    except Exception as exc:  # no enabled endpoint: as if the chain did not answer
        with transaction.atomic():
            return _retry_later(event, f"chain unavailable: {exc}")
    return _process(event, ChainView(client), force=force)


def inbound_events_claim(*, limit: int = CLAIM_BATCH, lease: timedelta = CLAIM_LEASE) -> list[int]:
    """Claim up to `limit` due deliveries for this worker: locked with SKIP LOCKED (a concurrent claimer
    takes the next ones) and made not-due until the lease ends, in the same transaction."""
    now = timezone.now()
    due = InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED, next_attempt_at__lte=now)
    return ATTEMPTS.claim_due(due, claim=now + lease, order_by=("next_attempt_at", "pk"), limit=limit)


@dataclass
class ClaimReport:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    released: int = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def inbound_events_verify(*, event_ids: list[int], deadline: float | None = None, report: ClaimReport) -> None:
    """Verify and apply claimed deliveries: one chain client per contract for the whole batch. A delivery
    whose check raises is recorded with its error and retried later; the others go on."""
    from billing import metrics
    from billing.chain.rpc import ChainClient

    events = list(InboundEvent.objects.select_related("contract__network").filter(pk__in=event_ids).order_by("pk"))
    chains: dict[int, ChainView] = {}
    for index, event in enumerate(events):
        if deadline is not None and time.monotonic() > deadline:
            left = [e.pk for e in events[index:]]
            ATTEMPTS.release(left)  # claimed but not attempted: due again now, for the next claim
            report.released += len(left)
            return
        try:
            chain = chains.get(event.contract_id)
            if chain is None:
                try:
                    chain = ChainView(ChainClient.for_network(event.contract.network, contract=event.contract))
                except Exception as exc:  # no enabled endpoint: every delivery of the contract waits
                    chain = ChainView(None)
                    chain.down = f"chain unavailable: {exc}"
                chains[event.contract_id] = chain
            outcome = _process(event, chain)
        except Exception as exc:  # recorded on the row; the next claim after its backoff tries again
            log.warning("webhook.process_failed", event_id=event.pk, error=f"{type(exc).__name__}: {exc}")
            with transaction.atomic():
                outcome = _retry_later(event, f"{type(exc).__name__}: {exc}")
        report.count(outcome)
        metrics.WEBHOOK_VERIFIED.labels(contract=event.contract.slug, outcome=outcome).inc()


def inbound_events_process_due(
    *, batch_size: int = CLAIM_BATCH, budget_seconds: float = CLAIM_BUDGET_SECONDS
) -> ClaimReport:
    """What the beat runs every second: claim a batch, verify it, and go on while batches come back full
    and the time budget lasts. Claimed deliveries left when the budget runs out are released."""
    deadline = time.monotonic() + budget_seconds
    report = ClaimReport()
    while True:
        ids = inbound_events_claim(limit=batch_size)
        report.claimed += len(ids)
        if ids:
            inbound_events_verify(event_ids=ids, deadline=deadline, report=report)
        if len(ids) < batch_size or time.monotonic() > deadline:
            return report
