"""The in-process timing loop the overview, console and metrics benches share, and the other pieces more
than one bench uses (Celery worker stop, one child process per --mode, the ledger database's size).

`interleaved(call, base, runs)`: two warm-up rounds, then `runs` rounds of the measured call followed by one
call of its baseline, so both see the same load; wall and CPU milliseconds of each call, the baseline's wall
milliseconds and the SQL statements per measured call (counted with `connection.execute_wrapper`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[max(0, int(round(len(values) * 0.95)) - 1)]


def interleaved(call: Callable[[], object], base: Callable[[], object], runs: int, *, warmup: int = 2) -> dict:
    from django.db import connection

    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    for _ in range(warmup):
        call()
        base()
    walls, cpus, bases, sql = [], [], [], 0
    for _ in range(runs):
        statements = 0
        with connection.execute_wrapper(count):
            c0, t0 = time.process_time(), time.perf_counter()
            call()
            walls.append((time.perf_counter() - t0) * 1000)
            cpus.append((time.process_time() - c0) * 1000)
        sql += statements
        t0 = time.perf_counter()
        base()
        bases.append((time.perf_counter() - t0) * 1000)
    return {"walls": sorted(walls), "cpus": cpus, "bases": sorted(bases), "sql": sql / runs}


def stop_workers(procs, *, timeout: float) -> None:
    """Stop Celery workers a bench started (each in its own session): SIGTERM to each main process only, a warm
    shutdown in which its pool children finish first; whatever is still up after `timeout` s is killed."""
    import os
    import signal
    import subprocess

    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


MODE_SUMMARY = "MODE_SUMMARY "  # the line a --mode child prints its summary on (JSON after the prefix)


def run_modes(script: str, modes: tuple[str, ...]) -> tuple[dict[str, dict], bool]:
    """`script` once per mode, each in a child process of its own (Django is set up once per process, on one
    database and broker), with this run's other arguments: their output passes through, their MODE_SUMMARY
    lines are collected. -> ({mode: summary}, whether any child failed)."""
    import json
    import subprocess
    import sys

    summaries: dict[str, dict] = {}
    failed = False
    for mode in modes:
        argv = [a for a in sys.argv[1:] if not a.startswith("--mode")]
        proc = subprocess.Popen([sys.executable, script, "--mode", mode, *argv], stdout=subprocess.PIPE,
                                text=True, bufsize=1)  # fmt: skip
        for line in proc.stdout:
            if line.startswith(MODE_SUMMARY):
                summaries[mode] = json.loads(line[len(MODE_SUMMARY) :])
            else:
                print(line, end="", flush=True)
        failed |= proc.wait() != 0
    return summaries, failed


def ledger_size() -> tuple[int, int]:
    """(payments, subscriptions) in the bench's ledger database."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM billing_paymenttransaction")
        payments = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM billing_subscription")
        return payments, cur.fetchone()[0]


def ledger_bench_setup(description: str, *, runs: int) -> tuple:
    """The arguments and environment of the benches over the 1M-payment ledger database (overview, console):
    (args, database URL). bench/run_all.py passes its own arguments to every script, so unknown ones pass."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=730, help="History the payments are spread over, evenly.")
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--period", default="30d")
    args, _ = parser.parse_known_args()
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_overview")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_project.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ.pop("REDIS_URL", None)  # the balance cache lives in this process (locmem), as in a test
    return args, url
