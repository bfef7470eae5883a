"""EIP-712 quotes, key loading and the ABI helpers, without a chain."""

from __future__ import annotations

import logging
import re

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from billing.chain.abi import ERC20_ABI, decode_call, decode_log, encode_call, event_topics, jsonable
from billing.chain.artifacts import load_artifact
from billing.chain.quote import (
    QUOTE_TYPEHASH,
    Quote,
    SignerKeyMissing,
    get_operator_account,
    get_quote_signer,
    new_order_id,
    quote_digest,
    recover_quote_signer,
    sign_quote,
    typed_data,
)
from tests.anvil import ANVIL_KEYS

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
TOKEN = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
PAYER = Account.from_key(ANVIL_KEYS[2]).address
SIGNER = Account.from_key(ANVIL_KEYS[1])


def sample(**overrides) -> Quote:
    fields = {
        "order_id": "0x" + "ab" * 32,
        "payer": PAYER,
        "plan_id": 5,
        "token": TOKEN,
        "amount": 2**255 + 1,
        "periods": 3,
        "deadline": 1_900_000_000,
    }
    fields.update(overrides)
    return Quote(**fields)


def manual_digest(q: Quote, chain_id: int, contract: str, name: str = "SubscriptionPass", version: str = "1") -> str:
    """The EIP-712 digest written out from the standard, independent of eth_account's encoder."""
    domain_type = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [domain_type, keccak(text=name), keccak(text=version), chain_id, contract],
        )
    )
    struct = keccak(
        encode(
            ["bytes32", "bytes32", "address", "uint256", "address", "uint256", "uint64", "uint64"],
            [
                QUOTE_TYPEHASH,
                bytes.fromhex(q.order_id[2:]),
                q.payer,
                q.plan_id,
                q.token or "0x" + "00" * 20,
                q.amount,
                q.periods,
                q.deadline,
            ],
        )
    )
    return "0x" + keccak(b"\x19\x01" + separator + struct).hex()


def test_typehash_is_the_fixed_interface():
    fixed = "Quote(bytes32 orderId,address payer,uint256 planId,address token,uint256 amount,uint64 periods,"
    fixed += "uint64 deadline)"
    assert keccak(text=fixed) == QUOTE_TYPEHASH


@pytest.mark.parametrize("token", [TOKEN, None])
def test_digest_matches_the_standard(token):
    q = sample(token=token)
    assert quote_digest(q, chain_id=31337, verifying_contract=CONTRACT) == manual_digest(q, 31337, CONTRACT)


def test_every_field_and_domain_part_changes_the_digest():
    base = sample()
    digest = quote_digest(base, chain_id=31337, verifying_contract=CONTRACT)
    changed = [
        sample(order_id="0x" + "cd" * 32),
        sample(payer=TOKEN),
        sample(plan_id=6),
        sample(token=None),
        sample(amount=1),
        sample(periods=4),
        sample(deadline=1_900_000_001),
    ]
    digests = {quote_digest(q, chain_id=31337, verifying_contract=CONTRACT) for q in changed}
    digests |= {
        quote_digest(base, chain_id=1, verifying_contract=CONTRACT),
        quote_digest(base, chain_id=31337, verifying_contract=TOKEN),
        quote_digest(base, chain_id=31337, verifying_contract=CONTRACT, version="2"),
        quote_digest(base, chain_id=31337, verifying_contract=CONTRACT, name="Other"),
    }
    assert digest not in digests and len(digests) == 11


def test_signature_recovers_to_the_signer_over_the_digest():
    q = sample()
    signature = sign_quote(q, chain_id=31337, verifying_contract=CONTRACT, signer=SIGNER)
    assert re.fullmatch(r"0x[0-9a-f]{130}", signature)
    assert int(signature[-2:], 16) in (27, 28)  # what OpenZeppelin's ECDSA expects
    digest = bytes.fromhex(quote_digest(q, chain_id=31337, verifying_contract=CONTRACT)[2:])
    assert Account._recover_hash(digest, signature=signature) == SIGNER.address
    assert recover_quote_signer(q, signature, chain_id=31337, verifying_contract=CONTRACT) == SIGNER.address
    assert recover_quote_signer(q, signature, chain_id=1, verifying_contract=CONTRACT) != SIGNER.address


def test_typed_data_document_is_json_safe():
    doc = typed_data(sample(), chain_id=31337, verifying_contract=CONTRACT.lower())
    assert doc["primaryType"] == "Quote"
    assert doc["domain"]["verifyingContract"] == CONTRACT
    assert doc["message"]["amount"] == str(2**255 + 1) and doc["message"]["planId"] == "5"
    assert [f["name"] for f in doc["types"]["Quote"]] == [
        "orderId",
        "payer",
        "planId",
        "token",
        "amount",
        "periods",
        "deadline",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"order_id": "0x12"},
        {"order_id": "ab" * 33},
        {"payer": "0x123"},
        {"token": "nope"},
        {"amount": -1},
        {"amount": 2**256},
        {"periods": 2**64},
        {"amount": 1.5},
        {"deadline": True},
    ],
)
def test_quote_refuses_values_the_contract_cannot_take(bad):
    with pytest.raises(ValueError):
        sample(**bad)


