"""The daily revenue rollup (billing.models.rollup.RevenueRollup) is written by PostgreSQL triggers on the
ledger (migration 0018), in the transaction of every write, so no service writes it row by row. This module
only rebuilds it from the ledger, for loads that skip triggers (`session_replication_role = replica`, as the
bench seed does) or after a TRUNCATE of the ledger."""

from __future__ import annotations

from django.db import connection, transaction


@transaction.atomic
def revenue_rollup_rebuild() -> None:
    """Recompute the rollup from the ledger (the database function the backfill ran). It holds a SHARE lock on
    the ledger until the caller's transaction ends: writers wait, so none falls between the read and the
    rollup."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT billing_revenue_rollup_rebuild()")
