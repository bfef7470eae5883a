"""The payment ledger: one row per payment attempt (order), its status history appended beside it."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from billing.fields import UINT256_MAX, TokenAmountField, to_display
from billing.models.contract import PaymentContract
from billing.models.network import Network, Token
from billing.models.plan import Plan
from billing.models.provider import PaymentProvider
from billing.validators import validate_checksum_address, validate_tx_hash


class TxStatus(models.TextChoices):
    PENDING = "pending"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    REFUNDED = "refunded"
    FAILED = "failed"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"
    UNMATCHED = "unmatched"


# The one place that says which status may follow which (docs/reference/api/contract.md, "Transaction statuses").
# `failed` is not final while the checkout's deadline has not passed: a wallet retry may still confirm.
# `expired` may still confirm: the chain is the truth if a payment mined at the deadline arrives late.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    TxStatus.PENDING: frozenset({TxStatus.SUBMITTED, TxStatus.CONFIRMED, TxStatus.FAILED, TxStatus.EXPIRED}),
    TxStatus.SUBMITTED: frozenset({TxStatus.SUBMITTED, TxStatus.CONFIRMED, TxStatus.FAILED}),
    TxStatus.FAILED: frozenset({TxStatus.SUBMITTED, TxStatus.CONFIRMED, TxStatus.EXPIRED}),
    TxStatus.EXPIRED: frozenset({TxStatus.CONFIRMED}),
    TxStatus.CONFIRMED: frozenset({TxStatus.REFUNDED, TxStatus.NEEDS_REVIEW}),
    TxStatus.NEEDS_REVIEW: frozenset({TxStatus.CONFIRMED, TxStatus.REFUNDED, TxStatus.FAILED}),
    TxStatus.UNMATCHED: frozenset({TxStatus.REFUNDED, TxStatus.NEEDS_REVIEW}),
    # A refund whose log a reorg removed is in doubt: flagged for review, and refunded again when it is re-mined.
    TxStatus.REFUNDED: frozenset({TxStatus.NEEDS_REVIEW}),
}
TERMINAL_STATUSES = frozenset({TxStatus.REFUNDED})
OPEN_STATUSES = frozenset({TxStatus.PENDING, TxStatus.SUBMITTED, TxStatus.FAILED})


def can_transition(old: str, new: str) -> bool:
    return new in ALLOWED_TRANSITIONS.get(old, frozenset())


class RefundStatus(models.TextChoices):
    """Where the operator's refund of a payment stands (the ledger's `refunded` follows the chain's log)."""

    NONE = "", "none"
    IN_FLIGHT = "in_flight", "in flight (sent, not settled)"
    FAILED = "failed", "failed (reverted, stuck at the gas cap or never sent): can be retried"
    MINED = "mined", "mined (the ledger follows the Refunded log)"


class ProductType(models.TextChoices):
    PLAN = "plan"


