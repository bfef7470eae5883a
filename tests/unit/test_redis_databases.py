"""Tests that start real Celery workers each take a Redis database of their own (redis_broker(N) or a
redis://.../N URL). make test runs test files in two xdist workers at once, and redis_broker() empties its
database first: two files sharing one would drop each other's queued messages."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
USE = re.compile(r"redis_broker\((\d+)\)|redis://127\.0\.0\.1:6379/(\d+)")


def test_each_redis_database_is_used_by_one_test_file_only():
    users = defaultdict(set)
    for path in TESTS.rglob("*.py"):
        if path.name in ("processes.py", Path(__file__).name):
            continue
        for match in USE.finditer(path.read_text()):
            users[int(match.group(1) or match.group(2))].add(str(path.relative_to(TESTS)))
    shared = {db: sorted(files) for db, files in users.items() if len(files) > 1}
    assert users, "no test uses Redis: the pattern above is out of date"
    assert shared == {}, f"Redis databases shared by several test files: {shared}"
