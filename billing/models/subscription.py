from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import DateTimeRangeField, RangeOperators
from django.db import models
from django.db.models import Func

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
    """A user's access to plans over time. At most one live (active or past due) per user.

    What was paid lives in `SubscriptionPeriod` rows; `plan`, `status`, `current_period_start/end` and
    `pending_plan/pending_period_end` are derived from them by `billing.services.subscriptions` in the
    same transaction as every change (docs/subscriptions.md), so readers can keep using them."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    pending_plan = models.ForeignKey(
        Plan,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Derived: the plan of the paid time that follows the current period (another plan), if any.",
    )
    pending_period_end = models.DateTimeField(
        null=True, blank=True, help_text="Derived: the end of the pending plan's paid time."
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
        indexes = [
            models.Index(fields=["status", "current_period_end"], name="subscription_due_idx"),
            # /metrics: live subscriptions by plan, an index-only scan.
            models.Index(
                fields=["plan", "status"],
                condition=models.Q(status__in=["active", "past_due"]),
                name="subscription_live_plan_idx",
            ),
            # overview.selectors.subscription_figures: the steady subscriptions (not ended, paid through the
            # window's end, started and on their plan before it) counted per plan by an index-only scan.
            models.Index(
                fields=["plan", "current_period_end", "created_at", "current_period_start"],
                condition=models.Q(ended_at__isnull=True),
                name="subscription_steady_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.plan_id} {self.status}"


class PeriodKind(models.TextChoices):
    PAYMENT = "payment"  # bought by a payment that started or changed the plan (or was queued as a downgrade)
    RENEWAL = "renewal"  # bought by a payment for the plan already in force, queued after what is paid
    UPGRADE_CREDIT = "upgrade_credit"  # the unused time of a replaced period, converted to the new plan
    MIGRATED = "migrated"  # written from the old subscription fields by migration 0007
    ADMIN = "admin"  # granted by an operator


class PeriodStatus(models.TextChoices):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # its payment was removed by a reorg and is under review
    REMOVED = "removed"  # its payment was refunded
    REPLACED = "replaced"  # an upgrade started before it and its whole time became an upgrade credit


class TsTzRange(Func):
    """tstzrange(start, end): half-open [start, end), as the periods are."""

    function = "TSTZRANGE"
    output_field = DateTimeRangeField()


class SubscriptionPeriod(models.Model):
    """One paid period: what a payment (or an upgrade credit, a migration, an operator) bought, on which
    plan, from when to when. Active periods of one subscription never overlap (an exclusion constraint);
    the plan in force at time t is the plan of the active period covering t."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="periods")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    transaction = models.ForeignKey(
        "billing.PaymentTransaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="subscription_periods",
        help_text="The payment whose money bought this time (empty for migrated or operator-made periods).",
    )
    credit_for = models.ForeignKey(
        "billing.PaymentTransaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="credit_periods",
        help_text="For an upgrade credit: the upgrade payment whose price per second converted the unused time.",
    )
    kind = models.CharField(max_length=16, choices=PeriodKind.choices)
    status = models.CharField(max_length=16, choices=PeriodStatus.choices, default=PeriodStatus.ACTIVE)
    suspended_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="period_order"),
            models.CheckConstraint(
                condition=models.Q(kind__in=[k.value for k in PeriodKind]), name="period_kind_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in PeriodStatus]), name="period_status_valid"
            ),
            # Checked at the end of each rule (billing.services.subscriptions sets it IMMEDIATE there), so a
            # rule may move several periods in any order inside one transaction.
            ExclusionConstraint(
                name="period_no_overlap",
                expressions=[
                    ("subscription", RangeOperators.EQUAL),
                    (TsTzRange("starts_at", "ends_at"), RangeOperators.OVERLAPS),
                ],
                condition=models.Q(status="active"),
                deferrable=models.Deferrable.IMMEDIATE,
            ),
        ]
        indexes = [
            # "the period covering t for subscription s" and the subscription's timeline, in order.
            models.Index(fields=["subscription", "status", "starts_at"], name="period_timeline_idx"),
            # overview reads: periods in force over a time range, per plan.
            models.Index(fields=["status", "starts_at", "ends_at"], name="period_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.subscription_id}:{self.plan_id} {self.starts_at:%Y-%m-%d}..{self.ends_at:%Y-%m-%d} {self.status}"

    @property
    def duration(self):
        return self.ends_at - self.starts_at
