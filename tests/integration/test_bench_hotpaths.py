"""bench/checkout.py and bench/webhook_ingest.py in small mode: each starts its own gunicorn (2x4 gthread, as make
run) on a bench database, loads the project path and the bare baseline in the same run and prints both with
the ratio and the targets (the full runs are `make bench`). The first run on a database server also migrates
the bench template (about 30 s); later runs clone it."""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.conftest import run_bench

pytestmark = pytest.mark.timeout(300)
NUMBER = r"\s+([\d.]+)"
ROW = r"^(LABELS)" + NUMBER * 6 + r"%\s+(\d+)\s+(\d+)$"


BENCH_DATABASE_PER_TEST = True  # the bench_database fixture (tests/integration/conftest.py): one per test


def _run(script: str, database: str, *args: str) -> str:
    run = run_bench(script, database, *args, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    return run.stdout


def _rows(out: str, label: str) -> dict[str, list[float]]:
    found = {
        m.group(1): [float(x) for x in m.groups()[1:]]
        for m in re.finditer(ROW.replace("LABELS", label), out, re.MULTILINE)
    }
    for name, (rps, p50, p95, p99, cpu, share, errors, requests) in found.items():
        assert requests > 0 and errors == 0, (name, out)
        assert 0 < p50 <= p95 <= p99 and cpu > 0 and 0 < share < 100, (name, out)
        assert rps > 0, (name, out)
    return found


def _check_ratio(out: str, label: str, project: list[float], baseline: list[float]) -> None:
    ratio = re.search(rf"^ratio {re.escape(label)}: throughput ([\d.]+)x of the baseline, p50 ([\d.]+)x", out, re.M)
    assert ratio, out
    assert float(ratio.group(1)) == pytest.approx(project[0] / baseline[0], rel=0.02, abs=0.01)
    assert float(ratio.group(2)) == pytest.approx(project[1] / baseline[1], rel=0.02, abs=0.01)


def test_checkout_bench_small_run(bench_database):
    out = _run("checkout.py", bench_database, "--seconds", "1", "--warmup", "1", "--clients", "4")
    assert "ECDSA backend CoinCurveECCBackend" in out, out
    rows = _rows(out, r"checkout, sequential|bare baseline, sequential|checkout, 4 clients|bare baseline, 4 clients")
    assert len(rows) == 4, out
    for name in ("sequential", "4 clients"):
        _check_ratio(out, f"checkout, {name}", rows[f"checkout, {name}"], rows[f"bare baseline, {name}"])
    # Every checkout answered 201 wrote exactly one ledger row and one idempotency row.
    ledger = re.search(r"^ledger rows: (\d+), idempotency rows: (\d+)", out, re.M)
    assert ledger and int(ledger.group(1)) == int(ledger.group(2)) >= rows["checkout, sequential"][7], out
    assert re.search(r"^target sequential p95 <= 30 ms: [\d.]+ ms (PASS|OVER)$", out, re.M), out
    assert re.search(r"^target 4 clients >= 110/s: [\d.]+/s (PASS|UNDER)$", out, re.M), out


def test_webhook_bench_small_run(bench_database):
    # One mode here (scaled: the PostgreSQL server, Redis, two Celery worker processes); `make bench` runs both.
    out = _run(
        "webhook_ingest.py", bench_database, "--mode", "scaled", "--seconds", "1", "--warmup", "1",
        "--connections", "8", "--verify-seconds", "20", "--payments", "12",
    )  # fmt: skip
    modes = ["chain up", "chain frozen"] if "webhook, scaled, chain up" in out else ["chain frozen"]
    labels = "|".join(f"webhook, scaled, {m}|bare baseline, scaled, {m}" for m in modes)
    rows = _rows(out, labels)
    assert len(rows) == 2 * len(modes), out
    for mode in modes:
        project, baseline = rows[f"webhook, scaled, {mode}"], rows[f"bare baseline, scaled, {mode}"]
        _check_ratio(out, f"webhook, scaled, {mode}", project, baseline)
    # 20 % repeated ids: about four in five answered deliveries were new and stored, the rest were duplicates.
    for stored, answered in re.findall(r"^  stored (\d+) new deliveries of (\d+) answered", out, re.M):
        assert 0.7 * int(answered) <= int(stored) <= 0.9 * int(answered) + 2, out
    assert re.search(r"^target scaled, chain frozen: .* (PASS|MISS)$", out, re.M), out
    if "chain up" in modes:
        # The workers' side: 12 real payments on anvil, their deliveries accepted, verified on chain by two worker
        # processes and confirmed in the ledger, each once; the rate is (confirmed - 1) / the confirmation span.
        head = re.search(
            r"^workers' verification, scaled, chain up \(worker --concurrency 1 \+ worker --concurrency 1,.*\): "
            r"12 real payments on anvil .*, 12 deliveries accepted \(202\), (\d+) ingest-run deliveries set aside$",
            out,
            re.M,
        )
        assert head and int(head.group(1)) > 0, out
        rate = re.search(
            r"^  payments verified on chain and confirmed in the ledger: (\d+) of 12 in ([\d.]+) s from the first "
            r"confirmation to the last = ([\d.]+) payments/s",
            out,
            re.M,
        )
        assert rate and int(rate.group(1)) == 12, out
        span, per_second = float(rate.group(2)), float(rate.group(3))
        assert span > 0 and per_second == pytest.approx(11 / span, rel=0.02, abs=0.06), out
        assert re.search(
            r"^  each confirmed once: 12 confirmed transitions for 12 orders; deliveries \{'processed': 12\}: "
            r"consistent$",
            out,
            re.M,
        ), out
        base = re.search(r"^  bare baseline, same payments: .* = ([\d.]+) payments/s; ratio ([\d.]+)x$", out, re.M)
        assert base and float(base.group(1)) > 0, out
        assert float(base.group(2)) == pytest.approx(per_second / float(base.group(1)), rel=0.05, abs=0.01), out
        reported = re.search(r'^BENCH_RESULT (\{"bench": "webhook_ingest", "figure": "payments verified.*)$', out, re.M)
        assert reported and json.loads(reported.group(1))["value"] == pytest.approx(per_second, rel=0.01, abs=0.06)
