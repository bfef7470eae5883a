"""Rotate a contract's webhook secret (audited; the audit entry says "changed", never the value):

    manage.py billing_rotate_webhook_secret --contract SLUG --out /run/secrets/whsec-new [--drop-previous]

The new secret is generated (or read from stdin with --stdin) and written to --out (mode 0600, never
printed): give it to the indexer. The old secret keeps working as `previous` until the grace period ends,
unless --drop-previous (a leaked secret: deliveries signed with it fail at once)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.management.base import CommandError

from billing.management.commands._rollout import RolloutCommand
from billing.services.rollout import RolloutError, webhook_secret_rotate


class Command(RolloutCommand):
    help = "Rotate a contract's webhook secret; the new one goes to --out (0600), never to the terminal."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--contract", required=True)
        parser.add_argument("--out", metavar="PATH", help="File to write the new secret to (must not exist).")
        parser.add_argument("--stdin", action="store_true", help="Read the new secret from stdin.")
        parser.add_argument("--drop-previous", action="store_true", help="The old secret stops working now.")

    def handle(self, *args, **options):
        contract = self.contract(options["contract"])
        actor = self.actor(options)
        out_path = options.get("out")
        if not options["stdin"] and not out_path:
            raise CommandError("Say where the new secret goes: --out PATH (or bring your own with --stdin).")
        if out_path and Path(out_path).exists():
            raise CommandError(f"{out_path} exists; a secret is never overwritten.")
        given = sys.stdin.readline().strip() if options["stdin"] and not options["dry_run"] else None
        try:
            outcome, secret = webhook_secret_rotate(
                contract=contract,
                actor=actor,
                dry_run=options["dry_run"],
                new_secret=given,
                drop_previous=options["drop_previous"],
            )
        except RolloutError as exc:
            raise CommandError(str(exc))
        if secret and out_path:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret + "\n")
            outcome.say(f"the new secret is in {out_path} (0600)")
        self.report(outcome)
