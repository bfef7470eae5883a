"""A deployed SubscriptionPass + DemoToken on the session anvil, and the database rows that point at
them (network, endpoint, tokens, contract, provider, plans), for the payment lifecycle tests."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone
from eth_account import Account
from web3 import Web3

from billing import signing
from billing.chain.artifacts import deploy_artifact, load_artifact, send_transaction, transact
from billing.models import CryptoConfig, Network, PaymentContract, PaymentProvider, Plan, RpcEndpoint, Token
from billing.services.subscriptions import subscription_apply_payment
from tests.anvil import ANVIL_KEYS
from tests.conftest import link_wallet
from tests.factories import ConfirmedTransactionFactory, PaymentProviderFactory, PlanFactory, TokenFactory

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


@pytest.fixture(autouse=True)
def _payers_verified(request):
    """Checkout refuses a payer that is not one of the user's SIWE-verified wallets: the lifecycle tests'
    customer (`plain_user`, behind `user_api`) pays from PAYERS, linked here as SIWE would. Tests that pay as
    another user or from another address link it themselves (tests.conftest.link_wallet)."""
    if "plain_user" in request.fixturenames:
        user = request.getfixturevalue("plain_user")
        for payer in PAYERS:
            link_wallet(user, payer.address)


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


def paid_by_receipt(chain, user_api, payer, plan: str = "eth-pro"):
    """A checkout paid on chain, its hash reported by the client and confirmed by the receipt check (the
    follower not involved): the ledger row, confirmed."""
    from billing.models import PaymentTransaction
    from billing.services.receipts import transaction_check_receipt

    body = user_api.post("/v1/billing/checkout", {"plan": plan, "wallet": payer.address}, format="json").json()
    (tx_hash,) = send_steps(chain, payer, body["payment"])
    user_api.post(f"/v1/billing/checkout/{body['id']}/tx", {"tx_hash": tx_hash}, format="json")
    chain.anvil.mine(2)
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert transaction_check_receipt(transaction_id=tx.pk) == "confirmed"
    return tx


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


# --- helpers for the acceptance suite (issue 4) -------------------------------------------------------

WEBHOOK_URL = "/v1/billing/webhooks/contracts/{slug}"


def create_checkout(user_api, plan: str, payer, *, key: str | None = None, **extra) -> dict:
    """POST /v1/billing/checkout and return the 201 body."""
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = user_api.post(
        "/v1/billing/checkout", {"plan": plan, "wallet": payer.address, **extra}, format="json", **headers
    )
    assert response.status_code == 201, response.content
    return response.json()


def sign_step(chain, account, step: dict, *, nonce: int | None = None, value: int | None = None, gas=None) -> bytes:
    """Sign one wallet step ourselves (explicit nonce, gas and fees) and return the raw bytes, so the very
    same transaction can be sent again after a reorg dropped it."""
    w3 = chain.w3
    tx = {
        "to": step["to"],
        "data": step["data"],
        "value": int(step["value"]) if value is None else value,
        "chainId": 31337,
        "type": 2,
        "nonce": w3.eth.get_transaction_count(account.address, "pending") if nonce is None else nonce,
    }
    tx["gas"] = gas or int(w3.eth.estimate_gas({**tx, "from": account.address}) * 1.2) + 10_000
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    tx["maxPriorityFeePerGas"] = 10**9
    tx["maxFeePerGas"] = 4 * base + 10**9  # survives a few blocks of base-fee growth
    return bytes(account.sign_transaction(tx).raw_transaction)


def send_raw(chain, raw: bytes, *, wait: bool = True) -> str:
    """Send signed bytes; with automine on, wait for the receipt (whatever its status)."""
    tx_hash = chain.w3.eth.send_raw_transaction(raw)
    if wait:
        chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)
    return tx_hash.to_0x_hex()


def follower_from_head(world, chain):
    """Start the chain follower at the current head: earlier tests' payments on the shared session chain
    stay out of this test's ledger."""
    from billing.models import ChainBlock, ChainCursor

    head = chain.w3.eth.get_block("latest")
    block_hash = head["hash"].to_0x_hex().lower()
    ChainBlock.objects.create(contract=world.contract, number=head["number"], hash=block_hash)  # a fork point
    return ChainCursor.objects.create(contract=world.contract, last_block=head["number"], last_block_hash=block_hash)


def post_webhook(client, world, body: dict):
    raw, signature = signed_webhook(body)
    return client.post(
        WEBHOOK_URL.format(slug=world.contract.slug),
        raw,
        content_type="application/json",
        HTTP_X_BILLING_SIGNATURE=signature,
    )


def plan_changed_for(tx_id: int):
    from billing.models import OutboxEvent

    return OutboxEvent.objects.filter(topic="plan.changed.v1", payload__transaction_id=str(tx_id))


# --- subscription rules without a chain (test_periods, test_subscriptions): ledger rows from factories ----------


@pytest.fixture
def plans():
    provider = PaymentProviderFactory()
    token = TokenFactory(network=provider.contract.network)
    common = {"provider": provider, "contract": provider.contract, "price_token": token}
    return {
        "starter": PlanFactory(slug="starter", tier=1, price_amount=5_000_000, limits={"api_calls": 1000}, **common),
        "pro": PlanFactory(
            slug="pro", tier=2, price_amount=15_000_000, limits={"api_calls": 10000}, grace_period_days=3, **common
        ),
    }


@pytest.fixture
def t0():
    return timezone.now().replace(microsecond=0) + timedelta(days=1)


def pay(user, plan, *, now, periods: int = 1):
    tx = ConfirmedTransactionFactory(user=user, plan=plan, periods=periods, amount=plan.price_amount * periods)
    return tx, subscription_apply_payment(tx=tx, now=now)