class PaymentTransaction(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # No single-column index on user, provider, contract, network or token (db_index=False): each leads one of
    # the `<fk>, -created_at, -id` indexes below, which serve every look-up by it (the PROTECT checks too),
    # and every index is one more write per ledger INSERT and status UPDATE (the follower's hot path).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="payment_transactions",
        db_index=False,
    )
    product_type = models.CharField(max_length=16, choices=ProductType.choices, default=ProductType.PLAN)
    product_id = models.PositiveBigIntegerField(null=True, blank=True)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="transactions")
    provider = models.ForeignKey(
        PaymentProvider, on_delete=models.PROTECT, null=True, blank=True, related_name="transactions", db_index=False
    )
    contract = models.ForeignKey(PaymentContract, on_delete=models.PROTECT, related_name="transactions", db_index=False)
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="transactions", db_index=False)
    chain_id = models.PositiveBigIntegerField(help_text="Copied from the network so uniqueness holds in the DB.")
    token = models.ForeignKey(Token, on_delete=models.PROTECT, related_name="transactions", db_index=False)
    amount = TokenAmountField(help_text="Smallest unit.")
    periods = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=TxStatus.choices, default=TxStatus.PENDING)
    order_id = models.CharField(max_length=66, null=True, blank=True, help_text="bytes32 hex from the checkout.")
    external_id = models.CharField(max_length=128, blank=True, help_text="Delivery/event id that confirmed it.")
    payer_address = models.CharField(max_length=42, blank=True, validators=[validate_checksum_address])
    tx_hash = models.CharField(max_length=66, null=True, blank=True, validators=[validate_tx_hash])
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True)
    log_index = models.PositiveIntegerField(null=True, blank=True)
    gas_used = models.PositiveBigIntegerField(null=True, blank=True)
    effective_gas_price = TokenAmountField(null=True, blank=True, help_text="wei per gas")
    fee = TokenAmountField(null=True, blank=True, help_text="gas_used * effective_gas_price, wei")
    usd_rate_at_checkout = models.DecimalField(max_digits=24, decimal_places=8, null=True, blank=True)
    usd_rate_at_confirmation = models.DecimalField(max_digits=24, decimal_places=8, null=True, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # Receipt tracking of a reported hash: when it may be checked again (backoff, or a sweep's claim; null:
    # due) and how many checks found nothing final yet.
    receipt_next_check_at = models.DateTimeField(null=True, blank=True)
    receipt_checks = models.PositiveIntegerField(default=0)
    # Re-verification of a recent confirmation (billing.services.reverify): claimed by a pass while it is
    # checked, or backing off after failed checks (null: due at the next pass).
    reverify_next_at = models.DateTimeField(null=True, blank=True)
    reverify_failures = models.PositiveIntegerField(default=0)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    refund_tx_hash = models.CharField(max_length=66, blank=True)
    refund_status = models.CharField(max_length=16, choices=RefundStatus.choices, default="", blank=True)
    checkout_payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=[s.value for s in TxStatus]), name="tx_status_valid"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="tx_amount_non_negative"),
            models.CheckConstraint(condition=models.Q(amount__lte=UINT256_MAX), name="tx_amount_uint256"),
            models.CheckConstraint(
                condition=models.Q(fee__isnull=True) | models.Q(fee__lte=UINT256_MAX), name="tx_fee_uint256"
            ),
            models.CheckConstraint(
                condition=models.Q(effective_gas_price__isnull=True) | models.Q(effective_gas_price__lte=UINT256_MAX),
                name="tx_gas_price_uint256",
            ),
            models.CheckConstraint(
                condition=models.Q(fee__isnull=True) | models.Q(fee__gte=0), name="tx_fee_non_negative"
            ),
            models.CheckConstraint(
                condition=~models.Q(status="confirmed")
                | (models.Q(tx_hash__isnull=False) & models.Q(confirmed_at__isnull=False)),
                name="tx_confirmed_has_hash",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="unmatched") | models.Q(tx_hash__isnull=False), name="tx_unmatched_has_hash"
            ),
            models.UniqueConstraint(
                fields=["chain_id", "tx_hash", "log_index"],
                condition=models.Q(tx_hash__isnull=False, log_index__isnull=False),
                name="tx_unique_chain_log",
            ),
            models.UniqueConstraint(
                fields=["contract", "order_id"],
                condition=models.Q(order_id__isnull=False),
                name="tx_unique_contract_order",
            ),
        ]
        indexes = [
            # Every list is ordered by (-created_at, -id): the indexes carry both, so a page is an index scan.
            models.Index(fields=["-created_at", "-id"], name="tx_created_idx"),
            models.Index(fields=["status", "-created_at", "-id"], name="tx_status_created_idx"),
            models.Index(fields=["user", "-created_at", "-id"], name="tx_user_created_idx"),
            models.Index(fields=["provider", "-created_at", "-id"], name="tx_provider_created_idx"),
            models.Index(fields=["contract", "-created_at", "-id"], name="tx_contract_created_idx"),
            models.Index(fields=["network", "-created_at", "-id"], name="tx_network_created_idx"),
            models.Index(fields=["tx_hash"], name="tx_hash_idx"),
            # The console's token and wallet filters (billing.selectors.transaction_search).
            models.Index(fields=["token", "-created_at", "-id"], name="tx_token_created_idx"),
            models.Index(fields=["payer_address", "-created_at", "-id"], name="tx_payer_created_idx"),
            models.Index(fields=["status", "expires_at"], name="tx_status_expiry_idx"),
            # Overview analytics (docs/overview.md): each window aggregate is an index-only range scan.
            models.Index(
                fields=["confirmed_at"],
                include=[
                    "status",
                    "user",
                    "token",
                    "network",
                    "plan",
                    "amount",
                    "usd_rate_at_confirmation",
                    "usd_rate_at_checkout",
                    "submitted_at",
                ],
                condition=models.Q(status__in=["confirmed", "refunded", "needs_review"]),
                name="tx_paid_confirmed_idx",
            ),
            models.Index(
                fields=["refunded_at"],
                include=[
                    "user",
                    "token",
                    "network",
                    "plan",
                    "amount",
                    "usd_rate_at_confirmation",
                    "usd_rate_at_checkout",
                ],
                condition=models.Q(status="refunded"),
                name="tx_refunded_idx",
            ),
            models.Index(
                fields=["created_at"],
                include=[
                    "status",
                    "token",
                    "network",
                    "plan",
                    "amount",
                    "usd_rate_at_confirmation",
                    "usd_rate_at_checkout",
                ],
                condition=models.Q(user__isnull=False),
                name="tx_checkout_created_idx",
            ),
            models.Index(
                fields=["user", "confirmed_at"],
                include=["plan", "status", "refunded_at"],
                condition=models.Q(status__in=["confirmed", "refunded"]),
                name="tx_user_paid_idx",
            ),
            # /metrics (billing.selectors.metrics_snapshot): open payments by status and network with their
            # oldest times, an index-only scan over the open ones whatever the ledger's size.
            models.Index(
                fields=["status", "network"],
                include=["created_at", "submitted_at", "updated_at"],
                condition=models.Q(status__in=["pending", "submitted", "needs_review", "unmatched"]),
                name="tx_open_metrics_idx",
            ),
            models.Index(
                fields=["token", "confirmed_at"],
                include=["usd_rate_at_confirmation", "usd_rate_at_checkout"],
                condition=models.Q(status__in=["confirmed", "refunded"]),
                name="tx_token_paid_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"tx {self.pk} {self.status}"

    @property
    def amount_display(self):
        return to_display(self.amount, self.token.decimals)

    @property
    def fee_display(self):
        return to_display(self.fee, self.network.native_decimals) if self.fee is not None else None

    @property
    def explorer_url(self) -> str:
        return self.network.tx_url(self.tx_hash)

    @property
    def refund_outstanding(self) -> bool:
        """A refund is on its way or on chain, so no other may be sent: ours in flight or mined, or a refund's
        hash the ledger still stands on. A payment under review because a reorg removed a refund sent from
        outside keeps that hash, but nothing is outstanding. A failed refund of ours is not outstanding."""
        if self.refund_status == RefundStatus.FAILED:
            return False
        return bool(self.refund_status) or (bool(self.refund_tx_hash) and self.status != TxStatus.NEEDS_REVIEW)


class TransactionStatusChange(models.Model):
    """Append-only: every status change of a ledger row with time, actor and reason."""

    transaction = models.ForeignKey(PaymentTransaction, on_delete=models.CASCADE, related_name="status_history")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, choices=TxStatus.choices)
    actor = models.CharField(max_length=128, help_text="user:<id>, system:<component>, webhook:<id>, chain")
    reason = models.CharField(max_length=500, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(to_status__in=[s.value for s in TxStatus]), name="tx_history_status_valid"
            ),
        ]
        indexes = [
            # Overview incidents: reorgs are the moves to review, found by time.
            models.Index(
                fields=["created_at"], condition=models.Q(to_status="needs_review"), name="tx_history_review_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status}"
