from __future__ import annotations

from django.db import models

from billing.models.contract import PaymentContract


class InboundEvent(models.Model):
    """Every webhook delivery, stored raw before anything else happens; reprocessable from the admin."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        FAILED = "failed"
        IGNORED = "ignored"

    contract = models.ForeignKey(PaymentContract, on_delete=models.PROTECT, related_name="inbound_events")
    delivery_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64)
    chain_id = models.PositiveBigIntegerField(null=True, blank=True)
    tx_hash = models.CharField(max_length=66, null=True, blank=True)
    log_index = models.PositiveIntegerField(null=True, blank=True)
    raw_body = models.TextField()
    payload = models.JSONField(default=dict, blank=True)
    signature_header = models.CharField(max_length=512, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    transaction = models.ForeignKey(
        "billing.PaymentTransaction", on_delete=models.SET_NULL, null=True, blank=True, related_name="inbound_events"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["contract", "delivery_id"], name="inbound_unique_delivery"),
            models.UniqueConstraint(
                fields=["chain_id", "tx_hash", "log_index"],
                condition=models.Q(chain_id__isnull=False, tx_hash__isnull=False, log_index__isnull=False),
                name="inbound_unique_chain_log",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["received", "processed", "failed", "ignored"]),
                name="inbound_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="inbound_retry_idx")]

    def __str__(self) -> str:
        return f"{self.contract_id}:{self.delivery_id} {self.status}"
