from __future__ import annotations

from django.conf import settings
from django.db import models

from billing.fields import UINT256_MAX, TokenAmountField
from billing.models.network import Token
from billing.models.plan import Plan


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    EXPIRED = "expired"


LIVE_SUBSCRIPTION_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)


class Subscription(models.Model):
    """A user's access to a plan for a period. At most one live (active or past due) per user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    pending_plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Downgrade at period end."
    )
    pending_period_end = models.DateTimeField(
        null=True, blank=True, help_text="End of the period already paid for the pending (downgrade) plan."
    )
    grace_until = models.DateTimeField(null=True, blank=True)
    debt_amount = TokenAmountField(default=0)
    debt_token = models.ForeignKey(Token, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    last_transaction = models.ForeignKey(
        "billing.PaymentTransaction", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(status__in=["active", "past_due"]),
                name="subscription_one_live_per_user",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in SubscriptionStatus]), name="subscription_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(current_period_end__gt=models.F("current_period_start")),
                name="subscription_period_order",
            ),
            models.CheckConstraint(condition=models.Q(debt_amount__gte=0), name="subscription_debt_non_negative"),
            models.CheckConstraint(condition=models.Q(debt_amount__lte=UINT256_MAX), name="subscription_debt_uint256"),
        ]
        indexes = [models.Index(fields=["status", "current_period_end"], name="subscription_due_idx")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.plan_id} {self.status}"
