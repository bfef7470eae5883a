"""The daily revenue rollup: confirmed (gross) and refunded money per UTC day, network, token and plan.

Kept in step by PostgreSQL itself: statement-level triggers on the ledger (migration 0018) add, in the same
transaction as the write, the difference each INSERT, UPDATE or DELETE of `billing_paymenttransaction` makes
to these sums, whichever code path wrote (services, the follower's bulk SQL, admin, seeds). Nothing in Python
writes here; `billing.services.rollup` only rebuilds it (seeds that skip triggers) and the overview reads it.

A key (day, kind, network, token, plan) may have a few rows at once: each write appends its difference and,
in the same statement, folds the key's rows no other transaction holds into it (`SKIP LOCKED`), so a write
never waits on another one here and two writers cannot deadlock on the rollup. Readers sum the rows of a key.
What the sums mean is exactly the overview's ledger aggregates (docs/overview.md, "Revenue"): only checkout
payments (with a customer); `gross` by `confirmed_at` of payments `confirmed` or `refunded`, `refund` by
`refunded_at` of payments `refunded`.
"""

from __future__ import annotations

from django.db import models


class RevenueRollup(models.Model):
    class Kind(models.TextChoices):
        GROSS = "gross"
        REFUND = "refund"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    day = models.DateField(help_text="UTC day of confirmed_at (gross) or refunded_at (refund).")
    # Plain ids (no foreign keys): the ledger's own keys guard them, and a rollup write locks no catalog row.
    network_id = models.BigIntegerField()
    token_id = models.BigIntegerField()
    plan_id = models.BigIntegerField(null=True, blank=True)
    amount = models.DecimalField(max_digits=100, decimal_places=0, help_text="Sum of amounts, smallest unit.")
    usd = models.DecimalField(
        max_digits=130, decimal_places=8, help_text="Sum of amount x stored USD rate over rated payments."
    )
    unrated = models.DecimalField(max_digits=100, decimal_places=0, help_text="Sum of amounts without a rate.")
    n = models.BigIntegerField(help_text="Payments.")

    class Meta:
        indexes = [
            models.Index(
                fields=["kind", "day", "network_id", "token_id", "plan_id"],
                include=["amount", "usd", "unrated", "n"],
                name="revenue_rollup_key_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.day} net {self.network_id} token {self.token_id} plan {self.plan_id}"
