# The daily revenue rollup (billing.models.rollup.RevenueRollup) and the PostgreSQL triggers that keep it in
# step with the ledger, then the backfill from the rows already there.
#
# Why triggers: a payment's status, amount, rates, dates, network, plan or customer change through many paths
# (transaction_set_status, the follower's bulk SQL in payments_apply_in_bulk, refunds, reorg rollbacks and
# re-verification, operator-transaction settlement, the admin, seed_demo). A statement-level AFTER trigger with
# transition tables runs inside the writing statement's transaction, sees exactly the rows it changed (before
# and after), and catches every path, raw SQL and bulk_update included; one aggregate per statement, so a bulk
# write of a million rows costs one GROUP BY, not a million upserts. Rows a statement changes without touching
# the sums (claims, receipt checks, checkouts still pending) add nothing and lock nothing.
#
# No waits and no deadlocks: a write never updates a shared counter row in place. It appends its difference
# per key and, in the same statement, folds into it the key's rows that no other transaction holds (FOR UPDATE
# SKIP LOCKED, deleted and summed), so a key keeps one row plus one per writer in flight. Two transactions
# confirming payments of the same day, token and plan never wait for each other here, whatever their order.
#
# The backfill runs after the triggers are created, in this migration's transaction: CREATE TRIGGER holds a
# lock that keeps writers to the ledger out until the commit, so no write falls between the two.
# TRUNCATE fires no trigger: truncate the rollup with the ledger (Django's flush truncates both), or call
# billing_revenue_rollup_rebuild() (billing.services.rollup.revenue_rollup_rebuild) after a load that skipped
# triggers (session_replication_role = replica, as bench/_overview_seed.py).

from django.db import migrations, models


def contributions(rel: str, sign: int) -> str:
    """What each row of `rel` adds to the rollup: its gross part and its refund part (docs/overview.md)."""
    return f"""
        SELECT 'gross'::varchar AS kind, (r.confirmed_at AT TIME ZONE 'UTC')::date AS day, r.network_id,
               r.token_id, r.plan_id, {sign} * r.amount AS amount,
               {sign} * r.amount * COALESCE(r.usd_rate_at_confirmation, r.usd_rate_at_checkout) AS usd,
               CASE WHEN r.usd_rate_at_confirmation IS NULL AND r.usd_rate_at_checkout IS NULL
                    THEN {sign} * r.amount ELSE 0 END AS unrated,
               {sign} AS n
        FROM {rel} r
        WHERE r.user_id IS NOT NULL AND r.status IN ('confirmed', 'refunded') AND r.confirmed_at IS NOT NULL
        UNION ALL
        SELECT 'refund'::varchar, (r.refunded_at AT TIME ZONE 'UTC')::date, r.network_id, r.token_id, r.plan_id,
               {sign} * r.amount,
               {sign} * r.amount * COALESCE(r.usd_rate_at_confirmation, r.usd_rate_at_checkout),
               CASE WHEN r.usd_rate_at_confirmation IS NULL AND r.usd_rate_at_checkout IS NULL
                    THEN {sign} * r.amount ELSE 0 END,
               {sign}
        FROM {rel} r
        WHERE r.user_id IS NOT NULL AND r.status = 'refunded' AND r.refunded_at IS NOT NULL
    """


KEY = "kind, day, network_id, token_id, plan_id"
NONZERO = "SUM(n) <> 0 OR SUM(amount) <> 0 OR COALESCE(SUM(usd), 0) <> 0 OR SUM(unrated) <> 0"


