"""`manage.py seed_demo [--transactions N]`: demo logins, a sellable catalog, and optional history."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandParser

from billing.services.demo import DEMO_USERS, demo_seed


class Command(BaseCommand):
    help = (
        "Create demo users (admin/support/demo), networks, tokens, contracts, providers and plans; with "
        "--transactions N also about a year of synthetic payment history for ~N/3 customers. Idempotent: a "
        "re-run creates nothing new. Demo passwords are public: never run this against production data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--transactions", type=int, default=0, help="Payment attempts of synthetic history to generate."
        )

    def handle(self, *args, transactions: int, verbosity: int, **options) -> None:
        if transactions < 0:
            transactions = 0
        started = time.monotonic()
        report = demo_seed(transactions=transactions, progress=verbosity > 0)
        elapsed = time.monotonic() - started
        self.stdout.write(f"seed_demo: created {report.summary()} in {elapsed:.1f}s")
        if report.skipped_history:
            self.stdout.write(f"seed_demo: {report.skipped_history} history rows already present, skipped")
        if verbosity > 0:
            logins = ", ".join(f"{name}/{spec['password']}" for name, spec in DEMO_USERS.items())
            self.stdout.write(f"demo logins: {logins}; API tokens: manage.py create_api_token <username>")
