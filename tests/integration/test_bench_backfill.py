"""bench/backfill.py in small mode (200 real Paid events on its own anvil and database): the follower's backfill
writes every payment's rows once and the script prints its rate beside the raw eth_getLogs + eth_abi baseline of
the same run and the ratio (the full run, 8,000 events, is `make bench`)."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import run_bench

pytestmark = [pytest.mark.chain, pytest.mark.timeout(600)]
EVENTS = 200


def test_small_backfill_applies_every_payment_and_prints_the_ratio(bench_database):
    # One mode (embedded: its SQL statements and CPU per event are measured in the process); make bench runs
    # both, and the webhook bench's suite run covers the scaled mode's workers.
    run = run_bench("backfill.py", bench_database, "--mode", "embedded", "--events", str(EVENTS), "--per-block", "1")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr[-3000:]
    assert f"chain: {EVENTS} Paid events for {EVENTS // 2} users in {EVENTS} blocks" in out, out
    writes = re.search(r"writes: (\{.*\}); (\d+) live subscriptions$", out, re.MULTILINE)
    assert writes and "NOT WHAT THE CHAIN SAYS" not in out, out
    counts = eval(writes.group(1), {})  # noqa: S307 (the script's own dict literal of ints)
    assert counts == {
        "ledger rows confirmed": EVENTS,
        "status history rows": EVENTS,
        "chain events": EVENTS,
        "paid periods": EVENTS,
        "plan.changed.v1 events": EVENTS,
        "outbox deliveries": 2 * EVENTS,
        "payment.status.v1 events": EVENTS,
    }
    assert int(writes.group(2)) == EVENTS // 2
    base = re.search(r"decoding of blocks \d+\.\.\d+: ([\d,]+) events/s before, ([\d,]+) events/s after", out)
    assert base, out
    before, after = (int(x.replace(",", "")) for x in base.groups())
    assert before > 0 and after > 0
    project = re.search(
        r"applied (\d+) events in ([\d.]+) s .*: ([\d,.]+) events/s, ([\d.]+) SQL statements/event, "
        r"([\d.]+) ms CPU/event",
        out,
    )
    assert project, out
    applied, wall, rate, sql, cpu = project.groups()
    # The rate is events over the wall time, which is printed rounded to 0.01 s: allow for that rounding.
    seconds, events_per_second = float(wall), float(rate.replace(",", ""))
    assert int(applied) == EVENTS
    assert EVENTS / (seconds + 0.006) <= events_per_second <= EVENTS / max(seconds - 0.006, 1e-3), (wall, rate)
    assert float(sql) < 2  # batch statements, not ~20 per event
    assert float(cpu) > 0
    ratio = re.search(r"ratio: ([\d.]+) of the faster baseline \(([\d,]+) events/s\)\s+(PASS|UNDER)", out)
    assert ratio, out
    expected = float(rate.replace(",", "")) / max(before, after)
    assert abs(float(ratio.group(1)) - expected) < 0.01 + 0.02 * expected
