"""ABI helpers: encode and decode calls of a contract from its ABI, and decode its logs (Paid, Refunded,
Withdrawn, ... and the ERC-20 Transfer) into plain values: ints for amounts, checksummed addresses,
0x-hex for bytes.

Kept free of network access: the ABI comes from a PaymentContract row or a build artifact."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_utils import is_address, keccak, to_checksum_address
from hexbytes import HexBytes

# The parts of ERC-20 the backend uses (approve step, balances, Transfer logs).
ERC20_ABI: list[dict] = [
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "transfer",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "event",
        "name": "Transfer",
        "anonymous": False,
        "inputs": [
            {"name": "from", "type": "address", "indexed": True},
            {"name": "to", "type": "address", "indexed": True},
            {"name": "value", "type": "uint256", "indexed": False},
        ],
    },
]


def canonical_type(param: Mapping) -> str:
    """Solidity type as it appears in a signature; tuples expand to their components."""
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param.get("components", []))
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def signature(item: Mapping) -> str:
    return f"{item['name']}({','.join(canonical_type(p) for p in item.get('inputs', []))})"


def selector(item: Mapping) -> str:
    """4-byte selector of a function or custom error, 0x hex."""
    return "0x" + keccak(text=signature(item))[:4].hex()


def event_topic(item: Mapping) -> str:
    return "0x" + keccak(text=signature(item)).hex()


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)


def normalize(value: Any, param: Mapping | None = None) -> Any:
    """Plain Python view of one decoded ABI value: tuples with components become dicts."""
    kind = (param or {}).get("type", "")
    if kind.startswith("tuple") and not kind.endswith("]"):
        components = param.get("components", [])
        if isinstance(value, Mapping):
            return {c["name"]: normalize(value[c["name"]], c) for c in components}
        return {c["name"]: normalize(v, c) for c, v in zip(components, value, strict=True)}
    if kind.endswith("]") and isinstance(value, list | tuple):
        inner = dict(param, type=kind[: kind.rindex("[")])
        return [normalize(v, inner) for v in value]
    if isinstance(value, bytes | bytearray | HexBytes):
        return _hex(value)
    if kind == "address" or (not kind and isinstance(value, str) and is_address(value)):
        return checksum(value)
    if isinstance(value, Mapping):
        return {k: normalize(v) for k, v in value.items()}
    return value


def jsonable(value: Any) -> Any:
    """Like `normalize`, then ints (not bools) as strings: token amounts exceed 2^53."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- calls


def function_abi(abi: Iterable[Mapping], name: str) -> dict:
    matches = [item for item in abi if item.get("type") == "function" and item.get("name") == name]
    if not matches:
        raise ValueError(f"'{name}' is not a function in the ABI.")
    if len(matches) > 1:
        raise ValueError(f"'{name}' is overloaded in the ABI; give the full signature.")
    return dict(matches[0])


EthAbiError = (DecodingError, EncodingError)


@dataclass(frozen=True)
class _FunctionCodec:
    name: str
    selector: bytes
    types: tuple[str, ...]
    inputs: tuple[dict, ...]


@lru_cache(maxsize=512)
def _codec_for(item_json: str) -> _FunctionCodec:
    item = json.loads(item_json)
    inputs = tuple(item.get("inputs", []))
    return _FunctionCodec(
        name=item["name"],
        selector=keccak(text=signature(item))[:4],
        types=tuple(canonical_type(p) for p in inputs),
        inputs=inputs,
    )


def _codec(item: Mapping) -> _FunctionCodec:
    """Selector and argument types of one function item, worked out once per process (keyed by the item's
    JSON): encoding and decoding are then eth_abi alone, with no web3 contract object per call."""
    return _codec_for(json.dumps(item, sort_keys=True))


def encode_call(abi: list, function: str, args: list | tuple) -> str:
    """Calldata (0x hex) of `function(*args)`; structs are passed as tuples in component order."""
    codec = _codec(function_abi(abi, function))
    if len(args) != len(codec.types):
        raise ValueError(f"'{function}' takes {len(codec.types)} arguments, {len(args)} given.")
    try:
        encoded = abi_encode(codec.types, list(args))
    except EthAbiError as exc:
        raise ValueError(f"Arguments do not fit '{function}': {exc}") from exc
    return "0x" + (codec.selector + encoded).hex()


def decode_call(abi: list, data: str | bytes, *, function: str | None = None) -> tuple[str, dict]:
    """(function name, {arg name: plain value}) of calldata; `function` narrows the search to that name."""
    raw = _bytes(data)
    candidates = [function_abi(abi, function)] if function else [i for i in abi if i.get("type") == "function"]
    for item in candidates:
        codec = _codec(item)
        if raw[:4] == codec.selector:
            try:
                values = abi_decode(list(codec.types), raw[4:])
            except EthAbiError as exc:
                raise ValueError(f"Calldata does not decode as '{codec.name}': {exc}") from exc
            return codec.name, {p["name"]: normalize(value, p) for p, value in zip(codec.inputs, values, strict=True)}
    raise ValueError(f"Could not find any function with matching selector 0x{raw[:4].hex()}.")


