#!/usr/bin/env python
"""Server time of the console's heaviest pages on a real-size ledger: the Payments workspace's transactions tab
(unfiltered and filtered) and the Overview (the page, and each of its lazy parts), as a billing_admin session.

    .venv/bin/python bench/console.py [--payments 1000000] [--subscriptions 100000] [--runs 30] [--period 30d]

Uses bench/overview.py's database (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/
billing_bench_overview), seeded once by bench/_overview_seed.py with generate_series and reused while it holds
the asked sizes. Each page is requested in-process through Django's test client (URL resolution, middleware,
the view, its queries and template rendering: what the server spends, without the network): 2 warm-up calls,
then --runs timed calls (p50/p95 wall, CPU per call, SQL statements per call). Baseline, interleaved with them
(one after each call, so both see the same load): the read the page is built on, called alone (the keyset page
of billing.selectors.transaction_search for the transactions tab, overview.selectors.dashboard for the
Overview, the part's selector for each part); the ratio is what the view and its templates add.
Target: p95 <= 300 ms for the transactions tab and the Overview page. Exits 0 whether the target is met or
not (the figures are the result), 1 if a page fails.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
TARGET_P95_MS = 300


def _bench_overview():
    """bench/overview.py as a module (its file name would shadow the `overview` app on sys.path)."""
    spec = importlib.util.spec_from_file_location("bench_overview", ROOT / "bench" / "overview.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    from _timing import ledger_bench_setup

    args, url = ledger_bench_setup(__doc__.splitlines()[0], runs=30)
    load_before = os.getloadavg()
    _bench_overview()._ensure_database(url, args)

    import django

    django.setup()
    from _timing import interleaved, ledger_size, p95
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from billing import selectors as billing
    from billing.roles import BILLING_ADMIN, sync_role_permissions
    from overview import selectors
    from overview.periods import resolve_period

    call_command("migrate", verbosity=0)  # a reused database may predate the newest migrations
    sync_role_permissions()
    user, _ = get_user_model().objects.get_or_create(username="bench-console", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name=BILLING_ADMIN))
    client = Client()
    client.force_login(user)
    cache.clear()
    payments, subscriptions = ledger_size()
    with connection.cursor() as cur:
        cur.execute("SELECT slug FROM billing_network WHERE NOT is_testnet ORDER BY slug LIMIT 1")
        network = cur.fetchone()[0]

    window = resolve_period(name=args.period, start=None, end=None, now=timezone.now())
    since = window.start.date().isoformat()
    filtered = f"status=confirmed&network={network}&token=USDC&date_from={since}"
    period = f"period={args.period}"

    def keyset(**kwargs):
        return lambda: list(billing.transaction_search(**kwargs).order_by("-created_at", "-id")[:51])

    pages = [
        ("transactions", "/admin/payments/transactions/", keyset()),
        (
            "transactions?filtered",
            f"/admin/payments/transactions/?{filtered}",
            keyset(status="confirmed", network=network, token="USDC", created_from=window.start),
        ),
        ("overview page", f"/admin/?{period}", lambda: selectors.dashboard(period=window)),
        (
            "  part revenue",
            f"/admin/overview/revenue/?{period}",
            lambda: selectors.revenue(period=window, split="token"),
        ),
        ("  part networks", f"/admin/overview/networks/?{period}", lambda: selectors.networks(period=window)),
        ("  part payouts", f"/admin/overview/payouts/?{period}", lambda: selectors.payouts(period=window, limit=8)),
        ("  part incidents", f"/admin/overview/incidents/?{period}", lambda: selectors.incidents(period=window)),
    ]
    targeted = {"transactions", "transactions?filtered", "overview page"}

    def timed(call, base) -> dict:
        return interleaved(call, base, args.runs)

    print(
        f"ledger: {payments} payments, {subscriptions} subscriptions; period {args.period}; filtered = {filtered}; "
        f"{args.runs} warm runs each, each followed by one run of the baseline; "
        f"load average before {load_before[0]:.2f} on {os.cpu_count()} cores"
    )
    print("baseline: the selector the page is built on, called alone (what the view and templates add = ratio)")
    header = f"{'page':22} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>7} {'sql':>5} {'base p50':>9} {'base p95':>9}"
    print(f"{header} {'p50/base':>9} {'p95/base':>9}  verdict")
    failures = []
    for name, path, base in pages:
        headers = {"HTTP_HX_REQUEST": "true"} if "part" in name else {}
        response = client.get(path, **headers)
        if response.status_code != 200:
            print(f"{name:22} HTTP {response.status_code}: {response.content[:200]!r}")
            failures.append(name)
            continue
        r = timed(lambda path=path, headers=headers: client.get(path, **headers), base)
        p50, high = statistics.median(r["walls"]), p95(r["walls"])
        b50, b95 = statistics.median(r["bases"]), p95(r["bases"])
        verdict = ""
        if name in targeted:
            verdict = ("PASS" if high <= TARGET_P95_MS else "OVER") + f" (target p95 <= {TARGET_P95_MS} ms)"
        print(
            f"{name:22} {p50:8.1f} {high:8.1f} {statistics.median(r['cpus']):7.1f} {r['sql']:5.0f} {b50:9.1f} "
            f"{b95:9.1f} {p50 / b50:9.2f} {high / b95:9.2f}  {verdict}"
        )
        if name in targeted:
            from _report import result

            result(
                "console",
                f"{name} p95",
                high,
                unit="ms",
                baseline=b95,
                baseline_label="its selector alone, p95",
                target=f"<= {TARGET_P95_MS} ms",
                met=high <= TARGET_P95_MS,
            )
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} (other work on the machine inflates wall times, not CPU per call)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
