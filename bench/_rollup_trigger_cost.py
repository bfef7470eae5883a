#!/usr/bin/env python
"""What the revenue rollup's trigger costs a ledger write, measured server-side on bench/overview.py's database.

    BENCH_DATABASE_URL=... .venv/bin/python bench/_rollup_trigger_cost.py [--rounds 3]

Not part of `make bench` (bench/run_all.py skips `_` files): it disables and re-enables the UPDATE trigger
of that database's ledger. Each case is 1,000 one-row UPDATEs in one transaction (a PL/pgSQL loop timed with
clock_timestamp(), then rolled back), trigger enabled and disabled alternately: one that moves money (the
stored rate of confirmed payments) and one that moves none (receipt checks of failed checkouts)."""

from __future__ import annotations

import argparse
import os

import psycopg

LOOP = """
DO $$
DECLARE r record; t0 timestamptz; n int := 0;
BEGIN
  t0 := clock_timestamp();
  FOR r IN SELECT id FROM billing_paymenttransaction WHERE status = '{status}' AND user_id IS NOT NULL
           ORDER BY id DESC LIMIT 1000 LOOP
    UPDATE billing_paymenttransaction SET {assignment} WHERE id = r.id;
    n := n + 1;
  END LOOP;
  RAISE NOTICE '%', round(extract(epoch from clock_timestamp() - t0) * 1e6 / n);
END $$;
"""
CASES = {
    "moves money (rate of a confirmed payment)": (
        "confirmed",
        "usd_rate_at_confirmation = usd_rate_at_confirmation + 0.00000001",
    ),
    "moves none (receipt check of a failed checkout)": ("failed", "receipt_checks = receipt_checks + 1"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench_overview")
    notices: list[str] = []
    results: dict[tuple[str, str], list[str]] = {}
    load = os.getloadavg()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        try:
            for _ in range(args.rounds):
                for state in ("ENABLE", "DISABLE"):
                    conn.execute(f"ALTER TABLE billing_paymenttransaction {state} TRIGGER billing_revenue_rollup_upd")
                    for name, (status, assignment) in CASES.items():
                        with conn.transaction():
                            conn.execute(LOOP.format(status=status, assignment=assignment))
                            raise psycopg.Rollback()
                        results.setdefault((state.lower() + "d", name), []).append(notices.pop())
        finally:
            conn.execute("ALTER TABLE billing_paymenttransaction ENABLE TRIGGER billing_revenue_rollup_upd")
    print(f"load average {load:.2f} -> {os.getloadavg()[0]:.2f}; microseconds per one-row UPDATE, per round")
    for (state, name), values in results.items():
        print(f"trigger {state:8} {name:48} {', '.join(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
