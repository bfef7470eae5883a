"""EvmProvider.checkout against a real anvil: the wallet sends exactly the adapter's steps and the contract pays."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError

from billing.adapters.base import CheckoutRequest
from billing.adapters.evm import EvmProvider, InvalidCheckoutRequest
from billing.chain.abi import ERC20_ABI, decode_call, decode_error, decode_log
from billing.chain.artifacts import deploy_artifact, load_artifact, transact
from billing.chain.quote import Quote, SignerKeyMissing, new_order_id, recover_quote_signer
from tests.anvil import ANVIL_KEYS

pytestmark = pytest.mark.chain

OWNER = Account.from_key(ANVIL_KEYS[0])
SIGNER = Account.from_key(ANVIL_KEYS[1])
PAYER = Account.from_key(ANVIL_KEYS[2])
OTHER = Account.from_key(ANVIL_KEYS[3])
DUSD = 10**6


@pytest.fixture(scope="module")
def chain(anvil):
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    pass_contract, _ = deploy_artifact(w3, OWNER, "SubscriptionPass", OWNER.address, SIGNER.address)
    token, _ = deploy_artifact(w3, OWNER, "DemoToken")
    transact(w3, OWNER, token.functions.mint(PAYER.address, 500 * DUSD))
    return SimpleNamespace(w3=w3, pass_=pass_contract, token=token, abi=load_artifact("SubscriptionPass")["abi"])


@pytest.fixture
def signer_key(settings):
    settings.BILLING_QUOTE_SIGNER_KEY = ANVIL_KEYS[1]
    settings.BILLING_QUOTE_SIGNER_KEY_FILE = ""


def request_for(chain, *, token=None, symbol="ETH", decimals=18, amount=10**15, periods=1, plan_id=3, **extra):
    chain_now = chain.w3.eth.get_block("latest")["timestamp"]
    fields = {
        "order_id": new_order_id(),
        "chain_id": 31337,
        "contract_address": chain.pass_.address,
        "contract_abi": chain.abi,
        "mint_method": "pay",
        "eip712_name": "SubscriptionPass",
        "eip712_version": "1",
        "payer": PAYER.address.lower(),  # wallets hand out lower-case addresses too
        "plan_id": plan_id,
        "token_address": token,
        "token_symbol": symbol,
        "token_decimals": decimals,
        "amount": amount,
        "periods": periods,
        "deadline": datetime.fromtimestamp(chain_now + 1800, tz=UTC),
    }
    fields.update(extra)
    return CheckoutRequest(**fields)


def send_step(w3, account, step):
    """What a wallet does: send to/data/value on chain_id, nothing else."""
    tx = {
        "to": step.to,
        "data": step.data,
        "value": step.value,
        "chainId": step.chain_id,
        "nonce": w3.eth.get_transaction_count(account.address),
    }
    tx["gas"] = w3.eth.estimate_gas({**tx, "from": account.address}) + 20_000
    tx["maxPriorityFeePerGas"] = w3.eth.max_priority_fee
    tx["maxFeePerGas"] = 2 * w3.eth.get_block("latest")["baseFeePerGas"] + tx["maxPriorityFeePerGas"]
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def paid_event(chain, receipt) -> dict:
    found = [decode_log(chain.abi, log) for log in receipt["logs"] if log["address"] == chain.pass_.address]
    paid = [args for name, args in found if name == "Paid"]
    assert len(paid) == 1
    return paid[0]


def test_native_checkout_steps_pay_on_chain(chain, signer_key):
    request = request_for(chain, amount=10**15, periods=2)
    payload = EvmProvider().checkout(request)

    assert payload.chain_id == 31337 and payload.contract_address == chain.pass_.address
    assert payload.signer == SIGNER.address
    assert payload.expires_at == request.deadline
    assert payload.quote == {
        "orderId": request.order_id,
        "payer": PAYER.address,
        "planId": "3",
        "token": "0x0000000000000000000000000000000000000000",
        "amount": str(10**15),
        "periods": "2",
        "deadline": str(int(request.deadline.timestamp())),
    }
    assert payload.eip681 == f"ethereum:{chain.pass_.address}@31337?value={10**15}"
    assert payload.typed_data["domain"] == {
        "name": "SubscriptionPass",
        "version": "1",
        "chainId": 31337,
        "verifyingContract": chain.pass_.address,
    }
    (step,) = payload.steps
    assert (step.kind, step.to, step.value, step.chain_id, step.function) == (
        "pay",
        chain.pass_.address,
        10**15,
        31337,
        "pay",
    )
    # The calldata says what the page says it says.
    name, args = decode_call(chain.abi, step.data)
    assert name == "pay"
    assert args["quote"]["orderId"] == request.order_id and args["quote"]["amount"] == 10**15
    assert args["quote"]["payer"] == PAYER.address and args["signature"] == payload.signature
    assert step.args["quote"]["amount"] == str(10**15) and step.args["signature"] == payload.signature
    quote = Quote(**{**_quote_kwargs(payload.quote)})
    assert recover_quote_signer(quote, payload.signature, chain_id=31337, verifying_contract=chain.pass_.address) == (
        SIGNER.address
    )

    before = chain.w3.eth.get_balance(chain.pass_.address)
    receipt = send_step(chain.w3, PAYER, step)
    paid = paid_event(chain, receipt)
    assert paid["orderId"] == request.order_id and paid["payer"] == PAYER.address
    assert paid["amount"] == 10**15 and paid["periods"] == 2 and paid["planId"] == 3
    assert paid["token"] == "0x0000000000000000000000000000000000000000"
    assert chain.w3.eth.get_balance(chain.pass_.address) == before + 10**15


def test_erc20_checkout_is_approve_then_pay(chain, signer_key):
    token = chain.token.address
    request = request_for(chain, token=token, symbol="dUSD", decimals=6, amount=12 * DUSD)
    payload = EvmProvider().checkout(request)

    approve, pay = payload.steps
    assert (approve.kind, approve.to, approve.value, approve.function) == ("approve", token, 0, "approve")
    assert decode_call(ERC20_ABI, approve.data) == ("approve", {"spender": chain.pass_.address, "amount": 12 * DUSD})
    assert approve.args == {"spender": chain.pass_.address, "amount": str(12 * DUSD)}
    expected_link = f"ethereum:{token}@31337/approve?address={chain.pass_.address}&uint256={12 * DUSD}"
    assert payload.eip681 == approve.eip681 == expected_link
    assert "/transfer" not in payload.eip681
    assert (pay.kind, pay.to, pay.value) == ("pay", chain.pass_.address, 0)
    assert decode_call(chain.abi, pay.data)[1]["quote"]["token"] == token
    assert payload.quote["token"] == token and payload.quote["amount"] == str(12 * DUSD)

    before = chain.token.functions.balanceOf(PAYER.address).call()
    send_step(chain.w3, PAYER, approve)
    receipt = send_step(chain.w3, PAYER, pay)
    paid = paid_event(chain, receipt)
    assert paid["token"] == token and paid["amount"] == 12 * DUSD and paid["orderId"] == request.order_id
    assert chain.token.functions.balanceOf(PAYER.address).call() == before - 12 * DUSD
    transfers = [decode_log(chain.abi, log) for log in receipt["logs"] if log["address"] == token]
    assert transfers == [("Transfer", {"from": PAYER.address, "to": chain.pass_.address, "value": 12 * DUSD})]


def test_pay_step_only_works_for_the_quoted_payer(chain, signer_key):
    payload = EvmProvider().checkout(request_for(chain))
    (step,) = payload.steps
    with pytest.raises(ContractCustomError) as info:
        chain.w3.eth.estimate_gas({"from": OTHER.address, "to": step.to, "data": step.data, "value": step.value})
    assert decode_error(chain.abi, info.value.data) == "WrongPayer"


def test_checkout_refuses_bad_requests(chain, signer_key):
    adapter = EvmProvider()
    for bad in (
        {"amount": 0},
        {"periods": 0},
        {"payer": "not-an-address"},
        {"order_id": "0x1234"},
        {"mint_method": "payWithCard"},
        {"deadline": datetime(2030, 1, 1)},  # naive
    ):
        with pytest.raises(InvalidCheckoutRequest):
            adapter.checkout(request_for(chain, **bad))


def test_checkout_without_signer_key_fails_clearly(chain, settings):
    settings.BILLING_QUOTE_SIGNER_KEY = ""
    settings.BILLING_QUOTE_SIGNER_KEY_FILE = ""
    with pytest.raises(SignerKeyMissing, match="BILLING_QUOTE_SIGNER_KEY"):
        EvmProvider().checkout(request_for(chain))


def _quote_kwargs(quote_json: dict) -> dict:
    token = quote_json["token"]
    return {
        "order_id": quote_json["orderId"],
        "payer": quote_json["payer"],
        "plan_id": int(quote_json["planId"]),
        "token": None if int(token, 16) == 0 else token,
        "amount": int(quote_json["amount"]),
        "periods": int(quote_json["periods"]),
        "deadline": int(quote_json["deadline"]),
    }
