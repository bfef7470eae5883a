"""bench/metrics.py in small mode: it seeds its own database, times the scrape-time database gauges and the
/metrics view beside the naive full-ledger GROUP BY, explains every statement, and measures a counter
increment in multiprocess and in-process mode (the full run, at a million payments, is `make bench`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def bench_database():
    name = f"{os.environ.get('TEST_DATABASE_NAME', 'test_billing')}_bench_metrics"
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_small_run_prints_the_scrape_beside_the_naive_gauge_and_the_hot_path(bench_database):
    env = {**os.environ, "BENCH_DATABASE_URL": bench_database}
    env.pop("DATABASE_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    run = subprocess.run(
        [sys.executable, "bench/metrics.py", "--payments", "3000", "--subscriptions", "300", "--days", "90"]
        + ["--runs", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
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
