"""The in-process timing loop the overview, console and metrics benches share.

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
