"""bench/console.py in small mode: it seeds its own database (bench/_overview_seed.py), requests the
transactions tab (unfiltered and filtered) and the Overview with its lazy parts as a billing_admin, and prints
each page's figures beside its selector's (the full run, at a million payments, is `make bench`)."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import run_bench

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


def test_small_run_times_every_page_beside_its_selector(bench_database):
    args = ["--payments", "2000", "--subscriptions", "200", "--days", "60", "--runs", "2"]
    run = run_bench("console.py", bench_database, *args)
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