def error_selectors(abi: Iterable[Mapping]) -> dict[str, str]:
    """{selector hex: error name} for the custom errors in an ABI."""
    return {selector(item): item["name"] for item in abi if item.get("type") == "error"}


def decode_error(abi: Iterable[Mapping], revert_data: str | bytes | None) -> str | None:
    """Name of the custom error a revert carried, if the ABI declares it."""
    if not revert_data:
        return None
    data = _hex(revert_data)
    return error_selectors(abi).get(data[:10])


# --------------------------------------------------------------------------------------------- logs


@lru_cache(maxsize=64)
def _event_index(events_json: str) -> dict[str, list[dict]]:
    """topic0 -> event items (a list: ERC-20 and ERC-721 Transfer share a topic, told apart by indexing)."""
    index: dict[str, list[dict]] = {}
    for item in json.loads(events_json):
        index.setdefault(event_topic(item), []).append(item)
    return index


def _events_json(abi: Iterable[Mapping], include_erc20: bool) -> str:
    items = [dict(item) for item in abi if item.get("type") == "event"]
    if include_erc20:
        items += [item for item in ERC20_ABI if item["type"] == "event"]
    return json.dumps(items, sort_keys=True)


def event_topics(abi: Iterable[Mapping], names: Iterable[str] | None = None) -> dict[str, str]:
    """{event name: topic0} for the ABI's events (optionally only `names`), for eth_getLogs filters."""
    wanted = set(names) if names is not None else None
    return {
        item["name"]: event_topic(item)
        for item in abi
        if item.get("type") == "event" and (wanted is None or item["name"] in wanted)
    }


def decode_log(abi: Iterable[Mapping], log: Mapping, *, include_erc20: bool = True) -> tuple[str, dict] | None:
    """(event name, args) of one log (raw JSON-RPC dict or web3 AttributeDict), or None if no event matches.

    Amounts stay ints, addresses come back checksummed and bytes32 as 0x hex. With include_erc20, the
    ERC-20 Transfer event is recognised even when the contract's ABI lacks it (token logs)."""
    topics = [_hex(t) for t in log.get("topics", [])]
    if not topics:
        return None
    for item in _event_index(_events_json(abi, include_erc20)).get(topics[0], []):
        inputs = item.get("inputs", [])
        indexed = [p for p in inputs if p.get("indexed")]
        if len(indexed) == len(topics) - 1:
            return item["name"], _decode_event_args(inputs, indexed, topics[1:], log.get("data") or "0x")
    return None


