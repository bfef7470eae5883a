from __future__ import annotations

from django.db import models

from billing.fields import TokenAmountField
from billing.models.contract import PaymentContract


class ChainCursor(models.Model):
    """How far the follower has read a contract's logs. Locked (skip_locked) by the one task syncing it."""

    contract = models.OneToOneField(PaymentContract, on_delete=models.CASCADE, related_name="cursor")
    last_block = models.PositiveBigIntegerField(default=0, help_text="Last block fully applied.")
    last_block_hash = models.CharField(max_length=66, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The dispatch's claim (a lease), or the backoff after failed runs; null: due at the next beat tick.
    next_sync_at = models.DateTimeField(null=True, blank=True)
    sync_errors = models.PositiveIntegerField(default=0, help_text="Failed runs in a row.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.contract.slug}@{self.last_block}"


class ChainBlock(models.Model):
    """Block hashes the follower has seen, per contract, to notice a reorg below the cursor."""

    contract = models.ForeignKey(PaymentContract, on_delete=models.CASCADE, related_name="seen_blocks")
    number = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=66)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["contract", "number"], name="chain_block_unique_number")]

    def __str__(self) -> str:
        return f"{self.number}:{self.hash}"


class ChainEvent(models.Model):
    """A decoded contract log (payment, refund, payout, transfer): the contract's event timeline."""

    contract = models.ForeignKey(PaymentContract, on_delete=models.CASCADE, related_name="chain_events")
    chain_id = models.PositiveBigIntegerField()
    name = models.CharField(max_length=64)
    block_number = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=66)
    tx_hash = models.CharField(max_length=66)
    log_index = models.PositiveIntegerField()
    args = models.JSONField(default=dict, blank=True)
    amount = TokenAmountField(null=True, blank=True)
    token_address = models.CharField(max_length=42, blank=True)
    removed = models.BooleanField(default=False, help_text="Dropped by a reorg.")
    apply_error = models.TextField(
        blank=True, help_text="Why the follower could not apply it (kept for review; the cursor moved on)."
    )
    transaction = models.ForeignKey(
        "billing.PaymentTransaction", on_delete=models.SET_NULL, null=True, blank=True, related_name="chain_events"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-block_number", "-log_index"]
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "tx_hash", "log_index"], name="chain_event_unique_log"),
        ]
        indexes = [
            models.Index(fields=["contract", "-block_number", "-log_index"], name="chain_event_timeline_idx"),
            models.Index(fields=["name", "created_at"], name="chain_event_name_time_idx"),  # overview payouts
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.block_number}:{self.log_index}"
