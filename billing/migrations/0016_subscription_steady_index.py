# A partial index for the overview's subscription figures (overview.selectors.subscription_figures): the live
# subscriptions counted per plan by an index-only scan, so the per-row classification runs only on those that
# changed around the window. Built concurrently: subscriptions keep taking writes while it builds.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0015_follower_claims"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="subscription",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["plan", "current_period_end", "created_at", "current_period_start"],
                name="subscription_steady_idx",
            ),
        ),
    ]
