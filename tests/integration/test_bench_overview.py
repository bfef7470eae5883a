"""bench/overview.py in small mode: it seeds its own database, answers every endpoint and prints its figures
beside the hand-written SQL baseline (the full run, at a million payments, is `make bench`)."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import run_bench

pytestmark = pytest.mark.timeout(600)


def test_small_run_prints_every_endpoint_beside_the_baseline(bench_database):
    args = ["--payments", "3000", "--subscriptions", "300", "--days", "90", "--runs", "3"]
    run = run_bench("overview.py", bench_database, *args)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-3000:]
    assert "seeding 3000 payments for 300 customers over 90 days" in out
    ledger = re.search(r"ledger: (\d+) payments, (\d+) subscriptions", out)
    assert ledger and int(ledger.group(1)) == 3000 and 250 <= int(ledger.group(2)) <= 300, out
    baseline = re.search(r"baseline over all runs: p50 ([\d.]+) ms\s+p95 ([\d.]+) ms", out)
    assert baseline and 0 < float(baseline.group(1)) <= float(baseline.group(2)), out
    number = r"\s+([\d.]+)"
    rows = {
        m.group(1): [float(x) for x in m.groups()[1:]] for m in re.finditer(r"^(\w+)" + number * 8, out, re.MULTILINE)
    }
    assert set(rows) == {"dashboard", "revenue", "networks", "payouts", "incidents", "experiments"}, out
    for name, (p50, p95, cpu, sql, b50, b95, ratio50, ratio95) in rows.items():
        assert 0 < p50 <= p95 and 0 < b50 <= b95, name
        assert cpu > 0, name
        assert 1 <= sql <= 40, (name, sql)  # a handful of statements, whatever the ledger's size
        assert abs(ratio50 - p50 / b50) < 0.02 * ratio50 + 0.01, name
    assert re.search(r"^dashboard .* (PASS|OVER) \(target p95 <= 150 ms", out, re.MULTILINE), out

    # A second run reuses the seeded database.
    again = run_bench(
        "overview.py", bench_database, "--payments", "3000", "--subscriptions", "300", "--runs", "2", timeout=300
    )
    assert again.returncode == 0 and "seeding" not in again.stdout, again.stdout + again.stderr[-2000:]