def fold(contrib: str) -> str:
    return f"""
        WITH delta AS (
            SELECT {KEY}, SUM(amount) AS amount, COALESCE(SUM(usd), 0) AS usd, SUM(unrated) AS unrated,
                   SUM(n) AS n
            FROM ({contrib}) c
            GROUP BY {KEY}
            HAVING {NONZERO}
        ),
        folded AS (
            DELETE FROM billing_revenuerollup t
            WHERE t.id IN (
                SELECT h.id FROM billing_revenuerollup h
                JOIN delta d ON h.kind = d.kind AND h.day = d.day AND h.network_id = d.network_id
                    AND h.token_id = d.token_id AND h.plan_id IS NOT DISTINCT FROM d.plan_id
                ORDER BY h.id
                FOR UPDATE OF h SKIP LOCKED
            )
            RETURNING t.kind, t.day, t.network_id, t.token_id, t.plan_id, t.amount, t.usd, t.unrated, t.n
        )
        INSERT INTO billing_revenuerollup ({KEY}, amount, usd, unrated, n)
        SELECT {KEY}, SUM(amount), SUM(usd), SUM(unrated), SUM(n)
        FROM (SELECT * FROM delta UNION ALL SELECT * FROM folded) x
        GROUP BY {KEY}
        HAVING {NONZERO};
    """


SQL = f"""
CREATE FUNCTION billing_revenue_rollup_apply() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {fold(contributions("new_rows", 1))}
    ELSIF TG_OP = 'UPDATE' THEN
        {fold(contributions("new_rows", 1) + " UNION ALL " + contributions("old_rows", -1))}
    ELSE
        {fold(contributions("old_rows", -1))}
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER billing_revenue_rollup_ins AFTER INSERT ON billing_paymenttransaction
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION billing_revenue_rollup_apply();
CREATE TRIGGER billing_revenue_rollup_upd AFTER UPDATE ON billing_paymenttransaction
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION billing_revenue_rollup_apply();
CREATE TRIGGER billing_revenue_rollup_del AFTER DELETE ON billing_paymenttransaction
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION billing_revenue_rollup_apply();

CREATE FUNCTION billing_revenue_rollup_rebuild() RETURNS void LANGUAGE sql AS $fn$
    LOCK TABLE billing_paymenttransaction IN SHARE MODE;
    DELETE FROM billing_revenuerollup;
    INSERT INTO billing_revenuerollup ({KEY}, amount, usd, unrated, n)
    SELECT {KEY}, SUM(amount), COALESCE(SUM(usd), 0), SUM(unrated), SUM(n)
    FROM ({contributions("billing_paymenttransaction", 1)}) c
    GROUP BY {KEY};
$fn$;

SELECT billing_revenue_rollup_rebuild();
"""

REVERSE = """
DROP TRIGGER billing_revenue_rollup_ins ON billing_paymenttransaction;
DROP TRIGGER billing_revenue_rollup_upd ON billing_paymenttransaction;
DROP TRIGGER billing_revenue_rollup_del ON billing_paymenttransaction;
DROP FUNCTION billing_revenue_rollup_apply();
DROP FUNCTION billing_revenue_rollup_rebuild();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0017_reverify_claims"),
    ]

    operations = [
        migrations.CreateModel(
            name="RevenueRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("gross", "Gross"), ("refund", "Refund")], max_length=8)),
                ("day", models.DateField(help_text="UTC day of confirmed_at (gross) or refunded_at (refund).")),
                ("network_id", models.BigIntegerField()),
                ("token_id", models.BigIntegerField()),
                ("plan_id", models.BigIntegerField(blank=True, null=True)),
                (
                    "amount",
                    models.DecimalField(decimal_places=0, help_text="Sum of amounts, smallest unit.", max_digits=100),
                ),
                (
                    "usd",
                    models.DecimalField(
                        decimal_places=8,
                        help_text="Sum of amount x stored USD rate over rated payments.",
                        max_digits=130,
                    ),
                ),
                (
                    "unrated",
                    models.DecimalField(decimal_places=0, help_text="Sum of amounts without a rate.", max_digits=100),
                ),
                ("n", models.BigIntegerField(help_text="Payments.")),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["kind", "day", "network_id", "token_id", "plan_id"],
                        include=("amount", "usd", "unrated", "n"),
                        name="revenue_rollup_key_idx",
                    )
                ],
            },
        ),
        migrations.RunSQL(SQL, REVERSE),
    ]
