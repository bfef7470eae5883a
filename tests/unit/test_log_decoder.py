"""`LogDecoder` (the follower's compiled decoder) gives what `decode_log` (eth_abi over the ABI) gives for the
same raw log, value for value and error for error, also where it reads plain static words itself: clean
words, dirty padding, values out of their type's range, odd data lengths, non-hex digits."""

from __future__ import annotations

import pytest
from eth_abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.chain.abi import LogDecoder, decode_log, event_topics
from billing.chain.artifacts import load_artifact

ABI = load_artifact("SubscriptionPass")["abi"]
TOPICS = event_topics(ABI)
# Every static kind the fast reader takes, in one made-up event beside the contract's own.
ODD_EVENT = {
    "type": "event",
    "name": "Odd",
    "anonymous": False,
    "inputs": [
        {"name": "flag", "type": "bool", "indexed": False},
        {"name": "small", "type": "int8", "indexed": False},
        {"name": "big", "type": "int256", "indexed": False},
        {"name": "tag", "type": "bytes4", "indexed": False},
        {"name": "word", "type": "bytes32", "indexed": False},
        {"name": "who", "type": "address", "indexed": False},
        {"name": "count", "type": "uint16", "indexed": False},
    ],
}
ODD_ABI = [*ABI, ODD_EVENT]
ODD_TOPIC = event_topics(ODD_ABI)["Odd"]
word = st.binary(min_size=32, max_size=32).map(bytes.hex)


def _outcome(decode, log):
    try:
        return "ok", decode(log)
    except Exception as exc:  # the same error type either way
        return "error", type(exc).__name__


def _same(log, abi=ABI):
    assert _outcome(LogDecoder(abi).decode, log) == _outcome(lambda item: decode_log(abi, item), log)


def _paid(data: str) -> dict:
    payer = "0x" + "00" * 12 + "ab" * 20
    return {"address": "0x" + "cd" * 20, "topics": [TOPICS["Paid"], "0x" + "11" * 32, payer, "0x" + "07" * 32],
            "data": data}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    plan=st.integers(0, 2**256 - 1),
    token=st.binary(min_size=20, max_size=20),
    amount=st.integers(0, 2**256 - 1),
    periods=st.integers(0, 2**64 - 1),
    expires=st.integers(0, 2**64 - 1),
    upper=st.booleans(),
)
def test_clean_paid_logs_decode_as_eth_abi_decodes_them(plan, token, amount, periods, expires, upper):
    data = encode(["uint256", "address", "uint256", "uint64", "uint64"], [plan, token, amount, periods, expires]).hex()
    log = _paid("0x" + (data.upper() if upper else data))
    fast = LogDecoder(ABI).decode(log)
    assert fast == decode_log(ABI, log)
    assert fast[1]["amount"] == amount and fast[1]["periods"] == periods


@settings(max_examples=300, deadline=None)
@given(words=st.lists(word, min_size=4, max_size=6), extra=st.sampled_from(["", "0", "00", "zz", " 1"]))
def test_any_paid_data_decodes_or_fails_as_eth_abi(words, extra):
    """Random words mostly have dirty padding for the address and uint64 fields: eth_abi refuses them, and so
    must the decoder; wrong lengths and non-hex characters too."""
    _same(_paid("0x" + "".join(words) + extra))


@settings(max_examples=300, deadline=None)
@given(words=st.lists(word, min_size=7, max_size=7), clean=st.lists(st.booleans(), min_size=7, max_size=7))
def test_every_static_kind_decodes_or_fails_as_eth_abi(words, clean):
    """Half the words cleaned to their type's range (bool 0/1, int8 sign-extended, bytes4 right-padded, address
    and uint16 left-padded), half left random."""
    values = list(words)
    fixes = [
        lambda w: "0" * 63 + ("1" if int(w, 16) % 2 else "0"),
        lambda w: ("f" * 62 + w[-2:]) if int(w[-2:], 16) >= 128 else "0" * 62 + w[-2:],
        lambda w: w,
        lambda w: w[:8] + "0" * 56,
        lambda w: w,
        lambda w: "0" * 24 + w[24:],
        lambda w: "0" * 60 + w[-4:],
    ]
    for i, fix in enumerate(fixes):
        if clean[i]:
            values[i] = fix(values[i])
    log = {"address": "0x" + "cd" * 20, "topics": [ODD_TOPIC], "data": "0x" + "".join(values)}
    _same(log, ODD_ABI)
    if all(clean):
        name, args = LogDecoder(ODD_ABI).decode(log)
        assert name == "Odd" and args["tag"] == "0x" + values[3][:8]


@pytest.mark.parametrize(
    "data",
    [
        "0x",
        "0x" + "00" * 160,
        "0x" + "00" * 11 + "01" + "00" * 148,  # a dirty first padding byte of the token address
        "0x" + "00" * 96 + "01" + "00" * 63,  # periods above 2**64
        "0x" + "00" * 159,
    ],
)
def test_edge_cases_of_paid_data(data):
    _same(_paid(data))
