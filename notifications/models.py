from __future__ import annotations

from django.conf import settings
from django.db import models


class Notification(models.Model):
    """A message to a user or to ops; a row first, delivered by a task, retried until sent."""

    class Audience(models.TextChoices):
        USER = "user"
        OPS = "ops"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    audience = models.CharField(max_length=8, choices=Audience.choices, default=Audience.USER)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    kind = models.CharField(max_length=64, help_text="payment_confirmed, renewal_overdue, payment_failed, ...")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    dedupe_key = models.CharField(max_length=200, unique=True, help_text="Source event + audience: one per cause.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Pending: not tried again before this (backoff, or a sweep's claim). Null: due.",
    )
    last_error = models.TextField(blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="notification_user_idx"),
            models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.user_id or 'ops'}"
