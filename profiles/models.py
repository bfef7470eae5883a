"""Wallets linked by Sign-In with Ethereum, and the user's quota fed by plan.changed.v1.

This app imports no other project app: billing talks to it, never the other way round.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Wallet(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="wallets")
    address = models.CharField(max_length=42, unique=True, help_text="EIP-55; a wallet belongs to one user.")
    chain_id = models.PositiveBigIntegerField()
    is_primary = models.BooleanField(default=True)
    verified_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-verified_at"]
        constraints = [
            models.UniqueConstraint(fields=["user"], condition=models.Q(is_primary=True), name="wallet_one_primary"),
        ]

    def __str__(self) -> str:
        return self.address


class SiweNonce(models.Model):
    """Server-side, single-use, expiring nonce for one SIWE message."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="siwe_nonces")
    nonce = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.nonce


class QuotaGrant(models.Model):
    """What the user may do now: the limits of their plan, as Quota last heard them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    plan_slug = models.CharField(max_length=64, blank=True)
    limits = models.JSONField(default=dict, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    last_event_id = models.UUIDField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id}:{self.plan_slug or '-'}"


class ProcessedQuotaEvent(models.Model):
    """Dedupe for the at-least-once plan.changed.v1 stream: one row per applied event_id."""

    event_id = models.UUIDField(unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    applied_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return str(self.event_id)
