# Partial indexes for the scrape-time gauges of /metrics (billing.selectors.metrics_snapshot): open payments
# by status and network, live subscriptions by plan, both answered by index-only scans. Built concurrently:
# the ledger keeps taking writes while they build.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0012_rpc_settings_bounds"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="paymenttransaction",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "submitted", "needs_review", "unmatched"])),
                fields=["status", "network"],
                include=("created_at", "submitted_at", "updated_at"),
                name="tx_open_metrics_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="subscription",
            index=models.Index(
                condition=models.Q(("status__in", ["active", "past_due"])),
                fields=["plan", "status"],
                name="subscription_live_plan_idx",
            ),
        ),
    ]
