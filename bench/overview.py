#!/usr/bin/env python
"""How fast the overview answers on a real-size ledger: every /v1/billing/overview/* endpoint, warm, next to one
hand-written SQL aggregate over the raw tables that computes the dashboard's figures.

    .venv/bin/python bench/overview.py [--payments 1000000] [--subscriptions 100000] [--runs 50] [--period 30d]

Uses its own database (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/billing_bench_overview),
seeded once by bench/_overview_seed.py (INSERT ... SELECT FROM generate_series; reused while it has the asked
sizes). Each endpoint is called in-process through Django's test client as a support user: 2 warm-up calls, then
--runs timed calls (p50/p95 wall time, CPU time of this process per call, SQL statements per call). Baseline,
measured in the same run and interleaved with them (one baseline run after each call, so both see the same
load on a shared machine): the hand-written SQL (HAND_SQL). Target: dashboard p95 <= 150 ms and <= 3x the
baseline's p95. Exits 0 whether the target is met or not (the figures are the result), 1 if an endpoint fails.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
TARGET_P95_MS = 150
TARGET_RATIO = 3.0
ENDPOINTS = ("dashboard", "revenue", "networks", "payouts", "incidents", "experiments")

# The dashboard's figures straight from the raw tables, in one statement: money received, refunded and paid in
# fees per token, checkouts by outcome, subscriptions in force / past due / new / churned and MRR per plan, for
# the window and the previous one. It skips what the real dashboard adds on top (the plan in force before an
# upgrade, per-token USD rates, debt, segments, rendering): the floor a dashboard on the raw ledger cannot beat.
HAND_SQL = """
WITH nets AS MATERIALIZED (SELECT array_agg(id) AS ids FROM billing_network WHERE NOT is_testnet),
paid AS (
    SELECT t.token_id, t.confirmed_at >= %(start)s AS cur, SUM(t.amount) AS amount,
           SUM(t.amount * COALESCE(t.usd_rate_at_confirmation, t.usd_rate_at_checkout)) AS usd
    FROM billing_paymenttransaction t
    WHERE t.status IN ('confirmed', 'refunded') AND t.user_id IS NOT NULL
      AND t.network_id = ANY((SELECT ids FROM nets)::bigint[])
      AND t.confirmed_at >= %(prev)s AND t.confirmed_at < %(end)s
    GROUP BY 1, 2),
refunds AS (
    SELECT t.token_id, t.refunded_at >= %(start)s AS cur, SUM(t.amount) AS amount
    FROM billing_paymenttransaction t
    WHERE t.status = 'refunded' AND t.user_id IS NOT NULL AND t.network_id = ANY((SELECT ids FROM nets)::bigint[])
      AND t.refunded_at >= %(prev)s AND t.refunded_at < %(end)s
    GROUP BY 1, 2),
fees AS (
    SELECT o.network_id, o.mined_at >= %(start)s AS cur, SUM(o.fee) AS fee
    FROM billing_operatortransaction o
    WHERE o.fee IS NOT NULL AND o.status IN ('mined', 'reverted')
      AND o.network_id = ANY((SELECT ids FROM nets)::bigint[])
      AND o.mined_at >= %(prev)s AND o.mined_at < %(end)s
    GROUP BY 1, 2),
checkouts AS (
    SELECT t.created_at >= %(start)s AS cur, COUNT(*) AS started,
           COUNT(*) FILTER (WHERE t.status = 'failed') AS failed,
           COUNT(*) FILTER (WHERE t.status IN ('confirmed', 'refunded', 'needs_review')) AS ok
    FROM billing_paymenttransaction t
    WHERE t.user_id IS NOT NULL AND t.network_id = ANY((SELECT ids FROM nets)::bigint[])
      AND t.created_at >= %(prev)s AND t.created_at < %(end)s
    GROUP BY 1),
subs AS (
    SELECT s.plan_id,
           COUNT(*) FILTER (WHERE s.created_at < %(end)s AND COALESCE(s.ended_at >= %(end)s, true)
                            AND s.current_period_end >= %(end)s) AS active_now,
           COUNT(*) FILTER (WHERE s.created_at < %(start)s AND COALESCE(s.ended_at >= %(start)s, true)
                            AND s.current_period_end >= %(start)s) AS active_before,
           COUNT(*) FILTER (WHERE s.created_at < %(end)s AND COALESCE(s.ended_at >= %(end)s, true)
                            AND s.current_period_end < %(end)s AND NOT s.cancel_at_period_end) AS past_due,
           COUNT(*) FILTER (WHERE s.created_at >= %(start)s AND s.created_at < %(end)s) AS new,
           COUNT(*) FILTER (WHERE s.ended_at >= %(start)s AND s.ended_at < %(end)s) AS churned
    FROM billing_subscription s
    WHERE s.created_at < %(end)s AND (s.ended_at IS NULL OR s.ended_at >= %(prev)s)
    GROUP BY 1)
