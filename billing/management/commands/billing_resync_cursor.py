"""Make the chain follower read a contract's logs again from a block (audited):

    manage.py billing_resync_cursor --contract SLUG --from-block N [--dry-run]

Applying a log is idempotent per (chain, tx hash, log index), so a resync repairs a missed or mis-applied
range without double effects; the follower picks it up on its next tick."""

from __future__ import annotations

from django.core.management.base import CommandError

from billing.management.commands._rollout import RolloutCommand
from billing.services.rollout import RolloutError, cursor_resync


class Command(RolloutCommand):
    help = "Move a contract's follower cursor back so it reads again from --from-block."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--contract", required=True)
        parser.add_argument("--from-block", type=int, required=True)

    def handle(self, *args, **options):
        contract = self.contract(options["contract"])
        try:
            outcome = cursor_resync(
                contract=contract,
                from_block=options["from_block"],
                actor=self.actor(options),
                dry_run=options["dry_run"],
            )
        except RolloutError as exc:
            raise CommandError(str(exc))
        self.report(outcome)
