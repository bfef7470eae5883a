"""Demo data for `manage.py seed_demo` (and `make run`'s first start): `seed` writes the users, the catalog
and optional synthetic transactions; `history` writes a believable business over the last DAYS days."""

from __future__ import annotations

from billing.demo.history import demo_history_seed_days
from billing.demo.seed import SeedReport, demo_catalog_seed, demo_history_seed, demo_users_seed


def demo_seed(*, transactions: int = 0, history_days: int = 0, progress: bool = False) -> SeedReport:
    report = SeedReport()
    demo_users_seed(report=report)
    demo_catalog_seed(report=report)
    demo_history_seed(transactions=transactions, report=report, progress=progress)
    demo_history_seed_days(days=history_days, report=report)
    return report
