"""bench/metrics.py in small mode: it seeds its own database, times the scrape-time database gauges and the
/metrics view beside the naive full-ledger GROUP BY, explains every statement, and measures a counter
increment in multiprocess and in-process mode (the full run, at a million payments, is `make bench`)."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import run_bench

pytestmark = pytest.mark.timeout(600)


def test_small_run_prints_the_scrape_beside_the_naive_gauge_and_the_hot_path(bench_database):
    args = ["--payments", "3000", "--subscriptions", "300", "--days", "90", "--runs", "3"]
    run = run_bench("metrics.py", bench_database, *args, unset=("PROMETHEUS_MULTIPROC_DIR",))
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-3000:]
    assert re.search(r"ledger: 3000 payments, \d+ live subscriptions", out), out
    number = r"\s+([\d.]+)"
    rows = {
        m.group(1).strip(): [float(x) for x in m.groups()[1:]]
        for m in re.finditer(r"^(database gauges|/metrics view)" + number * 6, out, re.MULTILINE)
    }
    assert set(rows) == {"database gauges", "/metrics view"}, out
    for name, (p50, p95, sql, b50, b95, ratio) in rows.items():
        assert 0 < p50 <= p95 and 0 < b50 <= b95, name
        assert 5 <= sql <= 14, (name, sql)  # a fixed handful of statements
        # the printed figures are rounded to 0.1 ms: the ratio matches them within that rounding
        assert abs(ratio - p50 / b50) <= ratio * (0.05 / b50 + 0.05 / p50) + 0.002, name
    assert re.search(r"^plans: \d+ statements, \d+ scanning the ledger", out, re.MULTILINE), out
    multi = float(re.search(r"multiprocess \(mmap file\)\s+([\d.]+) us", out).group(1))
    single = float(re.search(r"in-process \(default\)\s+([\d.]+) us", out).group(1))
    assert single > 0 and 0 < multi < 1000, out  # microseconds, not milliseconds
    assert re.search(r"SELECT 1 round trip \d+ us", out), out
