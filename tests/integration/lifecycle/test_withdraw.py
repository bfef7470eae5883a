"""Withdrawals from a payment contract to the treasury, started by a billing admin (API and management
command), sent as operator transactions on the real chain and audited (issue 8, section 4)."""

from __future__ import annotations

from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import CommandError, call_command
from eth_account import Account

from billing.chain.artifacts import transact
from billing.models import OperatorTransaction, PaymentTransaction
from billing.services.operator_txs import operator_tx_watch
from tests.integration.lifecycle.conftest import DUSD, OWNER, PAYERS
from tests.integration.lifecycle.test_operator_tx_recovery import paid_eth

pytestmark = [pytest.mark.chain, pytest.mark.django_db]

URL = "/v1/billing/admin/contracts/{}/withdraw"
FUNDS = 10**16


@pytest.fixture
def treasury(settings):
    settings.BILLING_TREASURY_ADDRESS = Account.create().address
    return settings.BILLING_TREASURY_ADDRESS


def fund(chain, world, wei: int = FUNDS) -> None:
    chain.anvil.call("anvil_setBalance", [world.contract.address, hex(wei)])


def notes(obj, note: str):
    return LogEntry.objects.get_for_object(obj).filter(changes__operator_action__1=note)


def test_a_billing_admin_withdraws_to_the_treasury_leaving_in_flight_refunds_in_the_contract(
    chain, world, user_api, admin_api, billing_admin_user, treasury
):
    paid = paid_eth(chain, world, user_api, PAYERS[0])
    fund(chain, world)
    # A refund on its way needs its amount in the contract: the whole-balance withdrawal leaves it there.
    PaymentTransaction.objects.filter(pk=paid.pk).update(refund_status="in_flight")

    response = admin_api.post(URL.format(world.contract.slug), {"token": "eth", "reason": "weekly"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["result"] == "withdraw_sent"
    assert body["withdrawal"]["amount"] == str(FUNDS - paid.amount)
    assert body["withdrawal"]["reserved"] == str(paid.amount)
    assert body["withdrawal"]["treasury"] == treasury
    row = OperatorTransaction.objects.get(pk=body["operator_transaction"]["id"])
    assert row.kind == "withdraw" and row.status == "pending" and row.to.lower() == world.contract.address.lower()

    again = admin_api.post(URL.format(world.contract.slug), {"token": "ETH", "reason": "twice"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "withdraw_in_flight"

    assert operator_tx_watch(row_id=row.pk) == "mined"
    assert chain.w3.eth.get_balance(treasury) == FUNDS - paid.amount
    assert chain.w3.eth.get_balance(world.contract.address) == paid.amount
    (requested,) = notes(world.contract, "withdraw_requested")
    (sent,) = notes(world.contract, "withdraw_sent")
    assert requested.actor == sent.actor == billing_admin_user
    assert sent.additional_data["reason"] == "weekly" and sent.additional_data["tx_hash"] == row.tx_hashes[-1]

    # A token, part of its balance.
    transact(chain.w3, OWNER, chain.token.functions.mint(world.contract.address, 10 * DUSD))
    response = admin_api.post(
        URL.format(world.contract.slug), {"token": "dUSD", "amount": str(7 * DUSD), "reason": "fees"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert operator_tx_watch(row_id=response.json()["operator_transaction"]["id"]) == "mined"
    assert chain.token.functions.balanceOf(treasury).call() == 7 * DUSD


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"token": "ETH", "amount": "1.5", "reason": "x"}, 400, "validation_error"),
        ({"token": "ETH", "amount": 0, "reason": "x"}, 400, "validation_error"),
        ({"token": "ETH"}, 400, "validation_error"),  # no reason
        ({"token": "NOPE", "reason": "x"}, 400, "unknown_token"),
        ({"token": "ETH", "amount": str(FUNDS + 1), "reason": "x"}, 409, "insufficient_balance"),
    ],
)
def test_a_refused_withdrawal_writes_and_sends_nothing(chain, world, admin_api, treasury, body, status, code):
    fund(chain, world)
    nonce = chain.w3.eth.get_transaction_count(OWNER.address)
    response = admin_api.post(URL.format(world.contract.slug), body, format="json")
    assert response.status_code == status and response.json()["error"]["code"] == code, response.content
    assert not OperatorTransaction.objects.exists()
    assert chain.w3.eth.get_transaction_count(OWNER.address) == nonce


def test_withdrawing_needs_a_treasury_and_the_billing_admin_role(chain, world, admin_api, support_api, settings):
    fund(chain, world)
    settings.BILLING_TREASURY_ADDRESS = ""
    body = {"token": "ETH", "reason": "x"}
    refused = admin_api.post(URL.format(world.contract.slug), body, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "treasury_not_configured"
    settings.BILLING_TREASURY_ADDRESS = Account.create().address
    assert support_api.post(URL.format(world.contract.slug), body, format="json").status_code == 403
    assert admin_api.post(URL.format("no-such-contract"), body, format="json").status_code == 404
    fund(chain, world, 0)
    empty = admin_api.post(URL.format(world.contract.slug), body, format="json")
    assert empty.status_code == 409 and empty.json()["error"]["code"] == "nothing_to_withdraw"
    assert not OperatorTransaction.objects.exists()


def test_the_command_dry_run_prints_the_plan_and_sends_nothing_then_sends(
    chain, world, billing_admin_user, support_user, treasury
):
    fund(chain, world)
    nonce = chain.w3.eth.get_transaction_count(OWNER.address)
    out = StringIO()
    args = ["billing_withdraw", world.contract.slug, "--token", "ETH", "--amount", "1000", "--as"]
    call_command(*args, billing_admin_user.username, "--dry-run", stdout=out)
    printed = out.getvalue()
    assert "DRY RUN" in printed and '"amount": "1000"' in printed and treasury in printed
    assert not OperatorTransaction.objects.exists()
    assert chain.w3.eth.get_transaction_count(OWNER.address) == nonce
    assert not notes(world.contract, "withdraw_requested").exists()

    with pytest.raises(CommandError, match="not a billing admin"):
        call_command(*args, support_user.username, "--reason", "x", stdout=StringIO())
    with pytest.raises(CommandError, match="validation_error"):  # a real send needs a reason
        call_command(*args, billing_admin_user.username, stdout=StringIO())

    out = StringIO()
    call_command(*args, billing_admin_user.username, "--reason", "by hand", stdout=out)
    row = OperatorTransaction.objects.get()
    assert f"operator transaction {row.pk}: pending" in out.getvalue()
    assert operator_tx_watch(row_id=row.pk) == "mined"
    assert chain.w3.eth.get_balance(treasury) == 1000
    assert notes(world.contract, "withdraw_sent").get().actor == billing_admin_user
