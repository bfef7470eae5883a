"""What the bench tests (test_bench_*.py) share: a database of their own for the bench script, dropped after
the test, and one way to run a bench script against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
SERVER = "postgres://postgres@127.0.0.1:5432"


@pytest.fixture
def bench_database(request):
    """`<test database>_bench_<module>` (a test file runs in one xdist worker), or one per test where the module
    sets BENCH_DATABASE_PER_TEST; it and its `_tpl` template (the backfill bench's) are dropped afterwards."""
    suffix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_bench_")
    if getattr(request.module, "BENCH_DATABASE_PER_TEST", False):
        suffix = request.node.name[5:20]
    name = f"{os.environ.get('TEST_DATABASE_NAME', 'test_billing')}_bench_{suffix}"
    yield f"{SERVER}/{name}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        for db in (name, f"{name}_tpl"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def run_bench(script: str, database: str, *args: str, timeout: int = 540, unset: tuple[str, ...] = ()):
    """bench/<script> with its database (and without the test's own DATABASE_URL, or the `unset` variables)."""
    env = {**os.environ, "BENCH_DATABASE_URL": database}
    for name in ("DATABASE_URL", *unset):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, f"bench/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
