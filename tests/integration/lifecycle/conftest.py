"""A deployed SubscriptionPass + DemoToken on the session anvil, and the database rows that point at
them (network, endpoint, tokens, contract, provider, plans), for the payment lifecycle tests."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from eth_account import Account
from web3 import Web3

from billing import signing
from billing.chain.artifacts import deploy_artifact, load_artifact, send_transaction, transact
from billing.models import CryptoConfig, Network, PaymentContract, PaymentProvider, Plan, RpcEndpoint, Token
from tests.anvil import ANVIL_KEYS

OWNER = Account.from_key(ANVIL_KEYS[0])
SIGNER = Account.from_key(ANVIL_KEYS[1])
PAYERS = [Account.from_key(k) for k in ANVIL_KEYS[2:6]]
DUSD = 10**6
WEBHOOK_SECRET = "whsec_lifecycle_test_secret"


@pytest.fixture(scope="session")
def chain(anvil):
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    pass_contract, receipt = deploy_artifact(w3, OWNER, "SubscriptionPass", OWNER.address, SIGNER.address)
    token, _ = deploy_artifact(w3, OWNER, "DemoToken")
    for payer in PAYERS:
        transact(w3, OWNER, token.functions.mint(payer.address, 1_000_000 * DUSD))
    return SimpleNamespace(
        w3=w3,
        anvil=anvil,
        pass_=pass_contract,
        token=token,
        deployment_block=receipt["blockNumber"],
        abi=load_artifact("SubscriptionPass")["abi"],
    )


@pytest.fixture
def world(chain, settings, db):
    settings.BILLING_QUOTE_SIGNER_KEY = ANVIL_KEYS[1]
    settings.BILLING_OPERATOR_KEY = ANVIL_KEYS[0]
    config = CryptoConfig.load()
    config.max_retries = 1
    config.backoff_base_ms = 10
    config.backoff_max_ms = 50
    config.save()
    network = Network.objects.create(
        slug="anvil-test",
        name="Anvil",
        chain_id=31337,
        confirmation_depth=2,
        block_time_seconds=1,
        explorer_tx_url="https://explorer.test/tx/{tx_hash}",
    )
    RpcEndpoint.objects.create(network=network, position=0, url=chain.anvil.url, timeout_seconds=Decimal("3"))
    eth = Token.objects.create(network=network, symbol="ETH", address="", decimals=18, usd_estimate=Decimal("3000"))
    dusd = Token.objects.create(
        network=network, symbol="dUSD", address=chain.token.address, decimals=6, usd_estimate=Decimal("1")
    )
    contract = PaymentContract.objects.create(
        slug="pass-test",
        network=network,
        address=chain.pass_.address,
        abi=chain.abi,
        mint_method="pay",
        burn_method="refund",
        withdraw_method="withdraw",
        webhook_secret=WEBHOOK_SECRET,
        deployment_block=chain.deployment_block,
    )
    provider = PaymentProvider.objects.create(slug="evm-test", type="evm", default_network=network, contract=contract)
    provider.networks.set([network])
    provider.supported_tokens.set([eth, dusd])
    plans = {
        "pro": Plan.objects.create(
            slug="pro",
            title="Pro",
            price_token=dusd,
            price_amount=15 * DUSD,
            price_usd_estimate=Decimal("15"),
            provider=provider,
            contract=contract,
            limits={"api_calls": 10000, "seats": 5},
            tier=2,
        ),
        "starter": Plan.objects.create(
            slug="starter",
            title="Starter",
            price_token=dusd,
            price_amount=5 * DUSD,
            price_usd_estimate=Decimal("5"),
            provider=provider,
            contract=contract,
            limits={"api_calls": 1000, "seats": 1},
            tier=1,
        ),
        "eth": Plan.objects.create(
            slug="eth-pro",
            title="Pro (ETH)",
            price_token=eth,
            price_amount=5 * 10**15,
            price_usd_estimate=Decimal("15"),
            provider=provider,
            contract=contract,
            limits={"api_calls": 10000},
            tier=2,
        ),
    }
    return SimpleNamespace(network=network, eth=eth, dusd=dusd, contract=contract, provider=provider, plans=plans)


def send_steps(chain, account, payment: dict) -> list[str]:
    """Send exactly the wallet steps of a checkout payload; returns the tx hashes (last = the payment)."""
    hashes = []
    for step in payment["steps"]:
        receipt = send_transaction(
            chain.w3, account, {"to": step["to"], "data": step["data"], "value": int(step["value"])}
        )
        hashes.append(receipt["transactionHash"].to_0x_hex())
    return hashes


def signed_webhook(body: dict, secret: str = WEBHOOK_SECRET) -> tuple[bytes, str]:
    raw = json.dumps(body).encode()
    return raw, signing.sign(raw, [secret])


def webhook_body(chain, tx, *, tx_hash: str, delivery_id: str, kind: str = "payment.confirmed") -> dict:
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)
    log = next(lg for lg in receipt["logs"] if lg["address"].lower() == chain.pass_.address.lower())
    return {
        "id": delivery_id,
        "type": kind,
        "chain_id": 31337,
        "contract_address": chain.pass_.address,
        "method": "pay",
        "tx_hash": tx_hash,
        "log_index": log["logIndex"],
        "block_number": receipt["blockNumber"],
        "block_hash": receipt["blockHash"].to_0x_hex(),
        "order_id": tx.order_id,
        "payer": tx.payer_address,
        "token": tx.token.address or None,
        "amount": str(tx.amount),
    }