SELECT 'paid', token_id, cur::int, amount, usd FROM paid
UNION ALL SELECT 'refunds', token_id, cur::int, amount, NULL FROM refunds
UNION ALL SELECT 'fees', network_id, cur::int, fee, NULL FROM fees
UNION ALL SELECT 'checkouts', started, cur::int, failed, ok FROM checkouts
UNION ALL SELECT 'mrr', subs.plan_id, active_now, active_now * p.price_amount, active_before * p.price_amount
    FROM subs JOIN billing_plan p ON p.id = subs.plan_id
UNION ALL SELECT 'subs', past_due, new, churned, NULL FROM subs
"""


def main() -> int:
    from _timing import ledger_bench_setup

    args, url = ledger_bench_setup(__doc__.splitlines()[0], runs=50)
    load_before = os.getloadavg()
    _ensure_database(url, args)

    import django

    django.setup()
    from _timing import interleaved, ledger_size, p95
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.cache import cache
    from django.db import connection, transaction
    from django.test import Client
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from billing.roles import SUPPORT, sync_role_permissions
    from overview.periods import resolve_period

    sync_role_permissions()
    user, _ = get_user_model().objects.get_or_create(username="bench-support", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name=SUPPORT))
    key = Token.objects.get_or_create(user=user)[0].key
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    cache.clear()
    payments, subscriptions = ledger_size()

    window = resolve_period(name=args.period, start=None, end=None, now=timezone.now())
    params = {"start": window.start, "end": window.end, "prev": window.previous.start}

    def hand() -> None:
        # Under the same session settings as the overview's reports (overview.selectors.analytics_read).
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL jit = off")
            cur.execute("SET LOCAL work_mem = '64MB'")
            cur.execute(HAND_SQL, params)
            cur.fetchall()

    def timed(call) -> dict:
        """`runs` calls of `call`, each followed by one of the hand SQL: both see the same load."""
        return interleaved(call, hand, args.runs)

    print(
        f"ledger: {payments} payments, {subscriptions} subscriptions; period {args.period}; "
        f"{args.runs} warm runs each, each followed by one run of the baseline; "
        f"load average before {load_before[0]:.2f} on {os.cpu_count()} cores"
    )
    print("baseline: one hand-written SQL statement computing the dashboard's figures over the raw tables")
    header = f"{'endpoint':12} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>7} {'sql':>5} {'base p50':>9} {'base p95':>9}"
    print(f"{header} {'p50/base':>9} {'p95/base':>9}  verdict")
    failures, pooled = [], []
    for name in ENDPOINTS:
        path = f"/v1/billing/overview/{name}?period={args.period}"
        response = api.get(path)
        if response.status_code != 200:
            print(f"{name:12} HTTP {response.status_code}: {response.content[:200]!r}")
            failures.append(name)
            continue
        r = timed(lambda path=path: api.get(path))
        pooled += r["bases"]
        p50, high = statistics.median(r["walls"]), p95(r["walls"])
        b50, b95 = statistics.median(r["bases"]), p95(r["bases"])
        verdict = ""
        if name == "dashboard":
            ok = high <= TARGET_P95_MS and high <= TARGET_RATIO * b95
            verdict = "PASS" if ok else "OVER"
            verdict += f" (target p95 <= {TARGET_P95_MS} ms and <= {TARGET_RATIO:.0f}x baseline)"
        print(
            f"{name:12} {p50:8.1f} {high:8.1f} {statistics.median(r['cpus']):7.1f} {r['sql']:5.0f} {b50:9.1f} "
            f"{b95:9.1f} {p50 / b50:9.2f} {high / b95:9.2f}  {verdict}"
        )
        if name == "dashboard":
            from _report import result

            result(
                "overview",
                f"dashboard p95 at {payments:,} payments",
                high,
                unit="ms",
                baseline=b95,
                baseline_label="hand-written SQL p95",
                target=f"<= {TARGET_P95_MS} ms and <= {TARGET_RATIO:.0f}x baseline",
                met=high <= TARGET_P95_MS and high <= TARGET_RATIO * b95,
            )
    pooled.sort()
    print(f"baseline over all runs: p50 {statistics.median(pooled):.1f} ms  p95 {p95(pooled):.1f} ms")
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} (other work on the machine inflates wall times, not CPU per call)")
    return 1 if failures else 0


def _ensure_database(url: str, args) -> None:
    """Create, migrate and seed the bench database; reuse it when it already holds the asked sizes."""
    import psycopg

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    sizes = None
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        try:
            with psycopg.connect(url) as conn:
                sizes = conn.execute(
                    # The seed's customers are bench-<n>; the benches' own users (bench-support,
                    # bench-console) must not make a seeded database look the wrong size (a needless re-seed).
                    "SELECT (SELECT count(*) FROM billing_paymenttransaction), (SELECT count(*) FROM auth_user "
                    "WHERE username ~ '^bench-[0-9]+$')"
                ).fetchone()
        except psycopg.Error:
            sizes = None
    if sizes == (args.payments, args.subscriptions):
        return
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if exists:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    import _overview_seed as overview_seed
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"seeding {args.payments} payments for {args.subscriptions} customers over {args.days} days")
    overview_seed.seed(payments=args.payments, subscriptions=args.subscriptions, days=args.days)


if __name__ == "__main__":
    sys.exit(main())
