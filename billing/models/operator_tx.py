"""Transactions the operator key sends (refunds, withdrawals): a row before the broadcast, so a stuck one
is found and replaced with a higher fee by a beat sweep even after a restart."""

from __future__ import annotations

from django.db import models

from billing.fields import UINT256_MAX, TokenAmountField
from billing.models.network import Network


class OperatorTransaction(models.Model):
    class Kind(models.TextChoices):
        REFUND = "refund"
        WITHDRAW = "withdraw"

    class Status(models.TextChoices):
        NEW = "new", "new (not broadcast yet)"
        PENDING = "pending"
        MINED = "mined"
        REVERTED = "reverted"
        FAILED = "failed", "failed (never broadcast)"
        # Pending longer than stuck_tx_seconds with no room under the gas cap for a higher fee. Still
        # watched (it may land, or be bumped once the cap is raised); a retry replaces its nonce.
        STUCK = "stuck", "stuck (at the gas cap)"
        REPLACED = "replaced", "replaced (by a retry with the same nonce)"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="operator_transactions")
    chain_id = models.PositiveBigIntegerField()
    payment = models.ForeignKey(
        "billing.PaymentTransaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="operator_transactions",
    )
    sender = models.CharField(max_length=42, blank=True)
    to = models.CharField(max_length=42)
    data = models.TextField(default="0x")
    value = TokenAmountField(default=0)
    gas = models.PositiveBigIntegerField(null=True, blank=True)
    nonce = models.PositiveBigIntegerField(null=True, blank=True)
    max_fee_per_gas = TokenAmountField(null=True, blank=True)
    max_priority_fee_per_gas = TokenAmountField(null=True, blank=True)
    tx_hashes = models.JSONField(default=list, blank=True, help_text="Every version broadcast, oldest first.")
    mined_tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    # From the mined receipt (reverted ones pay gas too): the network fee the operator pays, in the
    # network's native smallest unit. Net revenue subtracts it (docs/overview.md).
    gas_used = models.PositiveBigIntegerField(null=True, blank=True)
    effective_gas_price = TokenAmountField(null=True, blank=True, help_text="wei per gas")
    fee = TokenAmountField(null=True, blank=True, help_text="gas_used * effective_gas_price, wei")
    replacements = models.PositiveSmallIntegerField(default=0)
    retry_of = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="retries",
        help_text="The failed, reverted or stuck operator transaction this one retries.",
    )
    requested_by = models.CharField(max_length=128)
    reason = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    mined_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                # A `failed` row never reached a node: its nonce is free for the next transaction.
                fields=["chain_id", "sender", "nonce"],
                # A `replaced` row's nonce went to the retry that replaced it.
                condition=models.Q(nonce__isnull=False) & ~models.Q(status__in=["failed", "replaced"]),
                name="operator_tx_unique_nonce",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["new", "pending", "mined", "reverted", "failed", "stuck", "replaced"]),
                name="operator_tx_status_valid",
            ),
            models.CheckConstraint(condition=models.Q(value__lte=UINT256_MAX), name="operator_tx_value_uint256"),
            models.CheckConstraint(
                condition=models.Q(fee__isnull=True) | models.Q(fee__gte=0, fee__lte=UINT256_MAX),
                name="operator_tx_fee_uint256",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "last_sent_at"], name="operator_tx_pending_idx"),
            models.Index(fields=["mined_at"], condition=models.Q(fee__isnull=False), name="operator_tx_fee_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.status} nonce={self.nonce}"