def test_new_order_id_is_random_bytes32():
    ids = {new_order_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"0x[0-9a-f]{64}", i) for i in ids)


# ------------------------------------------------------------------------------------------- keys


def test_signer_key_from_setting_or_file(settings, tmp_path):
    settings.BILLING_QUOTE_SIGNER_KEY = ANVIL_KEYS[1]
    assert get_quote_signer().address == SIGNER.address
    key_file = tmp_path / "signer.key"
    key_file.write_text(ANVIL_KEYS[3] + "\n")
    settings.BILLING_QUOTE_SIGNER_KEY = ""
    settings.BILLING_QUOTE_SIGNER_KEY_FILE = str(key_file)
    assert get_quote_signer().address == Account.from_key(ANVIL_KEYS[3]).address
    settings.BILLING_OPERATOR_KEY = ANVIL_KEYS[0]
    assert get_operator_account().address == Account.from_key(ANVIL_KEYS[0]).address


def test_missing_or_bad_key_errors_never_show_the_key(settings, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings.BILLING_QUOTE_SIGNER_KEY = ""
    settings.BILLING_QUOTE_SIGNER_KEY_FILE = ""
    with pytest.raises(SignerKeyMissing, match="BILLING_QUOTE_SIGNER_KEY"):
        get_quote_signer()
    settings.BILLING_QUOTE_SIGNER_KEY_FILE = str(tmp_path / "absent.key")
    with pytest.raises(SignerKeyMissing, match="cannot be read"):
        get_quote_signer()
    almost = ANVIL_KEYS[1][:-1] + "z"
    settings.BILLING_QUOTE_SIGNER_KEY = almost
    with pytest.raises(SignerKeyMissing) as info:
        get_quote_signer()
    assert almost[2:20] not in str(info.value) and info.value.__cause__ is None
    assert almost[2:20] not in caplog.text


# ------------------------------------------------------------------------------------------- ABI helpers


def test_encode_and_decode_calls_roundtrip():
    data = encode_call(ERC20_ABI, "approve", [CONTRACT, 2**256 - 1])
    assert data.startswith("0x095ea7b3")  # approve(address,uint256)
    assert decode_call(ERC20_ABI, data) == ("approve", {"spender": CONTRACT, "amount": 2**256 - 1})
    assert jsonable(decode_call(ERC20_ABI, data)[1]) == {"spender": CONTRACT, "amount": str(2**256 - 1)}
    with pytest.raises(ValueError, match="not a function"):
        encode_call(ERC20_ABI, "mint", [CONTRACT, 1])


def test_pay_calldata_decodes_to_the_quote():
    abi = load_artifact("SubscriptionPass")["abi"]
    q = sample()
    data = encode_call(abi, "pay", [q.as_abi_tuple(), b"\x01" * 65])
    name, args = decode_call(abi, data)
    assert name == "pay"
    assert args["quote"] == {
        "orderId": q.order_id,
        "payer": PAYER,
        "planId": 5,
        "token": TOKEN,
        "amount": 2**255 + 1,
        "periods": 3,
        "deadline": 1_900_000_000,
    }
    assert args["signature"] == "0x" + "01" * 65


def _topic_address(address: str) -> str:
    return "0x" + "00" * 12 + address[2:].lower()


def test_decode_logs_of_the_contract_and_erc20():
    abi = load_artifact("SubscriptionPass")["abi"]
    topics = event_topics(abi)
    order = "0x" + "11" * 32
    paid_log = {
        "address": CONTRACT,
        "topics": [topics["Paid"], order, _topic_address(PAYER), "0x" + f"{7:064x}"],
        "data": "0x"
        + encode(["uint256", "address", "uint256", "uint64", "uint64"], [9, TOKEN, 2**200, 2, 1_900_000_000]).hex(),
    }
    assert decode_log(abi, paid_log) == (
        "Paid",
        {
            "orderId": order,
            "payer": PAYER,
            "tokenId": 7,
            "planId": 9,
            "token": TOKEN,
            "amount": 2**200,
            "periods": 2,
            "expiresAt": 1_900_000_000,
        },
    )
    withdrawn = {
        "topics": [topics["Withdrawn"], _topic_address(TOKEN), _topic_address(PAYER)],
        "data": bytes(encode(["uint256"], [5])),
    }
    assert decode_log(abi, withdrawn) == ("Withdrawn", {"token": TOKEN, "to": PAYER, "amount": 5})
    transfer_topic = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
    erc20 = {
        "topics": [transfer_topic, _topic_address(PAYER), _topic_address(CONTRACT)],
        "data": encode(["uint256"], [3]),
    }
    assert decode_log([], erc20) == ("Transfer", {"from": PAYER, "to": CONTRACT, "value": 3})
    # The pass's own (ERC-721) Transfer has the same topic but three indexed args.
    erc721 = {"topics": [transfer_topic, _topic_address(PAYER), _topic_address(CONTRACT), "0x" + f"{7:064x}"]}
    assert decode_log(abi, erc721) == ("Transfer", {"from": PAYER, "to": CONTRACT, "tokenId": 7})
    assert decode_log([], erc721) is None
    assert decode_log(abi, {"topics": ["0x" + "22" * 32], "data": "0x"}) is None
    assert to_checksum_address(decode_log(abi, paid_log)[1]["payer"]) == PAYER
