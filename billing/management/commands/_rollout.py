"""Shared by the rollout commands: --dry-run, --actor USERNAME (the audit entry's user; without it the entry
says cli:<login>), the contract lookup, and refusals as CommandError."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from billing.models import PaymentContract


class RolloutCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; change nothing.")
        parser.add_argument("--actor", default="", help="Username the audit entry names (default: cli:<login>).")

    def actor(self, options):
        name = options.get("actor") or ""
        if not name:
            return None
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise CommandError(f"No user '{name}' (--actor).")
        return user

    def contract(self, slug: str) -> PaymentContract:
        contract = PaymentContract.objects.select_related("network").filter(slug=slug).first()
        if contract is None:
            raise CommandError(f"No contract '{slug}'.")
        return contract

    def report(self, outcome) -> None:
        for line in outcome.lines:
            self.stdout.write(line)
