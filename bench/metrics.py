#!/usr/bin/env python
"""What metrics cost: the scrape-time database gauges on a real-size ledger, and a counter on the hot path.

    .venv/bin/python bench/metrics.py [--payments 1000000] [--subscriptions 100000] [--runs 30]

1. Scrape. `billing.selectors.metrics_snapshot()` (every database gauge of /metrics) and the whole /metrics
   view, warm, `--runs` times each (p50/p95 wall, SQL statements per call). Baseline, interleaved with them in
   the same run: the statement a naive "transactions by status, network and token" gauge would run over the
   ledger (`SELECT status, network_id, token_id, count(*) ... GROUP BY`), and the ratio. Then EXPLAIN of each
   statement the snapshot sent: the plan must not scan the ledger (Seq Scan on billing_paymenttransaction).
   Same database as bench/overview.py (BENCH_DATABASE_URL, default billing_bench_overview, seeded once by
   bench/_overview_seed.py and reused while it has the asked sizes).
2. Hot path. One `billing_transactions_total` increment, in a fresh process per mode: prometheus_client's
   multiprocess mode (a memory-mapped file, what gunicorn and Celery use) against its default in-process
   mode, 200,000 increments each; yardstick: one `SELECT 1` round trip to PostgreSQL from the same process
   (a status change sends at least four statements).

Exits 0 whether or not the targets are met (the figures are the result), 1 if a scrape fails or a plan
scans a ledger of 100,000 rows or more.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
INCREMENTS = 200_000
SMALL_LEDGER = 100_000
NAIVE_SQL = (
    "SELECT status, network_id, token_id, count(*) FROM billing_paymenttransaction "
    "GROUP BY status, network_id, token_id"
)

HOT_PATH = """
import json, os, sys, time
from billing import metrics
counter = metrics.TRANSACTIONS.labels(status="confirmed", network="bench", token="USDC")
n = int(sys.argv[1])
for _ in range(1000):
    counter.inc()
t0 = time.perf_counter()
for _ in range(n):
    metrics.TRANSACTIONS.labels(status="confirmed", network="bench", token="USDC").inc()
per_inc = (time.perf_counter() - t0) / n * 1e6
import psycopg
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    for _ in range(20):
        conn.execute("SELECT 1").fetchone()
    t0 = time.perf_counter()
    for _ in range(500):
        conn.execute("SELECT 1").fetchone()
    select1 = (time.perf_counter() - t0) / 500 * 1e6
print(json.dumps({"inc_us": per_inc, "select1_us": select1}))
"""


from _timing import p95  # noqa: E402  (bench/ is the script's folder, first on sys.path)


def hot_path(url: str) -> dict[str, dict]:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("multiprocess", "in-process"):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            env["DATABASE_URL"] = url
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            done = subprocess.run(
                [sys.executable, "-c", HOT_PATH, str(INCREMENTS)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--runs", type=int, default=30)
    args, _ = parser.parse_known_args()  # bench/run_all.py passes its arguments to every script
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_overview")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ["METRICS_BEARER_TOKEN"] = ""
    load_before = os.getloadavg()
    spec = importlib.util.spec_from_file_location("bench_overview", ROOT / "bench" / "overview.py")
    bench_overview = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_overview)
    bench_overview._ensure_database(url, args)  # the same seeded ledger as bench/overview.py

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)  # a ledger seeded before the newest indexes gets them

    from billing.selectors import metrics_snapshot

    with connection.cursor() as cur:
        cur.execute("VACUUM (ANALYZE) billing_paymenttransaction, billing_subscription")  # as autovacuum leaves them
        cur.execute("SELECT count(*) FROM billing_paymenttransaction")
        payments = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM billing_subscription WHERE status IN ('active', 'past_due')")
        live = cur.fetchone()[0]

    sent: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):
        sent.append((sql, params))
        return execute(sql, params, many, context)

    def naive() -> None:
        with connection.cursor() as cur:
            cur.execute(NAIVE_SQL)
            cur.fetchall()

    client = Client()

    def scrape() -> None:
        response = client.get("/metrics")
        if response.status_code != 200 or b"billing_metrics_database_up 1.0" not in response.content:
            raise RuntimeError(f"/metrics answered {response.status_code}")

    def timed(call) -> dict:
        for _ in range(2):
            call()
            naive()
        walls, bases, statements = [], [], 0
        for _ in range(args.runs):
            sent.clear()
            with connection.execute_wrapper(record):
                t0 = time.perf_counter()
                call()
                walls.append((time.perf_counter() - t0) * 1000)
            statements += len(sent)
            t0 = time.perf_counter()
            naive()
            bases.append((time.perf_counter() - t0) * 1000)
        return {"walls": walls, "bases": bases, "sql": statements / args.runs}

    print(
        f"ledger: {payments} payments, {live} live subscriptions; {args.runs} warm runs each, each followed by one "
        f"run of the baseline; load average before {load_before[0]:.2f} on {os.cpu_count()} cores"
    )
    print("baseline: a GROUP BY status, network, token over the whole ledger (what a naive gauge would run)")
    print(f"{'scrape':18} {'p50 ms':>8} {'p95 ms':>8} {'sql':>5} {'base p50':>9} {'base p95':>9} {'p50/base':>9}")
    for name, call in (("database gauges", metrics_snapshot), ("/metrics view", scrape)):
        r = timed(call)
        p50, b50 = statistics.median(r["walls"]), statistics.median(r["bases"])
        print(
            f"{name:18} {p50:8.1f} {p95(r['walls']):8.1f} {r['sql']:5.0f} {b50:9.1f} {p95(r['bases']):9.1f} "
            f"{p50 / b50:9.3f}"
        )
        from _report import result

        result(
            "metrics",
            f"{name} p50 at {payments:,} payments",
            p50,
            unit="ms",
            baseline=b50,
            baseline_label="naive GROUP BY over the ledger, p50",
        )

    # The plans of what the snapshot sends: none may read the whole ledger.
    sent.clear()
    with connection.execute_wrapper(record):
        metrics_snapshot()
    scans = []
    with connection.cursor() as cur:
        for sql, params in sent:
            if not sql.lstrip().upper().startswith("SELECT") or "set_config" in sql:
                continue
            cur.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
            if "Seq Scan on billing_paymenttransaction" in plan:
                scans.append(sql[:120])
    print(f"plans: {len(sent)} statements, {len(scans)} scanning the ledger" + (f": {scans}" if scans else ""))
    small = payments < SMALL_LEDGER
    if scans and small:
        print(f"  (a ledger under {SMALL_LEDGER} rows: the planner may rightly prefer a scan; not an error)")

    hot = hot_path(url)
    multi, single = hot["multiprocess"], hot["in-process"]
    print(f"hot path, {INCREMENTS} increments of billing_transactions_total (labels() + inc()) per mode:")
    print(f"  multiprocess (mmap file)  {multi['inc_us']:6.2f} us per increment")
    print(
        f"  in-process (default)      {single['inc_us']:6.2f} us per increment  "
        f"ratio {multi['inc_us'] / single['inc_us']:.2f}"
    )
    print(
        f"  yardstick: SELECT 1 round trip {multi['select1_us']:.0f} us: one increment is "
        f"{multi['inc_us'] / multi['select1_us'] * 100:.1f}% of one database statement"
    )
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} (other work on the machine inflates wall times)")
    return 1 if scans and not small else 0


if __name__ == "__main__":
    sys.exit(main())
