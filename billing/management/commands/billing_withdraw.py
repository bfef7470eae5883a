"""Withdraw a token from a payment contract to the treasury (BILLING_TREASURY_ADDRESS), as a billing admin:
the same service as `POST /v1/billing/admin/contracts/{slug}/withdraw` (operator transaction, audited with
the acting user). `--dry-run` prints what would be sent and sends nothing."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from billing import selectors
from billing.roles import is_billing_admin
from billing.services import operator


class Command(BaseCommand):
    help = "Withdraw a token's balance (or part of it) from a payment contract to the treasury."

    def add_arguments(self, parser):
        parser.add_argument("contract", help="contract slug")
        parser.add_argument("--token", required=True, help="token symbol (the native one too) or address")
        parser.add_argument("--amount", help="smallest unit (integer); omitted: the whole available balance")
        parser.add_argument("--reason", default="", help="kept in the audit log (required unless --dry-run)")
        parser.add_argument("--as", dest="username", required=True, help="the billing admin the audit names")
        parser.add_argument("--dry-run", action="store_true", help="print what would be sent; send nothing")

    def handle(self, *args, **opts):
        contract = selectors.contract_queryset().filter(slug=opts["contract"]).first()
        if contract is None:
            raise CommandError(f"No contract {opts['contract']!r}.")
        actor = get_user_model().objects.filter(username=opts["username"]).first()
        if actor is None or not is_billing_admin(actor):
            raise CommandError(f"{opts['username']!r} is not a billing admin.")
        amount = None
        if opts["amount"] is not None:
            if not (opts["amount"].isascii() and opts["amount"].isdigit()):
                raise CommandError("--amount is an integer in the token's smallest unit.")
            amount = int(opts["amount"])
        try:
            result = operator.contract_withdraw(
                contract=contract,
                actor=actor,
                token=opts["token"],
                amount=amount,
                reason=opts["reason"],
                dry_run=opts["dry_run"],
            )
        except operator.OperatorActionError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        plan = result.plan.as_dict()
        if opts["dry_run"]:
            self.stdout.write("DRY RUN: nothing sent. Would send:")
        self.stdout.write(json.dumps(plan, indent=2))
        self.stdout.write(result.detail)
        if result.operator_transaction is not None:
            row = result.operator_transaction
            self.stdout.write(f"operator transaction {row.pk}: {row.status} {row.tx_hashes[-1]}")
