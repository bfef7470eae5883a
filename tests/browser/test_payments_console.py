"""Acceptance of the console's Payments workspace in a real browser (Debian's chromium, headless):
an operator edits a provider and reads it back, sees backend field errors, refunds a real payment on the
local chain from the transactions drawer, probes the RPC endpoints; support sees the same pages with no
action. Each successful run refreshes the screenshots in docs/console/."""

from __future__ import annotations

import re
import socket
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing.models import Network, PaymentProvider, PaymentTransaction, RpcEndpoint, TxStatus
from billing.services.chain_sync import contract_sync
from tests import factories as f
from tests.conftest import link_wallet
from tests.integration.lifecycle.conftest import PAYERS, follower_from_head, paid_by_receipt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WRITE_ACTIONS = (
    "new-provider",
    "edit-provider",
    "save",
    "refund",
    "reprocess",
    "retry-refund",
    "test-connection",
    "save-network",
    "save-config",
    "replay",
    "reprocess-inbound",
    "withdraw",
)


def payments(live_server, tab: str = "", query: str = "") -> str:
    return f"{live_server.url}/admin/payments/{tab + '/' if tab else ''}{query}"


@pytest.fixture
def catalog(roles):
    """Two networks with tokens, a contract and a provider that takes only the first network."""
    home = f.NetworkFactory(slug="sepolia-test", name="Sepolia (test)", chain_id=11155111)
    second = f.NetworkFactory(slug="base-test", name="Base (test)", chain_id=84532)
    usdc = f.TokenFactory(network=home, symbol="USDC")
    f.TokenFactory(network=second, symbol="USDC")
    f.NativeTokenFactory(network=second)
    contract = f.PaymentContractFactory(slug="pass-sepolia", network=home)
    provider = f.PaymentProviderFactory(
        slug="evm-main", title="EVM main", contract=contract, networks=[home], supported_tokens=[usdc]
    )
    plan = f.PlanFactory(slug="pro", provider=provider, contract=contract, price_token=usdc)
    for status in (TxStatus.CONFIRMED, TxStatus.PENDING):
        factory = f.ConfirmedTransactionFactory if status == TxStatus.CONFIRMED else f.PaymentTransactionFactory
        factory(plan=plan)
    return {"home": home, "second": second, "provider": provider, "contract": contract}


def test_operator_edits_a_provider_previews_saves_and_reads_it_back(
    live_server, as_user, billing_admin_user, catalog, shot
):
    page = as_user(billing_admin_user)
    page.goto(payments(live_server, "providers"))
    expect(page.locator('[data-provider="evm-main"] [data-col="networks"]')).to_have_text("sepolia-test")
    shot(page, "providers")

    page.locator('[data-provider="evm-main"] td', has_text="EVM").first.click()  # a click on the row opens it
    drawer = page.locator("#console-drawer")
    expect(drawer.locator('[data-field="networks"]')).to_have_text("sepolia-test")
    expect(page).to_have_url(re.compile(r"\?open=evm-main$"))
    shot(page, "provider-drawer")

    drawer.locator('[data-action="edit-provider"]').click()
    form = drawer.locator('form[data-form="provider"]')
    form.locator('input[name="networks"][value="base-test"]').check()
    for token in ("USDC@base-test", "ETH@base-test"):
        form.locator(f'input[name="supported_tokens"][value="{token}"]').check()
    form.locator('input[name="priority"]').fill("5")
    form.locator('[data-action="preview"]').click()
    preview = drawer.locator("#provider-preview")
    expect(preview.locator("[data-json]").first).to_contain_text('"ETH@base-test"')
    expect(preview.locator("[data-preview-config]")).to_contain_text('"slug": "base-test"')
    shot(page, "provider-form")
    assert PaymentProvider.objects.get(slug="evm-main").networks.count() == 1  # a preview saves nothing

    form.locator('[data-action="save"]').click()
    expect(page.locator("[data-console-notice]")).to_have_text("Provider evm-main saved.")
    expect(drawer.locator('[data-field="networks"]')).to_have_text("base-test, sepolia-test")
    expect(page.locator('[data-provider="evm-main"] [data-col="tokens"]')).to_contain_text("ETH@base-test")

    page.reload()  # the URL keeps the drawer: the same values come back from the server
    expect(page.locator('#console-drawer [data-field="supported_tokens"]')).to_contain_text("ETH@base-test")
    provider = PaymentProvider.objects.get(slug="evm-main")
    assert sorted(n.slug for n in provider.networks.all()) == ["base-test", "sepolia-test"]
    assert provider.priority == 5 and provider.config == provider.build_config()


