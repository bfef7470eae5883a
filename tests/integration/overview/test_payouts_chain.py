"""Payouts read each contract's balances from a real chain (anvil): the native coin by eth_getBalance, an ERC-20
by balanceOf; cached with their read time; shown stale, never failing, when the chain stops answering."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from eth_account import Account
from web3 import Web3

from billing import selectors as billing_selectors
from billing.chain.artifacts import deploy_artifact, transact
from billing.demo.seed import MINIMAL_PASS_ABI
from billing.models import Network, PaymentContract, RpcEndpoint, Token
from overview import selectors
from tests.anvil import ANVIL_KEYS
from tests.conftest import token_client

pytestmark = [pytest.mark.django_db, pytest.mark.chain]
OWNER = Account.from_key(ANVIL_KEYS[0])


@pytest.fixture
def treasury_world(anvil):
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    token, _ = deploy_artifact(w3, OWNER, "DemoToken")
    holder = Account.create().address  # stands for the payment contract: any address holds balances
    transact(w3, OWNER, token.functions.mint(holder, 1_234_567_890))
    wei = 3 * 10**18 + 17
    w3.provider.make_request("anvil_setBalance", [holder, hex(wei)])
    network = Network.objects.create(slug="anvil-payouts", name="Anvil", chain_id=31337, is_testnet=False)
    endpoint = RpcEndpoint.objects.create(network=network, position=0, url=anvil.url, timeout_seconds=Decimal("3"))
    Token.objects.create(network=network, symbol="ETH", address="", decimals=18, usd_estimate=Decimal("2000"))
    Token.objects.create(network=network, symbol="dUSD", address=token.address, decimals=6, usd_estimate=Decimal("1"))
    contract = PaymentContract.objects.create(
        slug="pass-payouts",
        network=network,
        address=holder,
        abi=MINIMAL_PASS_ABI,
        mint_method="pay",
        burn_method="refund",
    )
    return {"endpoint": endpoint, "contract": contract, "wei": wei, "units": 1_234_567_890}


def balances(body: dict) -> dict[str, dict]:
    [contract] = [c for c in body["contracts"] if c["contract"] == "pass-payouts"]
    return {b["token"]: b for b in contract["balances"]}


def test_balances_come_from_the_chain_then_the_cache_then_show_stale(treasury_world, support_user, monkeypatch):
    api = token_client(support_user)
    reads = []
    real = billing_selectors.contract_balances_read

    def counting(**kwargs):
        reads.append(kwargs["contract"].slug)
        return real(**kwargs)

    monkeypatch.setattr(billing_selectors, "contract_balances_read", counting)
    first = balances(api.get("/v1/billing/overview/payouts").json())
    assert first["ETH@anvil-payouts"]["amount"] == str(treasury_world["wei"])
    assert first["ETH@anvil-payouts"]["display"] == "3.000000000000000017"
    assert first["ETH@anvil-payouts"]["usd"] == "6000.00"
    assert first["dUSD@anvil-payouts"]["amount"] == str(treasury_world["units"])
    assert first["dUSD@anvil-payouts"]["usd"] == "1234.57"
    assert all(b["stale"] is False and b["read_at"] and b["error"] == "" for b in first.values())
    assert reads == ["pass-payouts"]

    # Within a minute the cached balance is served: no new chain read.
    again = balances(api.get("/v1/billing/overview/payouts").json())
    assert again == first and reads == ["pass-payouts"]

    # The endpoint dies and the cached read ages: the last balance stays, marked stale, with the reason.
    RpcEndpoint.objects.filter(pk=treasury_world["endpoint"].pk).update(url="http://127.0.0.1:9/")
    later = selectors.timezone.now() + timedelta(minutes=5)
    monkeypatch.setattr(selectors.timezone, "now", lambda: later)
    response = api.get("/v1/billing/overview/payouts")
    assert response.status_code == 200
    stale = balances(response.json())
    assert reads == ["pass-payouts", "pass-payouts"]
    for key in ("ETH@anvil-payouts", "dUSD@anvil-payouts"):
        assert stale[key]["amount"] == first[key]["amount"]
        assert stale[key]["read_at"] == first[key]["read_at"]
        assert stale[key]["stale"] is True and "127.0.0.1:9" in stale[key]["error"]
