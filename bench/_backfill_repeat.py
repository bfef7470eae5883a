#!/usr/bin/env python
"""Profiling aid for the chain backfill (not part of `make bench`): bench/backfill.py's world (anvil, N Paid
events, the ledger rows) built once on the embedded PostgreSQL, then the backfill run R times, each on a fresh
copy of the database (CREATE DATABASE ... TEMPLATE), with bench/backfill.py's own measurement and report plus:
seconds and count per SQL statement, the PostgreSQL backend's CPU during the backfill (/proc/<pid>/stat), the
commits' time, the garbage collector's collections (gc.callbacks), and optionally EXPLAIN (ANALYZE, BUFFERS) of
the statements starting with one of `--explain` (separated by |; each run once more inside a savepoint).

    .venv/bin/python bench/_backfill_repeat.py [--events 4000] [--runs 3] [--per-block 8] [--profile FILE]
        [--explain "UPDATE billing_paymenttransaction|WITH r AS"]

--profile writes a cProfile of the last run with time.process_time as its clock (CPU only: waits for
PostgreSQL do not hide the Python)."""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-block", type=int, default=8)
    parser.add_argument("--profile", default="")
    parser.add_argument("--explain", default="")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ.pop("REDIS_URL", None)
    tmp = tempfile.mkdtemp(prefix="bench-backfill-repeat-")
    from backfill import embedded_database

    url, stop_db = embedded_database(tmp)
    import cProfile

    import django

    django.setup()
    import backfill as bench
    import psycopg
    from django.db import connection, connections
    from django.db.backends.base.base import BaseDatabaseWrapper

    from billing.models import PaymentContract
    from tests.anvil import Anvil

    profile_class = cProfile.Profile
    cProfile.Profile = lambda: profile_class(time.process_time)  # bench._measure builds its profiler so
    timers: dict[str, float] = {}
    real_commit = BaseDatabaseWrapper.commit

    def commit(self):
        started = time.perf_counter()
        try:
            return real_commit(self)
        finally:
            timers["commits"] = timers.get("commits", 0.0) + time.perf_counter() - started

    BaseDatabaseWrapper.commit = commit
    gc_started = [0.0]

    def gc_timer(phase, info):
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            key = f"gc gen{info['generation']}"
            timers[key] = timers.get(key, 0.0) + time.perf_counter() - gc_started[0]

    gc.callbacks.append(gc_timer)
    admin = url.replace("/billing_bench", "/postgres")

    def admin_sql(sql: str) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql)

    def backend_cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    explain = [p for p in args.explain.split("|") if p]
    real_in_process = bench._in_process

    def in_process(*a, **k):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        statements: dict[str, list] = {}

        def per_statement(execute, sql, params, many, context):
            flat = " ".join(sql.split())
            if any(flat.startswith(p) for p in explain):
                with connection.cursor() as cursor:
                    cursor.execute("SAVEPOINT bench_explain")
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                    print("\n".join("      " + row[0] for row in cursor.fetchall()))
                    cursor.execute("ROLLBACK TO SAVEPOINT bench_explain")
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                seen = statements.setdefault(" ".join(flat.split()[:5])[:70], [0.0, 0])
                seen[0] += time.perf_counter() - started
                seen[1] += 1

        cpu = backend_cpu(pid)
        with connection.execute_wrapper(per_statement):
            result = real_in_process(*a, **k)
        print(f"PostgreSQL backend CPU during the backfill: {backend_cpu(pid) - cpu:.2f} s")
        for head, (seconds, count) in sorted(statements.items(), key=lambda x: -x[1][0])[:12]:
            print(f"   {seconds:.3f} s x{count} {head}")
        return result

    bench._in_process = in_process
    try:
        with Anvil() as anvil:
            world = bench._world(anvil, args.events, max(1, args.events // 2), args.per_block)
            connections.close_all()
            admin_sql("CREATE DATABASE billing_bench_world TEMPLATE billing_bench")
            for run in range(args.runs):
                connections.close_all()
                admin_sql("DROP DATABASE billing_bench WITH (FORCE)")
                admin_sql("CREATE DATABASE billing_bench TEMPLATE billing_bench_world")
                world.contract = PaymentContract.objects.get(pk=world.contract.pk)
                world.network = world.contract.network
                last = run == args.runs - 1
                options = argparse.Namespace(mode="embedded", profile=args.profile if last else "")
                print(f"--- run {run + 1} of {args.runs}, load average {os.getloadavg()[0]:.2f}", flush=True)
                timers.clear()
                bench._measure(anvil, world, options)
                print("timers: " + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(timers.items())), flush=True)
    finally:
        connections.close_all()
        stop_db()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
