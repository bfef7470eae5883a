"""Compare the ledger with the chain for one contract and print each difference (exit code 1 when any).

    manage.py billing_reconcile --contract SLUG [--from-block N --to-block M]

Without --from-block the whole history is checked, including each token's balance; --to-block defaults to
the network's applicable block (confirmation policy). Reads only."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from billing.models import PaymentContract
from billing.services.reconcile import contract_reconcile
from billing_project.logging import mask_url


class Command(BaseCommand):
    help = "Reconcile one contract's ledger with its chain logs and balances; exit 1 on any difference."

    def add_arguments(self, parser):
        parser.add_argument("--contract", required=True, help="PaymentContract slug")
        parser.add_argument("--from-block", type=int, default=None)
        parser.add_argument("--to-block", type=int, default=None)

    def handle(self, *args, contract: str, from_block: int | None, to_block: int | None, **options):
        found = PaymentContract.objects.select_related("network").filter(slug=contract).first()
        if found is None:
            raise CommandError(f"No contract '{contract}'.")
        if from_block is not None and to_block is not None and to_block < from_block:
            raise CommandError("--to-block must not be below --from-block.")
        try:
            report = contract_reconcile(contract=found, from_block=from_block, to_block=to_block)
        except Exception as exc:  # the chain did not answer: say so, nothing was compared
            raise CommandError(f"The chain could not be read: {mask_url(str(exc))[:300]}")
        self.stdout.write(
            f"contract {report.contract}: blocks {report.from_block}..{report.to_block}, "
            f"{report.logs} logs, {report.ledger_rows} ledger rows"
        )
        if report.balance_checked:
            for symbol, pair in report.balances.items():
                self.stdout.write(f"  balance {symbol}: chain {pair['chain']}, ledger {pair['ledger']}")
        else:
            self.stdout.write("  balances not checked (a partial range; run without --from-block to check them)")
        for difference in report.differences:
            self.stdout.write(f"DIFF {difference}")
        self.stdout.write(f"{len(report.differences)} difference(s)")
        if report.differences:
            raise SystemExit(1)
