"""billing.bulk_sql: the follower's cursor reads timestamps as Django's cursor does (same instants, aware, UTC), and
the collector pause switches the collector off for a run and back to what it was."""

from __future__ import annotations

import gc
from datetime import UTC

import pytest
from django.db import connection

from billing import bulk_sql

QUERY = """SELECT v FROM (VALUES (timestamptz '2026-12-01 22:42:10.123456+00'),
    (timestamptz '1999-01-02 03:04:05+05:30'), (timestamptz '2030-06-30 23:59:59.5-08'), (NULL::timestamptz)) AS t(v)"""


@pytest.mark.django_db
def test_bulk_cursor_reads_timestamps_as_django_does():
    with connection.cursor() as cursor:
        cursor.execute(QUERY)
        django_values = [v for (v,) in cursor.fetchall()]
    with bulk_sql.bulk_cursor() as cursor:
        cursor.execute(QUERY)
        fast_values = [v for (v,) in cursor.fetchall()]
    assert fast_values == django_values
    assert fast_values[-1] is None
    assert all(v.utcoffset().total_seconds() == 0 and v.tzinfo is UTC for v in fast_values[:-1])


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collector_state(enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        with bulk_sql.gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(RuntimeError), bulk_sql.gc_paused():
            raise RuntimeError("a batch failed")
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_startup_heap_is_frozen_once(monkeypatch):
    calls = []
    monkeypatch.setattr(bulk_sql, "_frozen", False)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(1))
    bulk_sql.freeze_startup_heap()
    bulk_sql.freeze_startup_heap()
    assert calls == [1]
