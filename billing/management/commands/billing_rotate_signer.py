"""Rotate the quote signer, in three audited steps (docs/playbooks/billing.md, "Rotate the quote signer"):

    manage.py billing_rotate_signer --contract SLUG --generate-key /run/secrets/signer-new   # prints the address
    manage.py billing_rotate_signer --contract SLUG --allow 0xNEW      # setSigner(new, true), operator key
    (deploy the new key as BILLING_QUOTE_SIGNER_KEY_FILE, restart web workers)
    manage.py billing_rotate_signer --contract SLUG --retire 0xOLD     # setSigner(old, false)

--retire refuses the address this deployment still signs with. Each step takes --dry-run and --actor."""

from __future__ import annotations

from django.core.management.base import CommandError

from billing.management.commands._rollout import RolloutCommand
from billing.services.rollout import RolloutError, signer_key_generate, signer_set
from billing_project.logging import mask_url


class Command(RolloutCommand):
    help = "Rotate the quote signer: --generate-key PATH, then --allow NEW, then --retire OLD."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--contract", required=True)
        step = parser.add_mutually_exclusive_group(required=True)
        step.add_argument("--generate-key", metavar="PATH", help="Write a new key to PATH (0600); show its address.")
        step.add_argument("--allow", metavar="ADDRESS", help="setSigner(ADDRESS, true)")
        step.add_argument("--retire", metavar="ADDRESS", help="setSigner(ADDRESS, false)")
        parser.add_argument("--wait", type=float, default=120.0, help="Seconds to wait for the transaction.")

    def handle(self, *args, **options):
        contract = self.contract(options["contract"])
        actor = self.actor(options)
        dry_run = options["dry_run"]
        try:
            if options["generate_key"]:
                outcome = signer_key_generate(
                    path=options["generate_key"], actor=actor, contract=contract, dry_run=dry_run
                )
            else:
                allowed = bool(options["allow"])
                outcome = signer_set(
                    contract=contract,
                    address=options["allow"] or options["retire"],
                    allowed=allowed,
                    actor=actor,
                    dry_run=dry_run,
                    wait_seconds=options["wait"],
                )
        except RolloutError as exc:
            raise CommandError(str(exc))
        except CommandError:
            raise
        except Exception as exc:  # the chain or the key refused: say why, masked
            raise CommandError(f"Not done: {type(exc).__name__}: {mask_url(str(exc))[:300]}")
        self.report(outcome)
