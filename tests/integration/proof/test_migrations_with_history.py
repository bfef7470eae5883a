"""Migrations applied to a database that holds the demo history (`seed_demo --history 30`), in a database of
its own: migrate to head, seed, then take billing back to 0008 and notifications back to 0001 (every later
migration unapplied over the real rows) and forward to head again. Every table keeps its row count, and every
column the round trip does not drop keeps its values row for row; the columns it drops and adds again are
named below with what comes back. A table a later migration creates from the ledger (the revenue rollup) is
gone on the way back and says the same sums per key after the way forward.

0007 (subscription periods) is the last stop backwards: unapplying it drops the period history, which its
forward RunPython can only rebuild as one period per subscription, so its reverse is lossy by design."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BACK_TO = {"billing": "0008_confirmation_policy_and_event_errors", "notifications": "0001_initial"}


def later_than(app: str, target: str) -> set[str]:
    """The numbers of `app`'s migrations after `target` (whatever main has gained since)."""
    files = (ROOT / app / "migrations").glob("[0-9][0-9][0-9][0-9]_*.py")
    return {p.name[:4] for p in files if p.name[:4] > target[:4]}


# Columns the unapplied migrations add that no migration can derive again from the rows: an operator
# transaction's receipt figures (0009), which come back empty after a round trip (the follower does not
# refetch receipts of mined rows). Every other dropped column comes back equal (0011 derives refund_status
# from the refund operator transactions).
LOST_ON_THE_WAY_BACK = {
    ("billing_operatortransaction", "effective_gas_price"),
    ("billing_operatortransaction", "fee"),
    ("billing_operatortransaction", "gas_used"),
}


# Tables a later migration creates and fills from the ledger (so they are gone on the way back and rebuilt on
# the way forward): compared by what they say, their sums per key, not row by row (a writer appends
# differences and folds them; the backfill writes one row per key).
DERIVED = {
    "billing_revenuerollup": (
        "SELECT kind, day, network_id, token_id, plan_id, sum(amount), sum(usd), sum(unrated), sum(n) "
        "FROM billing_revenuerollup GROUP BY 1, 2, 3, 4, 5 "
        "HAVING sum(amount) <> 0 OR sum(usd) <> 0 OR sum(unrated) <> 0 OR sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5"
    ),
}


def derived_sums(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(sql).fetchall() for table, sql in DERIVED.items()}


@pytest.fixture
def history_database():
    name = f"{os.environ.get('TEST_DATABASE_NAME', 'test_billing')}_migrations"
    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="billing_project.settings", LOG_LEVEL="WARNING")
    run = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, f"manage.py {' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def snapshot(url: str) -> dict[str, dict]:
    """Per table: its row count and, per column, a digest of its values in primary-key order."""
    out: dict[str, dict] = {}
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'django_migrations'"
            )
        ]
        for table in tables:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                    "AND table_name = %s ORDER BY ordinal_position",
                    [table],
                )
            ]
            order = "id" if "id" in cols else ", ".join(f'"{c}"' for c in cols)
            digests = ", ".join(f"md5(string_agg(coalesce(\"{c}\"::text, '∅'), '|' ORDER BY {order}))" for c in cols)
            row = conn.execute(f'SELECT count(*), {digests} FROM "{table}"').fetchone()
            out[table] = {"count": row[0], "columns": dict(zip(cols, row[1:], strict=True))}
    return out


def applied(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
    result: dict[str, set[str]] = {}
    for app, name in rows:
        result.setdefault(app, set()).add(name[:4])
    return result


def test_back_and_forth_over_the_demo_history_keeps_every_row(history_database):
    url = history_database
    manage(url, "migrate", "--no-input", "-v0")
    seeded = manage(url, "seed_demo", "--history", "30", "-v0")
    assert "seed_demo: created" in seeded
    head = snapshot(url)
    # The history is really there, in the tables the unapplied migrations alter.
    assert head["billing_paymenttransaction"]["count"] >= 100, head["billing_paymenttransaction"]
    assert head["billing_subscription"]["count"] >= 50
    assert head["billing_transactionstatuschange"]["count"] >= 300
    heads = applied(url)
    sums = derived_sums(url)
    assert sums["billing_revenuerollup"], "the seeded history put nothing in the revenue rollup"

    for app, target in BACK_TO.items():
        manage(url, "migrate", app, target, "--no-input", "-v0")
    back = applied(url)
    for app, target in BACK_TO.items():
        numbers = later_than(app, target)
        assert numbers and not numbers & back[app], (app, sorted(back[app]))
        assert set(numbers) <= heads[app]
    earlier = snapshot(url)
    # Only the derived tables go with the unapplied migrations that created them.
    assert set(head) - set(earlier) == set(DERIVED), sorted(set(head) - set(earlier))
    for table, state in head.items():
        if table in DERIVED:
            continue
        assert earlier[table]["count"] == state["count"], f"{table} lost rows on the way back"
        for col, digest in earlier[table]["columns"].items():
            assert state["columns"][col] == digest, f"{table}.{col} changed on the way back"
    dropped = {
        (t, c) for t, s in head.items() if t not in DERIVED for c in s["columns"] if c not in earlier[t]["columns"]
    }
    assert dropped, "the way back dropped no column: the unapplied migrations were not undone"

    manage(url, "migrate", "--no-input", "-v0")
    assert applied(url) == heads
    again = snapshot(url)
    assert set(again) == set(head)
    assert derived_sums(url) == sums  # rebuilt from the rows by the forward migration, to the unit
    for table, state in head.items():
        if table in DERIVED:
            continue
        assert again[table]["count"] == state["count"], f"{table}: {state['count']} rows before, {again[table]}"
        assert set(again[table]["columns"]) == set(state["columns"]), table
        for col, digest in state["columns"].items():
            if (table, col) in dropped:
                continue
            assert again[table]["columns"][col] == digest, f"{table}.{col} changed on the round trip"
    # The re-added columns: derived again from the rows, or (the receipt figures) lost, and only those.
    derived = {(t, c) for (t, c) in dropped if again[t]["columns"][c] == head[t]["columns"][c]}
    assert ("billing_paymenttransaction", "refund_status") in derived
    assert dropped - derived == LOST_ON_THE_WAY_BACK, sorted(dropped - derived)
    with psycopg.connect(url) as conn:
        fees = conn.execute("SELECT count(*), count(fee) FROM billing_operatortransaction").fetchone()
    assert fees[0] > 0 and fees[1] == 0, fees
