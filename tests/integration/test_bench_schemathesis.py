"""bench/api_schemathesis.py in small mode: the plans operations, 200 random examples asked per operation and a
one-minute cap, so each operation's share of the cap (the 2 s floor) runs out before its examples do: the
counts printed add up, the operations whose share was spent stopped short of 200 examples (skipped, not
failed), and the figures reach make bench's table (`make bench` asks 1,000 per operation, in 15 minutes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROW = re.compile(r"^((?:GET|POST|PUT|PATCH|DELETE) \S+)\s+(\d+)\s+(\d+)\s+([\d.]+)  (ok|budget spent|FAILED)$", re.M)


def test_schemathesis_bench_small_run():
    env = {**os.environ, "BENCH_TEST_DATABASE_NAME": f"{os.environ.get('TEST_DATABASE_NAME', 'test_billing')}_st"}
    for name in [n for n in env if n == "DATABASE_URL" or n.startswith("PYTEST_XDIST")]:
        env.pop(name)  # the bench's pytest is a run of its own, not this run's xdist worker
    run = subprocess.run(
        [sys.executable, "bench/api_schemathesis.py", "--examples", "200", "--cap-minutes", "1", "--workers", "1",
         "--filter", "admin/plans and not DELETE"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-3000:]
    header = re.search(r"^schemathesis bench: (\d+) operations x 200 random examples x 4 roles, cap 1 min, 1 workers, "
                       r"2\.0 s of requests per operation;", out, re.M)  # fmt: skip
    assert header and int(header.group(1)) >= 60, out
    rows = {m.group(1): [int(m.group(2)), int(m.group(3)), m.group(5)] for m in ROW.finditer(out)}
    assert set(rows) == {
        "GET /v1/billing/admin/plans",
        "POST /v1/billing/admin/plans",
        "GET /v1/billing/admin/plans/{slug}",
        "PUT /v1/billing/admin/plans/{slug}",
        "PATCH /v1/billing/admin/plans/{slug}",
    }, out
    for op, (sent, requests, verdict) in rows.items():
        assert 0 < sent <= 200 and requests == 4 * sent, (op, out)
        assert verdict in ("ok", "budget spent") and (verdict == "ok" or sent < 200), (op, out)
    assert any(verdict == "budget spent" for *_, verdict in rows.values()), out  # the cap really cut them
    sent = sum(r[0] for r in rows.values())
    requests = sum(r[1] for r in rows.values())
    totals = re.search(
        rf"^operations run: 5 of \d+; examples sent {sent} \(x 4 roles = {requests} requests\) of "
        r"1000 asked; .*; failing operations: 0$",
        out,
        re.M,
    )
    assert totals, out
    results = {r["figure"]: r for r in map(json.loads, re.findall(r"^BENCH_RESULT (.*)$", out, re.M))}
    assert results["examples sent (each as 4 roles)"]["value"] == sent
    assert results["examples sent (each as 4 roles)"]["baseline"] == 1000
    assert results["operations failing a check"]["value"] == 0 and results["operations failing a check"]["met"]
    assert results["wall time"]["value"] > 0 and results["requests per worker"]["value"] > 0
