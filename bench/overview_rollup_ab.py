#!/usr/bin/env python
"""The dashboard with and without the daily revenue rollup, interleaved round by round in one process (both see
the same load on a shared machine), next to bench/overview.py's hand-written SQL.

    BENCH_DATABASE_URL=... .venv/bin/python bench/overview_rollup_ab.py [--runs 30] [--period 30d]

Uses bench/overview.py's database (seeded by it when missing or of other sizes). "ledger only" is
`overview.selectors.dashboard` with `split_days` patched to read both windows from the ledger, the read before
the rollup; the two answers are compared first and must be equal. Prints p50/p95/min wall milliseconds of each
and the load average."""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    from _timing import ledger_bench_setup, p95

    args, url = ledger_bench_setup(__doc__.splitlines()[0], runs=30)
    # bench/overview.py (its module name is the overview app's, so it is loaded by path): its database, seeded
    # when missing, and its baseline
    spec = importlib.util.spec_from_file_location("bench_overview", ROOT / "bench" / "overview.py")
    bench_overview = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_overview)
    bench_overview._ensure_database(url, args)
    import django

    django.setup()
    from unittest import mock

    from django.db import connection, transaction
    from django.utils import timezone

    from overview import selectors as ov
    from overview.periods import resolve_period

    hand_sql = bench_overview.HAND_SQL

    period = resolve_period(name=args.period, start=None, end=None, now=timezone.now())
    params = {"start": period.start, "end": period.end, "prev": period.previous.start}

    def ledger_only(p):
        return [], [(p.previous.start, p.end)]

    def rollup():
        return ov.dashboard(period=period)

    def ledger():
        with mock.patch.object(ov, "split_days", ledger_only):
            return ov.dashboard(period=period)

    def hand():
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL jit = off")
            cur.execute("SET LOCAL work_mem = '64MB'")
            cur.execute(hand_sql, params)
            cur.fetchall()

    if rollup() != ledger():
        print("the rollup read and the ledger read differ")
        return 1
    calls = {"rollup": rollup, "ledger only": ledger, "hand SQL": hand}
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    load = os.getloadavg()[0]
    for _ in range(args.runs):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    print(f"{args.runs} rounds, period {args.period}, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    for name, values in times.items():
        print(f"{name:12} p50 {statistics.median(values):7.1f}  p95 {p95(values):7.1f}  min {min(values):7.1f} ms")
    from _report import result

    result(
        "overview",
        "dashboard p95, rollup read against the ledger-only read (interleaved)",
        p95(times["rollup"]),
        unit="ms",
        baseline=p95(times["ledger only"]),
        baseline_label="ledger-only read p95",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
