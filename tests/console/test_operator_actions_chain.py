"""The console's operator actions wired to the real services on the real chain: the Operations tab's
withdraw form sends to the treasury, and the Transactions row menu offers Retry refund for a refund that
reverted, which lands once after the contract is funded again."""

from __future__ import annotations

import pytest
from eth_account import Account

from billing.models import OperatorTransaction, RefundStatus
from billing.services.operator_txs import operator_tx_watch
from tests.console.test_payments import htmx, login, u
from tests.integration.lifecycle.conftest import PAYERS, _payers_verified, chain, world  # noqa: F401  (fixtures)
from tests.integration.lifecycle.test_operator_tx_recovery import paid_eth

pytestmark = [pytest.mark.chain, pytest.mark.django_db]


def row_menu(client, tx) -> str:
    html = client.get(u("transactions")).content.decode()
    menu = html[html.index(f'data-menu="{tx.public_id}"') :]
    return menu[: menu.index("</details>")]


def test_the_operations_withdraw_form_sends_to_the_treasury(chain, world, billing_admin_user, settings):  # noqa: F811
    settings.BILLING_TREASURY_ADDRESS = treasury = Account.create().address
    chain.anvil.call("anvil_setBalance", [world.contract.address, hex(10**16)])
    client = login(billing_admin_user)
    page = client.get(u("operations")).content.decode()
    assert u("contract-withdraw", world.contract.slug) in page and "data-withdraw-disabled" not in page

    url = u("contract-withdraw", world.contract.slug)
    bad = htmx(client, "post", url, target="x", data={"token": "", "amount": "1.5", "reason": "r"})
    assert bad.status_code == 400 and "integer" in bad["X-Console-Error"]
    no_reason = htmx(client, "post", url, target="x", data={"token": "", "amount": "1000", "reason": ""})
    assert no_reason.status_code == 400 and "reason is required" in no_reason["X-Console-Error"]
    too_much = htmx(client, "post", url, target="x", data={"token": "ETH", "amount": str(10**17), "reason": "r"})
    assert too_much.status_code == 409 and "cannot be withdrawn" in too_much["X-Console-Error"]
    assert not OperatorTransaction.objects.exists()

    response = htmx(client, "post", url, target="x", data={"token": "", "amount": "1000", "reason": "weekly"})
    assert response.status_code == 200, response.get("X-Console-Error")
    assert f"Withdrawing 1000 of ETH@{world.network.slug}" in response.content.decode()
    row = OperatorTransaction.objects.get(kind="withdraw")
    assert row.requested_by == f"user:{billing_admin_user.pk}" and row.reason == "weekly"
    assert operator_tx_watch(row_id=row.pk) == "mined"
    assert chain.w3.eth.get_balance(treasury) == 1000
    listed = client.get(u("operations")).content.decode()
    assert row.mined_tx_hash in listed


def test_the_row_menu_offers_retry_refund_for_a_reverted_refund_and_it_lands(
    chain,  # noqa: F811
    world,  # noqa: F811
    user_api,
    billing_admin_user,
):
    tx = paid_eth(chain, world, user_api, PAYERS[1])
    funds = chain.w3.eth.get_balance(world.contract.address)
    client = login(billing_admin_user)
    assert 'data-action="refund"' in row_menu(client, tx) and 'data-action="retry-refund"' not in row_menu(client, tx)

    chain.anvil.call("evm_setAutomine", [False])
    try:
        sent = htmx(
            client, "post", u("transaction-refund", tx.public_id), target="console-drawer", data={"reason": "a"}
        )
        assert sent.status_code == 200 and 'data-action-result="refund_sent"' in sent.content.decode()
        chain.anvil.call("anvil_setBalance", [world.contract.address, "0x0"])
        chain.anvil.call("evm_mine")
    finally:
        chain.anvil.call("evm_setAutomine", [True])
    first = OperatorTransaction.objects.get(payment=tx)
    assert operator_tx_watch(row_id=first.pk) == "reverted"
    menu = row_menu(client, tx)
    assert 'data-action="retry-refund"' in menu and 'data-action="refund"' not in menu
    drawer = client.get(u("transaction", tx.public_id)).content.decode()
    assert 'data-action="retry-refund"' in drawer and "Reverted on chain" in drawer
    assert "failed (reverted, stuck at the gas cap or never sent)" in drawer

    chain.anvil.call("anvil_setBalance", [world.contract.address, hex(funds)])
    retried = htmx(
        client, "post", u("transaction-retry-refund", tx.public_id), target="console-drawer", data={"reason": "b"}
    )
    assert retried.status_code == 200 and 'data-action-result="refund_retried"' in retried.content.decode()
    retry = OperatorTransaction.objects.get(payment=tx, retry_of=first)
    assert operator_tx_watch(row_id=retry.pk) == "mined"
    tx.refresh_from_db()
    assert tx.refund_status == RefundStatus.MINED
    assert 'data-action="retry-refund"' not in row_menu(client, tx)