def test_invalid_provider_form_shows_the_backend_field_errors(live_server, as_user, billing_admin_user, catalog):
    page = as_user(billing_admin_user)
    page.goto(payments(live_server, "providers"))
    page.locator('[data-action="new-provider"]').click()
    form = page.locator('#console-drawer form[data-form="provider"]')
    form.locator('input[name="slug"]').fill("evm-broken")
    form.locator('input[name="networks"][value="sepolia-test"]').check()
    form.locator('input[name="supported_tokens"][value="ETH@base-test"]').check()
    form.locator('select[name="default_network"]').select_option("base-test")
    form.locator('[data-action="save"]').click()
    errors = page.locator('#console-drawer [data-field-errors="default_network"]')
    expect(errors).to_have_text("The default network must be one of the provider's networks.")
    expect(page.locator('#console-drawer [data-field-errors="supported_tokens"]')).to_contain_text("ETH@base-test")
    assert not PaymentProvider.objects.filter(slug="evm-broken").exists()


def test_support_sees_the_same_pages_with_no_action(live_server, as_user, support_user, catalog, shot):
    page = as_user(support_user)
    tx = PaymentTransaction.objects.filter(status="confirmed").get()
    for tab, query in (
        ("providers", "?open=evm-main"),
        ("contracts", ""),
        ("transactions", f"?open={tx.public_id}"),
        ("crypto", ""),
        ("operations", ""),
    ):
        page.goto(payments(live_server, tab, query))
        expect(page.locator(f'[data-tab-panel="{tab}"]')).to_be_visible()
        expect(page.locator('[data-testid="read-only"]')).to_be_visible()
        page.wait_for_load_state("networkidle")
        for action in WRITE_ACTIONS:
            assert page.locator(f'[data-action="{action}"]').count() == 0, f"{action} on {tab}"
        shot(page, f"support-{tab}")
    # The tabs switch in place and the back button returns to the previous tab.
    page.goto(payments(live_server, "providers"))
    page.locator('a[data-tab="transactions"]').click()
    expect(page.locator('[data-tab-panel="transactions"]')).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/payments/transactions/$"))
    page.go_back()
    expect(page.locator('[data-tab-panel="providers"]')).to_be_visible()


def test_transactions_filters_stay_in_the_url(live_server, as_user, billing_admin_user, catalog, shot):
    page = as_user(billing_admin_user)
    page.goto(payments(live_server, "transactions"))
    expect(page.locator("[data-count]")).to_have_text("2 matching")
    page.locator('select[name="status"]').select_option("pending")
    expect(page.locator("[data-count]")).to_have_text("1 matching")
    expect(page).to_have_url(re.compile(r"status=pending"))
    row = page.locator('tr[data-status="pending"]')
    expect(row).to_have_attribute("hx-trigger", "every 5s")  # a pending payment updates live
    page.reload()
    expect(page.locator('select[name="status"]')).to_have_value("pending")
    expect(page.locator("[data-count]")).to_have_text("1 matching")
    page.goto(payments(live_server, "transactions"))
    shot(page, "transactions")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.chain
