"""`manage.py seed_demo [--history DAYS] [--transactions N]`: demo logins, a sellable catalog, and history."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.demo import demo_seed
from billing.demo.seed import DEMO_USERS


class Command(BaseCommand):
    help = (
        "Create demo users (admin/support/demo), networks, tokens, contracts, providers and plans; with "
        "--history DAYS a believable subscription business over the last DAYS days (customers arriving, renewals, "
        "upgrades, downgrades, churn, refunds, failures, two experiments, payouts); with --transactions N about a "
        "year of payment attempts for ~N/3 customers (load tests). Idempotent: a re-run creates nothing new. Demo "
        "passwords are public: never run this against production data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--history", type=int, default=0, metavar="DAYS", help="Days of subscription business history to build."
        )
        parser.add_argument(
            "--transactions", type=int, default=0, help="Payment attempts of synthetic history to generate."
        )

    def handle(self, *args, transactions: int, history: int, verbosity: int, **options) -> None:
        if history < 0 or history > 3660:
            raise CommandError("--history takes a number of days from 0 to 3660.")
        transactions = max(transactions, 0)
        started = time.monotonic()
        report = demo_seed(transactions=transactions, history_days=history, progress=verbosity > 0)
        elapsed = time.monotonic() - started
        self.stdout.write(f"seed_demo: created {report.summary()} in {elapsed:.1f}s")
        for note in report.notes:
            self.stdout.write(f"seed_demo: {note}")
        if report.skipped_history:
            self.stdout.write(f"seed_demo: {report.skipped_history} history rows already present, skipped")
        if verbosity > 0:
            logins = ", ".join(f"{name}/{spec['password']}" for name, spec in DEMO_USERS.items())
            self.stdout.write(f"demo logins: {logins}; API tokens: manage.py create_api_token <username>")
