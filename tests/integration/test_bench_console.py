"""bench/console.py in small mode: it seeds its own database (bench/_overview_seed.py), requests the
transactions tab (unfiltered and filtered) and the Overview with its lazy parts as a billing_admin, and prints
each page's figures beside its selector's (the full run, at a million payments, is `make bench`)."""

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
PAGES = (
    "transactions",
    "transactions?filtered",
    "overview page",
    "part revenue",
    "part networks",
    "part payouts",
    "part incidents",
)
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def bench_database():
    name = f"{os.environ.get('TEST_DATABASE_NAME', 'test_billing')}_bench_console"
    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_small_run_times_every_page_beside_its_selector(bench_database):
    env = {**os.environ, "BENCH_DATABASE_URL": bench_database}
    env.pop("DATABASE_URL", None)
    args = ["--payments", "2000", "--subscriptions", "200", "--days", "60", "--runs", "2"]
    run = subprocess.run(
        [sys.executable, "bench/console.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-3000:]
    ledger = re.search(r"ledger: (\d+) payments, (\d+) subscriptions", out)
    assert ledger and int(ledger.group(1)) == 2000, out
    number = r"\s+([\d.]+)"
    rows = {
        m.group(1).strip(): [float(x) for x in m.groups()[1:]]
        for m in re.finditer(r"^(\s*[\w?]+(?: \w+)?)" + number * 8, out, re.MULTILINE)
    }
    assert set(rows) == set(PAGES), out
    for page, (p50, p95, cpu, sql, b50, b95, r50, r95) in rows.items():
        assert 0 < p50 <= p95 and cpu > 0 and sql >= 1 and 0 < b50 <= b95, (page, out)
        assert abs(r50 - p50 / b50) <= 0.01 * max(1, r50) + 0.01, (page, out)  # the ratio is of the printed figures
    verdicts = re.findall(r"(PASS|OVER) \(target p95 <= 300 ms\)", out)
    assert len(verdicts) == 3, out  # the transactions tab twice and the Overview page