def _decode_event_args(inputs: list, indexed: list, topics: list[str], data: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for param, topic in zip(indexed, topics, strict=True):
        kind = canonical_type(param)
        if kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("("):
            args[param["name"]] = _hex(topic)  # only the hash of a dynamic value is in the topic
        else:
            (value,) = abi_decode([kind], _bytes(topic))
            args[param["name"]] = normalize(value, param)
    plain = [p for p in inputs if not p.get("indexed")]
    if plain:
        values = abi_decode([canonical_type(p) for p in plain], _bytes(data))
        for param, value in zip(plain, values, strict=True):
            args[param["name"]] = normalize(value, param)
    # Keep the ABI's argument order.
    return {p["name"]: args[p["name"]] for p in inputs}


# --------------------------------------------------------------------------------------------- compiled logs


@lru_cache(maxsize=4096)
def checksum(address: str) -> str:
    """to_checksum_address, cached: the same payers, tokens and contracts come back in every batch."""
    return to_checksum_address(address)


def _topic_reader(param: Mapping):
    """A function topic (0x hex) -> plain value for one indexed parameter, as `decode_log` gives it."""
    kind = canonical_type(param)
    if kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("("):
        return lambda topic: topic.lower()  # only the hash of a dynamic value is in the topic
    if kind == "address":
        return lambda topic: checksum("0x" + topic[-40:])
    if kind.startswith("uint"):
        return lambda topic: int(topic, 16)
    if kind == "bytes32":
        return lambda topic: topic.lower()
    return lambda topic: normalize(abi_decode([kind], _bytes(topic))[0], param)


def _value_reader(param: Mapping):
    kind = canonical_type(param)
    if kind == "address":
        return checksum
    if kind.startswith(("uint", "int", "bool")) and not kind.endswith("]"):
        return None  # eth_abi's value is already the plain one
    return lambda value: normalize(value, param)


class _Irregular(Exception):
    """A data word the fast reader does not take as it stands (dirty padding, out of range): eth_abi decides."""


_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")
_ZERO_PAD = "0" * 64
_STATIC_KIND = re.compile(r"(uint|int|bytes)(\d+)|address|bool")


def _word_reader(kind: str):
    """A function 64 hex digits -> the value eth_abi gives for one static `kind` in strict mode, or None when
    `kind` is not a plain static type (tuples, arrays, dynamic types: eth_abi decodes those). A word eth_abi
    would refuse or read differently raises _Irregular, and the caller hands the whole log to eth_abi."""
    match = _STATIC_KIND.fullmatch(kind)
    if match is None:
        return None
    base, size = match.group(1), int(match.group(2)) if match.group(2) else 0
    if kind == "address":

        def read(word: str) -> str:
            if word[:24] != _ZERO_PAD[:24]:
                raise _Irregular
            return "0x" + word[24:].lower()

    elif kind == "bool":

        def read(word: str) -> bool:
            if word[:63] != _ZERO_PAD[:63] or word[63] not in "01":
                raise _Irregular
            return word[63] == "1"

    elif base == "uint" and 0 < size <= 256 and size % 8 == 0:
        limit = 1 << size

        def read(word: str) -> int:
            value = int(word, 16)
            if value >= limit:
                raise _Irregular
            return value

    elif base == "int" and 0 < size <= 256 and size % 8 == 0:
        low, high = -(1 << (size - 1)), 1 << (size - 1)

        def read(word: str) -> int:
            value = int(word, 16)
            if value >= 1 << 255:
                value -= 1 << 256
            if not low <= value < high:
                raise _Irregular
            return value

    elif base == "bytes" and 0 < size <= 32:
        digits = 2 * size

        def read(word: str) -> bytes:
            if word[digits:] != _ZERO_PAD[digits:]:
                raise _Irregular
            return bytes.fromhex(word[:digits])

    else:
        return None
    return read


def _words_reader(kinds: list[str]):
    """Reads the data of an event whose unindexed arguments are all plain static types (each one 32-byte word,
    like the Paid event's) straight from the eth_getLogs hex, or None for any other event."""
    readers = [_word_reader(kind) for kind in kinds]
    if not readers or any(read is None for read in readers):
        return None
    size = 64 * len(readers)
    spans = [(read, 64 * i, 64 * (i + 1)) for i, read in enumerate(readers)]

    def read_words(data: str) -> list | None:
        digits = data[2:] if data.startswith("0x") else data  # as _bytes reads it
        if len(digits) != size or not _HEX_DIGITS.fullmatch(digits):
            return None
        try:
            return [read(digits[start:end]) for read, start, end in spans]
        except _Irregular:
            return None

    return read_words


class LogDecoder:
    """The events of one ABI (plus the ERC-20 Transfer), compiled once: topic0 -> the names, the eth_abi types
    of the data and a reader per argument. `decode` gives what `decode_log` gives for the same raw log, without
    rebuilding the ABI index or normalising generically per log (the follower decodes thousands per batch).
    An event whose data is only plain static words (the Paid event) is read word by word from the hex answer,
    about ten times faster than eth_abi; any word eth_abi would refuse or read differently (dirty padding, a
    value out of its type's range, odd lengths) sends the log to eth_abi, so the result or the error is
    eth_abi's."""

    def __init__(self, abi: Iterable[Mapping], *, include_erc20: bool = True):
        self._by_topic: dict[str, list[tuple]] = {}
        for item in json.loads(_events_json(abi, include_erc20)):
            inputs = item.get("inputs", [])
            indexed = [p for p in inputs if p.get("indexed")]
            plain = [p for p in inputs if not p.get("indexed")]
            spec = (
                item["name"],
                len(indexed),
                [(p["name"], _topic_reader(p)) for p in indexed],
                [canonical_type(p) for p in plain],
                [(p["name"], _value_reader(p)) for p in plain],
                [p["name"] for p in inputs],
                _words_reader([canonical_type(p) for p in plain]),
            )
            self._by_topic.setdefault(event_topic(item), []).append(spec)

    def decode(self, log: Mapping) -> tuple[str, dict] | None:
        topics = log.get("topics") or []
        if not topics:
            return None
        topics = [t if isinstance(t, str) else _hex(t) for t in topics]
        for name, n_indexed, topic_readers, data_types, value_readers, order, read_words in self._by_topic.get(
            topics[0].lower(), ()
        ):
            if n_indexed != len(topics) - 1:
                continue
            args = {arg: read(topic) for (arg, read), topic in zip(topic_readers, topics[1:], strict=True)}
            if data_types:
                data = log.get("data") or "0x"
                values = read_words(data) if read_words is not None and isinstance(data, str) else None
                if values is None:
                    values = abi_decode(data_types, _bytes(data))
                for (arg, read), value in zip(value_readers, values, strict=True):
                    args[arg] = read(value) if read else value
            return name, {arg: args[arg] for arg in order}
        return None
