"""billing_reconcile (issue 13) on a real chain: a fresh SubscriptionPass, a native and an ERC-20 payment and a
refund through the operator API reconcile with 0 differences (logs both ways, balances per token); a ledger
row edited by hand is found, the command exits 1, and the daily task raises one ops notice."""

from __future__ import annotations

import io

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.db.models import F

from billing.chain.artifacts import deploy_artifact, transact
from billing.models import PaymentTransaction, TxStatus
from billing.services.chain_sync import contract_sync
from billing.services.receipts import transaction_check_receipt
from tests.integration.lifecycle.conftest import OWNER, PAYERS, SIGNER, send_steps

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def reconcile(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("billing_reconcile", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def pay(chain, user_api, plan: str, payer) -> PaymentTransaction:
    body = user_api.post("/v1/billing/checkout", {"plan": plan, "wallet": payer.address}, format="json").json()
    tx_hash = send_steps(chain, payer, body["payment"])[-1]
    user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": tx_hash}, format="json")
    chain.anvil.mine(2)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"
    tx.refresh_from_db()
    return tx


def test_reconcile_is_clean_after_payments_and_a_refund_and_finds_a_hand_edit(
    chain, world, user_api, admin_api, billing_admin_user
):
    from billing.services.reconcile import contracts_reconcile_all

    fresh, receipt = deploy_artifact(chain.w3, OWNER, "SubscriptionPass", OWNER.address, SIGNER.address)
    contract = world.contract
    contract.address = fresh.address
    contract.deployment_block = receipt["blockNumber"]
    contract.save()
    slug = contract.slug

    native = pay(chain, user_api, "eth-pro", PAYERS[0])
    token = pay(chain, user_api, "pro", PAYERS[0])
    response = admin_api.post(
        f"/v1/billing/admin/transactions/{native.public_id}/refund", {"reason": "t"}, format="json"
    )
    assert response.status_code in (200, 202), response.content
    # The refund through the token API is audited with the token's user.
    sent = [e for e in LogEntry.objects.get_for_object(native) if e.changes_dict.get("operator_action")]
    assert [(e.actor, e.changes_dict["operator_action"][1]) for e in sent] == [(billing_admin_user, "refund_sent")]
    # Half of the dUSD goes to the treasury (the owner's withdraw, recorded by the follower).
    half = token.amount // 2
    transact(chain.w3, OWNER, fresh.functions.withdraw(chain.token.address, OWNER.address, half))
    chain.anvil.mine(3)
    contract_sync(contract_id=contract.pk)
    native.refresh_from_db()
    assert native.status == TxStatus.REFUNDED

    code, out = reconcile("--contract", slug)
    assert code == 0, out
    assert "0 difference(s)" in out
    held = token.amount - half
    assert f"balance dUSD: chain {held}, ledger {held}" in out  # the chain really holds it: paid - withdrawn
    assert "balance ETH: chain 0, ledger 0" in out  # paid, then refunded
    assert "4 logs" in out  # Paid, Paid, Refunded, Withdrawn

    # A withdrawal the ledger lost (its ChainEvent deleted by hand) is found both ways.
    from billing.models import ChainEvent

    ChainEvent.objects.filter(contract=contract, name="Withdrawn").delete()
    code, out = reconcile("--contract", slug)
    assert code == 1 and "DIFF withdrawal_not_in_ledger" in out and "DIFF balance_differs: dUSD" in out
    contract_sync(contract_id=contract.pk)  # nothing to read again: put it back by resyncing
    call_command(
        "billing_resync_cursor",
        "--contract",
        slug,
        "--from-block",
        str(contract.deployment_block),
        stdout=io.StringIO(),
    )
    contract_sync(contract_id=contract.pk)
    assert reconcile("--contract", slug)[0] == 0

    # A ledger row edited by hand: its amount no longer matches its Paid log nor the balance.
    PaymentTransaction.objects.filter(pk=token.pk).update(amount=F("amount") + 1)
    code, out = reconcile("--contract", slug)
    assert code == 1
    assert f"DIFF paid_differs: transaction {token.pk}: amount {token.amount + 1} != {token.amount}" in out
    assert "DIFF balance_differs: dUSD" in out

    # A partial range compares logs only.
    code, out = reconcile(
        "--contract", slug, "--from-block", str(token.block_number), "--to-block", str(token.block_number)
    )
    assert code == 1 and "balances not checked" in out and "paid_differs" in out and "balance_differs" not in out

    # A confirmed row whose payment never happened on chain (e.g. a row inserted by hand).
    PaymentTransaction.objects.filter(pk=token.pk).update(amount=F("amount") - 1)
    PaymentTransaction.objects.filter(pk=native.pk).update(status=TxStatus.CONFIRMED)
    code, out = reconcile("--contract", slug)
    assert code == 1 and "refund_not_in_ledger" in out and "balance_differs: ETH" in out

    # A paid row moved to another transaction hash by hand: its Paid log no longer matches, and the row
    # has no log of its own.
    PaymentTransaction.objects.filter(pk=token.pk).update(tx_hash="0x" + "ab" * 32)
    code, out = reconcile("--contract", slug)
    assert f"DIFF payment_without_log: transaction {token.pk} (confirmed) has no Paid log" in out
    assert f"DIFF paid_differs: transaction {token.pk}: tx hash 0x{'ab' * 32}" in out

    # The daily task: one ops notice per finding and day, however often it runs.
    from notifications.models import Notification
    from tests.integration.test_notices import deliver_twice

    assert contracts_reconcile_all()[slug] >= 2
    assert contracts_reconcile_all()[slug] >= 2
    deliver_twice()
    note = Notification.objects.get(kind="reconcile_difference")
    assert note.data["contract"] == slug and "refund_not_in_ledger" in note.data["kinds"]


def test_reconcile_refuses_an_unknown_contract_and_a_reversed_range(world):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No contract"):
        call_command("billing_reconcile", "--contract", "nope")
    with pytest.raises(CommandError, match="must not be below"):
        call_command("billing_reconcile", "--contract", world.contract.slug, "--from-block", "5", "--to-block", "4")