def test_test_connection_probes_the_live_chain_and_a_dead_endpoint(
    live_server, as_user, billing_admin_user, anvil, roles, shot
):
    network = Network.objects.create(slug="anvil-local", name="Anvil", chain_id=31337, confirmation_depth=2)
    RpcEndpoint.objects.create(network=network, position=0, url=anvil.url, timeout_seconds=Decimal("3"))
    RpcEndpoint.objects.create(
        network=network, position=1, url=f"http://127.0.0.1:{_free_port()}/dead-KEY", timeout_seconds=Decimal("1")
    )
    page = as_user(billing_admin_user)
    page.goto(payments(live_server, "crypto"))
    expect(page.locator('[data-endpoints="anvil-local"] [data-masked-url]').nth(1)).to_have_text(
        re.compile(r"^http://127\.0\.0\.1:\d+/\*\*\*\*$")
    )
    page.locator('[data-action="test-connection"]').click()
    results = page.locator('[data-probe-network="anvil-local"]')
    ok, dead = results.locator('tr[data-probe="ok"]'), results.locator('tr[data-probe="error"]')
    expect(ok.locator("[data-chain-id]")).to_have_text("31337")
    expect(ok.locator("[data-latency]")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(dead.locator("[data-probe-error]")).not_to_be_empty()
    # The probe wrote each endpoint's health: the network's card now shows the dead one unhealthy.
    expect(page.locator('[data-endpoints="anvil-local"] tr[data-endpoint]').nth(1)).to_contain_text("unhealthy")
    assert "dead-KEY" not in page.content()
    expect(page.locator("[data-changelog], [data-console-empty]").first).to_be_visible()  # the lazy change log
    shot(page, "crypto")


@pytest.mark.chain
def test_operator_refunds_a_confirmed_payment_from_the_drawer(
    live_server,
    as_user,
    billing_admin_user,
    chain,
    world,
    user_api,
    plain_user,
    shot,  # noqa: F811
):
    follower_from_head(world, chain)
    payer = PAYERS[2]
    link_wallet(plain_user, payer.address)  # checkout takes only SIWE-verified payers
    tx = paid_by_receipt(chain, user_api, payer)

    page = as_user(billing_admin_user)
    page.goto(payments(live_server, "transactions"))
    page.locator(f'tr[data-tx="{tx.public_id}"] [data-console-open]').click()
    drawer = page.locator("#console-drawer")
    expect(drawer.locator("[data-history] li").last).to_have_attribute("data-to", "confirmed")
    expect(drawer.locator("[data-fee]")).to_be_visible()
    shot(page, "transaction-drawer")

    drawer.locator('input[name="reason"]').fill("customer asked")
    drawer.locator('[data-action="refund"]').click()
    expect(drawer.locator("[data-action-result]")).to_have_attribute("data-action-result", "refund_sent")
    expect(drawer.locator('[data-field="refund_tx_hash"]')).to_have_text(re.compile(r"^0x[0-9a-f]{64}$"))

    # The chain is the truth: the follower sees the Refunded log and the drawer (polling) shows it.
    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    contract_sync(contract_id=world.contract.pk)
    expect(drawer.locator("[data-drawer-status] [data-status]")).to_have_attribute(
        "data-status", "refunded", timeout=20_000
    )
    expect(drawer.locator("[data-history] li").last).to_have_attribute("data-to", "refunded")
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED


def test_contract_cards_and_timeline(live_server, as_user, billing_admin_user, catalog, shot):
    contract = catalog["contract"]
    for n in range(3):
        f.ChainEventFactory(contract=contract, name="Paid", block_number=100 + n, chain_id=contract.network.chain_id)
    page = as_user(billing_admin_user)
    # The lazy part first fails on the server: its error state offers Retry instead of spinning.
    chain_part = f"**/admin/payments/contracts/{contract.slug}/chain/"
    page.route(chain_part, lambda route: route.fulfill(status=500, body="boom"))
    page.goto(payments(live_server, "contracts"))
    card = page.locator(f'[data-contract="{contract.slug}"]')
    explorer = f"https://explorer.test/address/{contract.address}"
    expect(card.locator("[data-explorer]")).to_have_attribute("href", explorer)
    failed = card.locator("[data-chain-state] [data-console-error]")
    expect(failed).to_contain_text("The server answered 500.")
    page.unroute(chain_part)
    failed.locator("[data-console-retry]").click()
    # The real answer: this network has no endpoint, said in the card rather than a spinner forever.
    expect(card.locator("[data-chain-state] [data-console-error]")).to_contain_text("no enabled RPC endpoint")
    card.locator('[data-action="events"]').click()
    expect(page.locator("#timeline [data-event]")).to_have_count(3)
    expect(page).to_have_url(re.compile(rf"\?events={contract.slug}$"))
    shot(page, "contracts")


def test_operator_retries_a_reverted_refund_from_the_drawer(
    live_server,
    as_user,
    billing_admin_user,
    chain,
    world,
    user_api,
    plain_user,
    shot,  # noqa: F811
):
    """The first refund reverts (the contract was drained before it was mined): the drawer shows the failed
    refund with Retry refund instead of Refund; once the contract is funded again the retry lands once."""
    from billing.models import OperatorTransaction, RefundStatus
    from billing.services.operator_txs import operator_tx_watch

    follower_from_head(world, chain)
    payer = PAYERS[3]
    link_wallet(plain_user, payer.address)
    tx = paid_by_receipt(chain, user_api, payer)
    contract, funds = world.contract.address, chain.w3.eth.get_balance(world.contract.address)
    payer_before = chain.w3.eth.get_balance(payer.address)

    page = as_user(billing_admin_user)
    page.goto(payments(live_server, "transactions"))
    page.locator(f'tr[data-tx="{tx.public_id}"] [data-console-open]').click()
    drawer = page.locator("#console-drawer")
    expect(drawer.locator('[data-action="retry-refund"]')).to_have_count(0)
    drawer.locator('input[name="reason"]').fill("customer asked")
    chain.anvil.call("evm_setAutomine", [False])
    try:
        drawer.locator('[data-action="refund"]').click()
        expect(drawer.locator("[data-action-result]")).to_have_attribute("data-action-result", "refund_sent")
        chain.anvil.call("anvil_setBalance", [contract, "0x0"])  # drained before the refund is mined
        chain.anvil.call("evm_mine")
    finally:
        chain.anvil.call("evm_setAutomine", [True])
    first = OperatorTransaction.objects.get(payment=tx)
    assert operator_tx_watch(row_id=first.pk) == "reverted"
    tx.refresh_from_db()
    assert tx.refund_status == RefundStatus.FAILED

    page.reload()
    page.locator(f'tr[data-tx="{tx.public_id}"] [data-console-open]').click()
    expect(drawer.locator('[data-action="retry-refund"]')).to_be_visible()
    expect(drawer.locator('[data-action="refund"]')).to_have_count(0)
    shot(page, "transaction-drawer-retry-refund")

    chain.anvil.call("anvil_setBalance", [contract, hex(funds)])
    drawer.locator('input[name="reason"]').fill("funded again")
    drawer.locator('[data-action="retry-refund"]').click()
    expect(drawer.locator("[data-action-result]")).to_have_attribute("data-action-result", "refund_retried")
    retry = OperatorTransaction.objects.filter(payment=tx).order_by("-pk").first()
    assert retry.retry_of_id == first.pk
    assert operator_tx_watch(row_id=retry.pk) == "mined"
    chain.anvil.mine(2)
    contract_sync(contract_id=world.contract.pk)
    expect(drawer.locator("[data-drawer-status] [data-status]")).to_have_attribute(
        "data-status", "refunded", timeout=20_000
    )
    tx.refresh_from_db()
    assert tx.status == TxStatus.REFUNDED
    assert chain.w3.eth.get_balance(payer.address) == payer_before + int(tx.amount)
