"""Operator transactions on a real anvil: a stuck transaction replaced with higher fees lands once, the gas
cap refuses, the key is required and never logged, and the nonce lock serializes senders."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction
from eth_account import Account

from billing.chain import sender as sender_module
from billing.chain.rpc import ChainClient, EndpointSpec, RetryPolicy, reset_endpoint_state
from billing.chain.sender import (
    GasPriceAboveCap,
    OperatorKeyMissing,
    forget_nonces,
    operator_account,
    send_transaction,
    wait_or_replace,
)
from tests.anvil import ANVIL_KEYS, Anvil
from tests.factories import CryptoConfigFactory

pytestmark = pytest.mark.chain

OPERATOR_KEY = ANVIL_KEYS[4]
OPERATOR = Account.from_key(OPERATOR_KEY).address
GWEI = 10**9


@pytest.fixture
def chain():
    """A fresh anvil per test: these tests pause mining and count nonces."""
    reset_endpoint_state()
    forget_nonces()
    with Anvil() as node:
        yield node
    forget_nonces()


@pytest.fixture
def rpc(chain):
    return ChainClient(
        chain_id=31337,
        endpoints=[EndpointSpec(url=chain.url, timeout=5)],
        policy=RetryPolicy(max_retries=1, backoff_base=0.01),
        record_health=False,
    )


@pytest.fixture
def operator_key(settings):
    settings.BILLING_OPERATOR_KEY = OPERATOR_KEY
    settings.BILLING_OPERATOR_KEY_FILE = ""
    return OPERATOR_KEY


def balance(chain: Anvil, address: str) -> int:
    return int(chain.call("eth_getBalance", [address, "latest"]), 16)


def nonce_of(chain: Anvil, address: str, block: str = "latest") -> int:
    return int(chain.call("eth_getTransactionCount", [address, block]), 16)


def pending_hashes(chain: Anvil) -> list[str]:
    pool = chain.call("txpool_content")["pending"]
    return [tx["hash"] for by_nonce in pool.values() for tx in by_nonce.values()]


@pytest.mark.django_db
def test_stuck_transaction_is_replaced_with_higher_fees_and_lands_once(chain, rpc, operator_key):
    CryptoConfigFactory(gas_cap_wei=200 * GWEI)
    recipient = Account.create().address
    amount = 12345 * 10**12
    nonce_before = nonce_of(chain, OPERATOR)
    chain.call("evm_setAutomine", [False])

    # Low fees on purpose: exactly the base fee and a 1 wei tip.
    first = send_transaction(
        client=rpc, to=recipient, data="0x", value=amount, max_fee_per_gas=GWEI, max_priority_fee_per_gas=1
    )
    assert first.nonce == nonce_before and first.gas >= 21000
    assert pending_hashes(chain) == [first.tx_hash]

    replaced_with: list[str] = []

    def miner():
        # Resume mining only once the replacement sits in the pool instead of the first version.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            hashes = pending_hashes(chain)
            if hashes and hashes != [first.tx_hash]:
                replaced_with.extend(hashes)
                break
            time.sleep(0.05)
        chain.call("evm_setAutomine", [True])
        chain.call("evm_mine")

    thread = threading.Thread(target=miner)
    thread.start()
    try:
        receipt = wait_or_replace(
            client=rpc, sent=first, stuck_after_seconds=0.5, fee_bump_percent=20, poll=0.1, timeout=30
        )
    finally:
        thread.join(timeout=30)

    assert len(replaced_with) == 1 and replaced_with[0] != first.tx_hash
    second_hash = replaced_with[0]
    assert receipt["transactionHash"] == second_hash
    assert receipt["status"] == "0x1"
    # Exactly one of the two versions has a receipt; the nonce was used once; the money moved once.
    assert chain.call("eth_getTransactionReceipt", [first.tx_hash]) is None
    assert chain.call("eth_getTransactionReceipt", [second_hash]) is not None
    assert nonce_of(chain, OPERATOR) == nonce_before + 1
    assert balance(chain, recipient) == amount
    landed = chain.call("eth_getTransactionByHash", [second_hash])
    assert int(landed["nonce"], 16) == first.nonce
    assert int(landed["maxFeePerGas"], 16) >= first.max_fee_per_gas * 120 // 100
    assert int(landed["maxPriorityFeePerGas"], 16) >= 2  # 1 wei bumped by 20 %, rounded up
    assert int(landed["maxFeePerGas"], 16) <= 200 * GWEI


@pytest.mark.django_db
def test_replacement_never_goes_above_the_cap(chain, rpc, operator_key):
    """At the cap there is no room for a valid bump: the tx keeps waiting rather than overpaying."""
    CryptoConfigFactory(gas_cap_wei=2 * GWEI)
    chain.call("evm_setAutomine", [False])
    sent = send_transaction(
        client=rpc, to=Account.create().address, value=1, max_fee_per_gas=2 * GWEI, max_priority_fee_per_gas=GWEI
    )
    with pytest.raises(sender_module.TxNotMined):
        wait_or_replace(client=rpc, sent=sent, stuck_after_seconds=0.2, fee_bump_percent=10, poll=0.1, timeout=1)
    assert pending_hashes(chain) == [sent.tx_hash]


@pytest.mark.django_db
def test_default_fees_follow_the_chain_and_the_tx_is_mined(chain, rpc, operator_key):
    CryptoConfigFactory(gas_cap_wei=200 * GWEI)
    recipient = Account.create().address
    sent = send_transaction(client=rpc, to=recipient, value=7)
    receipt = wait_or_replace(client=rpc, sent=sent, stuck_after_seconds=60, fee_bump_percent=20, poll=0.05)
    assert receipt["transactionHash"] == sent.tx_hash and receipt["status"] == "0x1"
    base = int(chain.call("eth_feeHistory", ["0x1", "latest", []])["baseFeePerGas"][0], 16)
    tip = int(chain.call("eth_maxPriorityFeePerGas"), 16)
    assert sent.max_priority_fee_per_gas == tip
    assert sent.max_fee_per_gas >= base + tip
    assert balance(chain, recipient) == 7


@pytest.mark.django_db
def test_refuses_to_send_above_the_gas_cap(chain, rpc, operator_key):
    CryptoConfigFactory(gas_cap_wei=10**8)  # 0.1 gwei, under anvil's 1 gwei base fee
    before = nonce_of(chain, OPERATOR, "pending")
    with pytest.raises(GasPriceAboveCap, match="above the gas cap of 100000000 wei"):
        send_transaction(client=rpc, to=Account.create().address, value=1)
    with pytest.raises(GasPriceAboveCap):
        send_transaction(
            client=rpc, to=Account.create().address, value=1, max_fee_per_gas=10**9, max_priority_fee_per_gas=1
        )
    assert nonce_of(chain, OPERATOR, "pending") == before
    assert pending_hashes(chain) == []


def test_operator_key_missing_or_invalid_is_a_clear_error(settings, tmp_path):
    settings.BILLING_OPERATOR_KEY = ""
    settings.BILLING_OPERATOR_KEY_FILE = ""
    with pytest.raises(OperatorKeyMissing, match="BILLING_OPERATOR_KEY or BILLING_OPERATOR_KEY_FILE"):
        operator_account()

    settings.BILLING_OPERATOR_KEY_FILE = str(tmp_path / "missing.key")
    with pytest.raises(OperatorKeyMissing, match="cannot be read"):
        operator_account()

    key_file = tmp_path / "operator.key"
    key_file.write_text(OPERATOR_KEY + "\n")
    settings.BILLING_OPERATOR_KEY_FILE = str(key_file)
    assert operator_account().address == OPERATOR

    settings.BILLING_OPERATOR_KEY = "0x" + "zz" * 32
    with pytest.raises(OperatorKeyMissing) as caught:
        operator_account()
    assert "zz" not in str(caught.value) and caught.value.__cause__ is None


@pytest.mark.django_db
def test_operator_key_never_reaches_a_log_line(chain, rpc, operator_key, caplog):
    CryptoConfigFactory()
    caplog.set_level("DEBUG")
    sent = send_transaction(client=rpc, to=Account.create().address, value=1)
    wait_or_replace(client=rpc, sent=sent, stuck_after_seconds=60, fee_bump_percent=20, poll=0.05)
    assert any("operator_tx_sent" in str(r.msg) for r in caplog.records)
    text = caplog.text + " ".join(str(r.msg) for r in caplog.records)
    assert OPERATOR_KEY[2:] not in text and OPERATOR_KEY[2:].upper() not in text


@pytest.mark.django_db(transaction=True)
def test_nonce_lock_makes_a_second_sender_wait(chain, rpc, operator_key):
    """Another worker holding the (chain, address) advisory lock blocks a send until it commits."""
    CryptoConfigFactory()
    lock_key = sender_module._lock_key(31337, OPERATOR)
    holding = threading.Event()
    release = threading.Event()

    def other_worker():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key])
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert holding.wait(10)

    result: dict = {}

    def send():
        try:
            result["sent"] = send_transaction(client=rpc, to=Account.create().address, value=1)
        except Exception as exc:  # surfaced by the assertions below
            result["error"] = exc
        finally:
            connections.close_all()

    sending = threading.Thread(target=send)
    sending.start()
    time.sleep(0.7)
    assert "sent" not in result and "error" not in result  # blocked on the lock
    assert nonce_of(chain, OPERATOR, "pending") == 0
    release.set()
    worker.join(10)
    sending.join(20)
    assert "error" not in result, result.get("error")
    assert result["sent"].nonce == 0
    assert nonce_of(chain, OPERATOR, "pending") == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_use_each_nonce_once(chain, rpc, operator_key):
    CryptoConfigFactory()
    recipient = Account.create().address
    sent: list = []
    errors: list = []

    def worker():
        own = ChainClient(chain_id=31337, endpoints=[EndpointSpec(url=chain.url, timeout=5)], record_health=False)
        try:
            for _ in range(4):
                sent.append(send_transaction(client=own, to=recipient, value=1))
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(s.nonce for s in sent) == list(range(12))
    for s in sent:
        wait_or_replace(client=rpc, sent=s, stuck_after_seconds=60, fee_bump_percent=20, poll=0.05, timeout=20)
    assert nonce_of(chain, OPERATOR) == 12
    assert balance(chain, recipient) == 12
