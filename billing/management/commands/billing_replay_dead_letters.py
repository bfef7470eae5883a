"""Replay dead letters (audited per delivery): all of them, or --delivery ID (repeatable), --subscriber,
--topic; at most --limit. --dry-run lists what would be replayed."""

from __future__ import annotations

from billing.management.commands._rollout import RolloutCommand
from billing.services.rollout import dead_letters_replay


class Command(RolloutCommand):
    help = "Replay dead outbox deliveries (pending again, due now, a fresh attempt budget)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--delivery", type=int, action="append", default=[], help="Delivery id (repeatable).")
        parser.add_argument("--subscriber", default="")
        parser.add_argument("--topic", default="")
        parser.add_argument("--limit", type=int, default=500)

    def handle(self, *args, **options):
        outcome = dead_letters_replay(
            actor=self.actor(options),
            dry_run=options["dry_run"],
            delivery_ids=options["delivery"] or None,
            subscriber=options["subscriber"],
            topic=options["topic"],
            limit=options["limit"],
        )
        self.report(outcome)
