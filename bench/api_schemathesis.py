#!/usr/bin/env python
"""Schemathesis over the whole API as each role, 1,000 random examples per operation, within a time cap.

    .venv/bin/python bench/api_schemathesis.py [--examples 1000] [--cap-minutes 15] [--workers 2] [--filter EXPR]

Runs tests/integration/test_api_schemathesis.py (the `make test` version sends a few examples plus
schemathesis' coverage cases) with SCHEMATHESIS_EXAMPLES=--examples random examples per operation
(SCHEMATHESIS_PHASES=generate: the coverage cases are `make test`'s), each example sent as anonymous, user,
support and billing_admin with real tokens, every check of the test on: no 5xx, every status documented
(429 included), each answer's schema, content type and headers as documented. Two pytest-xdist workers (one
per core), each with its own test database.

Time cap: the whole run is to finish in --cap-minutes. Each operation gets an even share of it
(SCHEMATHESIS_OP_BUDGET = (cap - start-up allowance) x workers / operations - its fixtures' set-up): once its
share is spent, the operation stops (pytest reports it skipped, with the examples it sent; each of them passed
every check). The figures are what was sent: examples (x 4 roles = requests), per operation and in total,
beside the examples asked for, the failing operations (with the check that failed) and the wall time.

Exits 0 when no operation failed (whether every example fit in the cap or not: the counts say), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
TEST = "tests/integration/test_api_schemathesis.py"
STARTUP_ALLOWANCE = 120  # seconds: test databases (migrate, twice), schema, collection
PER_OPERATION_SETUP = 2.0  # seconds: each operation's fixtures (catalog, users, tokens), outside its share


def count_operations() -> int:
    """Operations of the live OpenAPI schema (what schemathesis parametrizes over)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django

    django.setup()
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return sum(1 for ops in schema["paths"].values() for m in ops if m in methods)


def failures(junit: Path) -> dict[str, str]:
    """Failed operations (test ids) -> the first line naming what failed."""
    found: dict[str, str] = {}
    if not junit.exists():
        return found
    for case in ET.parse(junit).getroot().iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            text = (bad.get("message") or bad.text or "").strip()
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            name = case.get("name", "?")
            found[name] = next((ln for ln in lines if ln.startswith(("-", "E ", "Failed", "1."))), lines[0] if lines
                               else "failed")  # fmt: skip
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="random examples per operation")
    parser.add_argument("--cap-minutes", type=float, default=15.0, help="the whole run's time cap")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    parser.add_argument("--filter", default="", help="pytest -k expression (a subset of operations)")
    args, _ = parser.parse_known_args()  # bench/run_all.py passes its arguments to every script
    started = time.monotonic()
    load_before = os.getloadavg()
    operations = count_operations()
    tmp = Path(tempfile.mkdtemp(prefix="bench-schemathesis-"))
    stats_file, junit = tmp / "stats.jsonl", tmp / "junit.xml"
    cap = args.cap_minutes * 60
    budget = max(2.0, (cap - STARTUP_ALLOWANCE) * args.workers / operations - PER_OPERATION_SETUP)
    env = {
        **os.environ,
        "SCHEMATHESIS_EXAMPLES": str(args.examples),
        "SCHEMATHESIS_PHASES": "generate",
        "SCHEMATHESIS_OP_BUDGET": f"{budget:.1f}",
        "SCHEMATHESIS_STATS": str(stats_file),
        # pytest-timeout per operation: its share, plus one slow example's worth, then it fails.
        "SCHEMATHESIS_TIME_CAP": str(int(budget) + 120),
        "TEST_DATABASE_NAME": os.environ.get("BENCH_TEST_DATABASE_NAME", "test_bench_schemathesis"),
    }
    env.pop("DATABASE_URL", None)
    cmd = [sys.executable, "-m", "pytest", TEST, "--create-db", "-q", f"--junitxml={junit}"]
    cmd += ["-n", str(args.workers), "--dist", "load"] if args.workers > 1 else ["-p", "no:xdist"]
    if args.filter:
        cmd += ["-k", args.filter]
    print(f"schemathesis bench: {operations} operations x {args.examples} random examples x 4 roles, cap "
          f"{args.cap_minutes:g} min, {args.workers} workers, {budget:.1f} s of requests per operation; "
          f"{os.cpu_count()} cores, load average {load_before[0]:.2f}", flush=True)  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    rows = [json.loads(line) for line in stats_file.read_text().splitlines()] if stats_file.exists() else []
    failed = failures(junit)
    if run.returncode not in (0, 1) or not rows:  # 1: tests failed (reported below); anything else: broken run
        print(run.stdout[-4000:] + run.stderr[-4000:])
        print(f"pytest exited {run.returncode} with {len(rows)} operations' counts")
        return 2
    print(f"{'operation':58} {'sent':>6} {'requests':>8} {'s':>7}  result")
    for r in sorted(rows, key=lambda r: r["test"]):
        op = r["test"].split("[", 1)[1].rstrip("]")
        verdict = "FAILED" if r["test"] in failed or r["failed"] else ("budget spent" if r["budget_spent"] else "ok")
        print(f"{op:58} {r['sent']:6d} {r['requests']:8d} {r['seconds']:7.1f}  {verdict}")
    sent = sum(r["sent"] for r in rows)
    requests = sum(r["requests"] for r in rows)
    send_seconds = sum(r["seconds"] for r in rows)
    capped = sum(1 for r in rows if r["budget_spent"])
    complete = sum(1 for r in rows if r["sent"] >= args.examples)
    bad = sorted(set(failed) | {r["test"] for r in rows if r["failed"]})
    load_after = os.getloadavg()
    ran_out = len(rows) - complete - capped
    print(f"operations run: {len(rows)} of {operations}; examples sent {sent} "
          f"(x 4 roles = {requests} requests) of {args.examples * len(rows)} asked; {complete} operations sent "
          f"all {args.examples}, {capped} stopped at their {budget:.1f} s share, {ran_out} ran out of new "
          f"examples first (small input spaces); failing operations: {len(bad)}")  # fmt: skip
    for name in bad:
        print(f"  FAILED {name}: {failed.get(name, 'see pytest output')}")
    per_worker = requests / max(send_seconds, 0.001)
    print(f"wall time {wall:.0f} s (cap {cap:.0f} s), {send_seconds:.0f} s in operations over {args.workers} "
          f"workers, {per_worker:.1f} requests/s per worker; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")  # fmt: skip
    if bad:
        print(run.stdout[-6000:])

    from _report import result

    asked = args.examples * len(rows)
    result("api_schemathesis", "examples sent (each as 4 roles)", sent, unit="examples", baseline=asked,
           baseline_label=f"{args.examples:,} per operation asked", better="higher")  # fmt: skip
    result("api_schemathesis", "operations failing a check", len(bad), unit="operations", baseline=len(rows),
           baseline_label="operations run", target="0", met=not bad)  # fmt: skip
    result("api_schemathesis", "wall time", wall, unit="s", baseline=cap, baseline_label="time cap",
           target=f"<= {cap:.0f} s", met=wall <= cap)  # fmt: skip
    result("api_schemathesis", "requests per worker", per_worker, unit="req/s", better="higher")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
