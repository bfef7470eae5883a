"""SubscriptionPass on a real anvil: quotes, payments, refusals, refunds, payouts, pause, signer rotation, and
the deploy_contracts command."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.management import call_command
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError

from billing.chain.abi import decode_error, decode_log
from billing.chain.artifacts import deploy_artifact, load_artifact, transact
from billing.chain.quote import Quote, new_order_id, quote_digest, sign_quote
from billing.models import PaymentContract, Token
from tests.anvil import ANVIL_KEYS
from tests.factories import NetworkFactory, PaymentProviderFactory, PlanFactory, RpcEndpointFactory

pytestmark = pytest.mark.chain

DAY = 86_400
PERIOD = 30 * DAY  # the contract's default period
ZERO = "0x0000000000000000000000000000000000000000"
OWNER = Account.from_key(ANVIL_KEYS[0])
SIGNER = Account.from_key(ANVIL_KEYS[1])
ALICE = Account.from_key(ANVIL_KEYS[2])
BOB = Account.from_key(ANVIL_KEYS[3])
CAROL = Account.from_key(ANVIL_KEYS[4])
STRANGER = Account.from_key(ANVIL_KEYS[5])  # never configured as a signer
DUSD = 10**6


def deploy(w3):
    pass_contract, receipt = deploy_artifact(w3, OWNER, "SubscriptionPass", OWNER.address, SIGNER.address)
    return pass_contract, receipt


@pytest.fixture(scope="module")
def chain(anvil):
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    pass_contract, _ = deploy(w3)
    token, _ = deploy_artifact(w3, OWNER, "DemoToken")
    for payer in (ALICE, BOB, CAROL):
        transact(w3, OWNER, token.functions.mint(payer.address, 1_000 * DUSD))
    errors_abi = load_artifact("SubscriptionPass")["abi"] + load_artifact("DemoToken")["abi"]
    return SimpleNamespace(w3=w3, anvil=anvil, pass_=pass_contract, token=token, errors_abi=errors_abi)


def now(w3) -> int:
    return w3.eth.get_block("latest")["timestamp"]


def make_quote(chain, payer, *, token=None, amount=10**15, periods=1, plan_id=1, deadline=None, order_id=None):
    return Quote(
        order_id=order_id or new_order_id(),
        payer=payer.address,
        plan_id=plan_id,
        token=token,
        amount=amount,
        periods=periods,
        deadline=deadline if deadline is not None else now(chain.w3) + 600,
    )


def sign(chain, quote, *, key=SIGNER, chain_id=31337, contract=None):
    return sign_quote(quote, chain_id=chain_id, verifying_contract=contract or chain.pass_.address, signer=key)


def pay_call(chain, quote, signature, *, contract=None):
    return (contract or chain.pass_).functions.pay(quote.as_abi_tuple(), bytes.fromhex(signature[2:]))


def pay(chain, payer, quote, signature, *, value=None, contract=None):
    value = quote.amount if value is None and quote.token is None else (value or 0)
    return transact(chain.w3, payer, pay_call(chain, quote, signature, contract=contract), value=value)


def expect_error(chain, name, fn, *, sender, value=0):
    """The call reverts with the custom error `name` (checked by its selector, not by a message)."""
    with pytest.raises(ContractCustomError) as info:
        fn.call({"from": sender.address, "value": value})
    data = info.value.data if isinstance(info.value.data, str) else info.value.data.get("data")
    assert decode_error(chain.errors_abi, data) == name


def events(chain, receipt, address=None):
    address = address or chain.pass_.address
    decoded = [decode_log(chain.errors_abi, log) for log in receipt["logs"] if log["address"] == address]
    return [d for d in decoded if d]


def named(chain, receipt, name, address=None):
    found = [args for event, args in events(chain, receipt, address) if event == name]
    assert len(found) == 1, events(chain, receipt, address)
    return found[0]


# ------------------------------------------------------------------------------------------- digest


def test_python_digest_equals_contract_digest(chain):
    for token in (None, chain.token.address):
        quote = make_quote(chain, ALICE, token=token, amount=2**200 + 7, periods=3, plan_id=42)
        ours = quote_digest(quote, chain_id=31337, verifying_contract=chain.pass_.address)
        theirs = chain.pass_.functions.quoteDigest(quote.as_abi_tuple()).call()
        assert ours == "0x" + theirs.hex()
    # A different chain id gives another digest, so a quote signed for it cannot pass here.
    assert quote_digest(quote, chain_id=1, verifying_contract=chain.pass_.address) != ours


# ------------------------------------------------------------------------------------------- payments


def test_native_payment_mints_then_extends_one_pass(chain):
    w3, pass_ = chain.w3, chain.pass_
    first = make_quote(chain, ALICE, amount=10**15)
    balance_before = w3.eth.get_balance(pass_.address)
    receipt = pay(chain, ALICE, first, sign(chain, first))
    paid = named(chain, receipt, "Paid")
    token_id = pass_.functions.passOf(ALICE.address).call()
    block_time = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert token_id > 0
    assert paid == {
        "orderId": first.order_id,
        "payer": ALICE.address,
        "tokenId": token_id,
        "planId": 1,
        "token": ZERO,
        "amount": 10**15,
        "periods": 1,
        "expiresAt": block_time + PERIOD,
    }
    assert pass_.functions.ownerOf(token_id).call() == ALICE.address
    assert w3.eth.get_balance(pass_.address) == balance_before + 10**15
    order = pass_.functions.orders(bytes.fromhex(first.order_id[2:])).call()
    assert order == [ALICE.address, ZERO, 10**15, token_id, 1, 1, False]

    second = make_quote(chain, ALICE, amount=3 * 10**15, periods=3)
    receipt = pay(chain, ALICE, second, sign(chain, second))
    paid = named(chain, receipt, "Paid")
    assert paid["tokenId"] == token_id  # extended, not a second pass
    assert paid["expiresAt"] == block_time + 4 * PERIOD
    assert pass_.functions.expiresAt(token_id).call() == block_time + 4 * PERIOD
    assert pass_.functions.balanceOf(ALICE.address).call() == 1
    assert pass_.functions.tokenOfOwner(ALICE.address).call() == token_id


def test_erc20_payment_and_plan_period(chain):
    w3, pass_, token = chain.w3, chain.pass_, chain.token
    transact(w3, OWNER, pass_.functions.setPlanPeriod(7, 7 * DAY))
    assert pass_.functions.periodSeconds(7).call() == 7 * DAY
    quote = make_quote(chain, BOB, token=token.address, amount=25 * DUSD, periods=2, plan_id=7)
    signature = sign(chain, quote)
    # Without an allowance the token refuses the pull.
    expect_error(chain, "ERC20InsufficientAllowance", pay_call(chain, quote, signature), sender=BOB)
    transact(w3, BOB, token.functions.approve(pass_.address, 25 * DUSD))
    # ERC-20 payments carry no native value.
    expect_error(chain, "WrongValue", pay_call(chain, quote, signature), sender=BOB, value=1)
    before = token.functions.balanceOf(BOB.address).call()
    receipt = pay(chain, BOB, quote, signature)
    paid = named(chain, receipt, "Paid")
    block_time = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert paid["token"] == token.address and paid["amount"] == 25 * DUSD and paid["planId"] == 7
    assert paid["expiresAt"] == block_time + 14 * DAY
    assert token.functions.balanceOf(BOB.address).call() == before - 25 * DUSD
    transfer = named(chain, receipt, "Transfer", address=token.address)
    assert transfer == {"from": BOB.address, "to": pass_.address, "value": 25 * DUSD}


def test_pass_cannot_be_transferred(chain):
    quote = make_quote(chain, CAROL)
    pay(chain, CAROL, quote, sign(chain, quote))
    token_id = chain.pass_.functions.passOf(CAROL.address).call()
    fn = chain.pass_.functions.transferFrom(CAROL.address, BOB.address, token_id)
    expect_error(chain, "NonTransferable", fn, sender=CAROL)


# ------------------------------------------------------------------------------------------- refusals


def test_tampered_quotes_are_refused(chain):
    quote = make_quote(chain, ALICE, amount=10**16)
    signature = sign(chain, quote)
    cheaper = Quote(**{**quote.__dict__, "amount": 1})
    expect_error(chain, "InvalidSigner", pay_call(chain, cheaper, signature), sender=ALICE, value=1)
    other_token = Quote(**{**quote.__dict__, "token": chain.token.address})
    expect_error(chain, "InvalidSigner", pay_call(chain, other_token, signature), sender=ALICE)
    longer = Quote(**{**quote.__dict__, "periods": 12})
    expect_error(chain, "InvalidSigner", pay_call(chain, longer, signature), sender=ALICE, value=10**16)
    # Another chain id, another verifying contract, a signer that is not configured.
    for bad in (
        sign(chain, quote, chain_id=1),
        sign(chain, quote, contract=chain.token.address),
        sign(chain, quote, key=STRANGER),
        "0x" + "00" * 65,
    ):
        expect_error(chain, "InvalidSigner", pay_call(chain, quote, bad), sender=ALICE, value=10**16)
    # The right signature, but someone else sends it, or with the wrong value.
    expect_error(chain, "WrongPayer", pay_call(chain, quote, signature), sender=BOB, value=10**16)
    expect_error(chain, "WrongValue", pay_call(chain, quote, signature), sender=ALICE, value=10**16 - 1)
    zero = make_quote(chain, ALICE, periods=0)
    expect_error(chain, "ZeroPeriods", pay_call(chain, zero, sign(chain, zero)), sender=ALICE, value=zero.amount)

    # A refused payment that is mined anyway reverts, moves nothing and emits nothing.
    before = chain.w3.eth.get_balance(chain.pass_.address)
    tx = pay_call(chain, cheaper, signature).build_transaction(
        {"from": ALICE.address, "value": 1, "gas": 300_000, "nonce": chain.w3.eth.get_transaction_count(ALICE.address)}
    )
    tx_hash = chain.w3.eth.send_raw_transaction(ALICE.sign_transaction(tx).raw_transaction)
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 0 and receipt["logs"] == []
    assert chain.w3.eth.get_balance(chain.pass_.address) == before
    # The genuine quote still goes through.
    assert named(chain, pay(chain, ALICE, quote, signature), "Paid")["amount"] == 10**16


def test_reused_order_id_is_refused(chain):
    quote = make_quote(chain, BOB)
    pay(chain, BOB, quote, sign(chain, quote))
    expect_error(chain, "OrderUsed", pay_call(chain, quote, sign(chain, quote)), sender=BOB, value=quote.amount)
    # Even a fresh signature over other terms cannot reuse the id.
    again = make_quote(chain, BOB, amount=5, order_id=quote.order_id)
    expect_error(chain, "OrderUsed", pay_call(chain, again, sign(chain, again)), sender=BOB, value=5)


def test_expired_quote_is_refused(chain):
    w3, anvil = chain.w3, chain.anvil
    quote = make_quote(chain, CAROL, deadline=now(w3) + 60)
    signature = sign(chain, quote)
    anvil.call("evm_increaseTime", [120])
    anvil.mine(1)
    assert now(w3) > quote.deadline
    expect_error(chain, "QuoteExpired", pay_call(chain, quote, signature), sender=CAROL, value=quote.amount)
    # Exactly at the deadline still pays (block.timestamp <= deadline).
    at_edge = make_quote(chain, CAROL, deadline=now(w3) + 30)
    anvil.call("anvil_setNextBlockTimestamp", [at_edge.deadline])
    assert named(chain, pay(chain, CAROL, at_edge, sign(chain, at_edge)), "Paid")["payer"] == CAROL.address


def test_signer_rotation(chain):
    w3 = chain.w3
    pass_, _ = deploy(w3)  # own contract: rotation must not leak into other tests
    new_signer = Account.create()
    receipt = transact(w3, OWNER, pass_.functions.setSigner(new_signer.address, True))
    assert named(chain, receipt, "SignerUpdated", pass_.address) == {"signer": new_signer.address, "allowed": True}
    transact(w3, OWNER, pass_.functions.setSigner(SIGNER.address, False))
    assert pass_.functions.isSigner(SIGNER.address).call() is False
    quote = make_quote(chain, ALICE)
    old = sign(chain, quote, contract=pass_.address)
    expect_error(chain, "InvalidSigner", pay_call(chain, quote, old, contract=pass_), sender=ALICE, value=quote.amount)
    new = sign(chain, quote, key=new_signer, contract=pass_.address)
    assert named(chain, pay(chain, ALICE, quote, new, contract=pass_), "Paid", pass_.address)["orderId"] == (
        quote.order_id
    )
    # Only the owner rotates.
    fn = pass_.functions.setSigner(STRANGER.address, True)
    expect_error(chain, "OwnableUnauthorizedAccount", fn, sender=STRANGER)


def test_paused_contract_refuses_pay(chain):
    w3 = chain.w3
    pass_, _ = deploy(w3)
    transact(w3, OWNER, pass_.functions.pause())
    quote = make_quote(chain, BOB)
    signature = sign(chain, quote, contract=pass_.address)
    call = pay_call(chain, quote, signature, contract=pass_)
    expect_error(chain, "EnforcedPause", call, sender=BOB, value=quote.amount)
    transact(w3, OWNER, pass_.functions.unpause())
    receipt = pay(chain, BOB, quote, signature, contract=pass_)
    assert named(chain, receipt, "Paid", pass_.address)["payer"] == BOB.address


# ------------------------------------------------------------------------------------------- refunds and payouts


def test_native_refund_shortens_then_burns(chain):
    w3 = chain.w3
    pass_, _ = deploy(w3)
    first, second = make_quote(chain, CAROL, amount=10**15), make_quote(chain, CAROL, amount=2 * 10**15, periods=2)
    pay(chain, CAROL, first, sign(chain, first, contract=pass_.address), contract=pass_)
    pay(chain, CAROL, second, sign(chain, second, contract=pass_.address), contract=pass_)
    token_id = pass_.functions.passOf(CAROL.address).call()
    expiry = pass_.functions.expiresAt(token_id).call()

    balance = w3.eth.get_balance(CAROL.address)
    receipt = transact(w3, OWNER, pass_.functions.refund(bytes.fromhex(second.order_id[2:])))
    refunded = named(chain, receipt, "Refunded", pass_.address)
    assert refunded == {
        "orderId": second.order_id,
        "payer": CAROL.address,
        "tokenId": token_id,
        "token": ZERO,
        "amount": 2 * 10**15,
        "expiresAt": expiry - 2 * PERIOD,
    }
    assert w3.eth.get_balance(CAROL.address) == balance + 2 * 10**15  # the owner paid the gas
    assert pass_.functions.ownerOf(token_id).call() == CAROL.address
    assert pass_.functions.orders(bytes.fromhex(second.order_id[2:])).call()[6] is True
    expect_error(chain, "AlreadyRefunded", pass_.functions.refund(bytes.fromhex(second.order_id[2:])), sender=OWNER)
    expect_error(chain, "UnknownOrder", pass_.functions.refund(b"\x01" * 32), sender=OWNER)
    fn = pass_.functions.refund(bytes.fromhex(first.order_id[2:]))
    expect_error(chain, "OwnableUnauthorizedAccount", fn, sender=CAROL)

    # Refunding the last paid period leaves nothing: the pass is burned.
    receipt = transact(w3, OWNER, pass_.functions.refund(bytes.fromhex(first.order_id[2:])))
    assert named(chain, receipt, "Refunded", pass_.address)["expiresAt"] == 0
    assert [e for e, _ in events(chain, receipt, pass_.address)] == ["Transfer", "Refunded"]  # burn, then refund
    assert pass_.functions.passOf(CAROL.address).call() == 0
    assert pass_.functions.balanceOf(CAROL.address).call() == 0
    assert w3.eth.get_balance(pass_.address) == 0
    # Paying again mints a new pass.
    third = make_quote(chain, CAROL)
    receipt = pay(chain, CAROL, third, sign(chain, third, contract=pass_.address), contract=pass_)
    paid = named(chain, receipt, "Paid", pass_.address)
    assert paid["tokenId"] not in (0, token_id)


def test_erc20_refund_and_withdraw(chain):
    w3, token = chain.w3, chain.token
    pass_, _ = deploy(w3)
    quote = make_quote(chain, ALICE, token=token.address, amount=40 * DUSD)
    transact(w3, ALICE, token.functions.approve(pass_.address, 40 * DUSD))
    pay(chain, ALICE, quote, sign(chain, quote, contract=pass_.address), contract=pass_)
    native = make_quote(chain, BOB, amount=5 * 10**15)
    pay(chain, BOB, native, sign(chain, native, contract=pass_.address), contract=pass_)

    before = token.functions.balanceOf(ALICE.address).call()
    receipt = transact(w3, OWNER, pass_.functions.refund(bytes.fromhex(quote.order_id[2:])))
    assert named(chain, receipt, "Refunded", pass_.address)["amount"] == 40 * DUSD
    assert token.functions.balanceOf(ALICE.address).call() == before + 40 * DUSD
    assert token.functions.balanceOf(pass_.address).call() == 0

    treasury = Account.create().address
    receipt = transact(w3, OWNER, pass_.functions.withdraw(ZERO, treasury, 3 * 10**15))
    assert named(chain, receipt, "Withdrawn", pass_.address) == {"token": ZERO, "to": treasury, "amount": 3 * 10**15}
    assert w3.eth.get_balance(treasury) == 3 * 10**15
    assert w3.eth.get_balance(pass_.address) == 2 * 10**15
    expect_error(chain, "ZeroAddress", pass_.functions.withdraw(ZERO, ZERO, 1), sender=OWNER)
    expect_error(chain, "OwnableUnauthorizedAccount", pass_.functions.withdraw(ZERO, treasury, 1), sender=BOB)
    expect_error(chain, "NativeTransferFailed", pass_.functions.withdraw(ZERO, treasury, 10**18), sender=OWNER)

    # An ERC-20 payout (tokens that reached the contract, e.g. by a plain transfer).
    transact(w3, CAROL, token.functions.transfer(pass_.address, 7 * DUSD))
    receipt = transact(w3, OWNER, pass_.functions.withdraw(token.address, treasury, 7 * DUSD))
    withdrawn = named(chain, receipt, "Withdrawn", pass_.address)
    assert withdrawn == {"token": token.address, "to": treasury, "amount": 7 * DUSD}
    assert token.functions.balanceOf(treasury).call() == 7 * DUSD


# ------------------------------------------------------------------------------------------- deploy_contracts


@pytest.mark.django_db
def test_deploy_contracts_registers_contract_and_demo_token(anvil, settings):
    settings.BILLING_OPERATOR_KEY = ANVIL_KEYS[0]
    settings.BILLING_QUOTE_SIGNER_KEY = ANVIL_KEYS[1]
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    network = NetworkFactory(slug="anvil", chain_id=31337)
    RpcEndpointFactory(network=network, position=0, url=anvil.url)
    receiver = Account.create().address

    call_command("deploy_contracts", "--network", "anvil", "--with-demo-token", "--mint-demo-to", receiver)
    row = PaymentContract.objects.get(slug="pass-anvil")
    assert row.network == network and row.mint_method == "pay" and row.burn_method == "refund"
    assert row.withdraw_method == "withdraw" and row.has_method("pay") and row.deployment_block > 0
    assert len(w3.eth.get_code(row.address)) > 0
    assert row.webhook_secret.startswith("whsec_")
    deployed = w3.eth.contract(address=row.address, abi=row.abi)
    assert deployed.functions.owner().call() == OWNER.address
    assert deployed.functions.isSigner(SIGNER.address).call() is True
    row.full_clean()
    dusd = Token.objects.get(network=network, symbol="dUSD")
    assert dusd.decimals == 6 and len(w3.eth.get_code(dusd.address)) > 0
    erc20 = w3.eth.contract(address=dusd.address, abi=load_artifact("DemoToken")["abi"])
    assert erc20.functions.balanceOf(receiver).call() == 1_000_000 * DUSD
    assert erc20.functions.symbol().call() == "dUSD"

    # A weekly plan bound to the contract: a re-run keeps the deployment and sets its on-chain period.
    provider = PaymentProviderFactory(contract=row)
    plan = PlanFactory(provider=provider, contract=row, price_token=dusd, interval="week")
    secret, address = row.webhook_secret, row.address
    call_command("deploy_contracts", "--network", "anvil", "--if-missing", "--with-demo-token")
    row.refresh_from_db()
    assert (row.address, row.webhook_secret) == (address, secret)
    assert Token.objects.get(pk=dusd.pk).address == dusd.address
    assert erc20.functions.balanceOf(receiver).call() == 1_000_000 * DUSD  # nobody named: no new mint
    assert deployed.functions.periodSeconds(plan.pk).call() == 7 * DAY

    # Without --if-missing a new contract replaces the address; the webhook secret stays.
    call_command("deploy_contracts", "--network", "anvil")
    row.refresh_from_db()
    assert row.address != address and row.webhook_secret == secret
    fresh = w3.eth.contract(address=row.address, abi=row.abi)
    assert fresh.functions.periodSeconds(plan.pk).call() == 7 * DAY
