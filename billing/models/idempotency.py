from __future__ import annotations

from django.conf import settings
from django.db import models


class IdempotencyKey(models.Model):
    """One row per (user, key): the request fingerprint, the first response, and an expiry (>= 72 h)."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    scope = models.CharField(max_length=64, default="checkout")
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and canonical body")
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    transaction = models.ForeignKey(
        "billing.PaymentTransaction", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    replay_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "scope", "key"], name="idempotency_unique_user_key"),
            models.CheckConstraint(
                condition=models.Q(expires_at__gt=models.F("created_at")), name="idempotency_expiry_after_creation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"
