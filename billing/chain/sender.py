"""Operator transactions (refunds, withdrawals): signed with the operator key, EIP-1559 fees under the
configured cap, one nonce per transaction across workers, and replacement of a transaction that is stuck.

Nonces. Two workers must never sign two different transactions with the same nonce (one would silently
replace the other). Each send runs inside a database transaction holding `pg_advisory_xact_lock` on a key
derived from (chain_id, operator address), reads the pending nonce from the chain, signs, broadcasts, and
only then lets the lock go. An advisory lock rather than `select_for_update`: there is no row per operator
address to lock (adding one would need a model and a migration for a value the chain already knows), the
lock key costs nothing to derive, and a transaction-scoped lock is released by PostgreSQL on commit,
rollback or a dropped connection, so a crashed worker cannot leave it held. Behind a load balancer the
"pending" count of the next node may lag behind the transaction just broadcast, so the process also keeps
the next nonce it handed out per (chain_id, address) and uses the larger of the two; that memory expires
after NONCE_MEMORY_SECONDS so a transaction dropped from every mempool cannot leave a permanent gap.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field, replace

import structlog
from django.db import connection, transaction
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from billing.chain.quote import OperatorKeyMissing, get_operator_account
from billing.chain.rpc import ChainClient, JsonRpcError, MethodNotSupported, RpcError

logger = structlog.get_logger(__name__)

NONCE_MEMORY_SECONDS = 60.0
MIN_FEE_BUMP_PERCENT = 10  # geth/erigon/reth reject a replacement that bumps either fee by less
GAS_MARGIN_PERCENT = 20
FEE_HISTORY_BLOCKS = 5
DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, when the node cannot suggest one


class SenderError(Exception):
    """An operator transaction could not be sent or followed."""


class GasPriceAboveCap(SenderError):
    """The network's fees are above CryptoConfig.gas_cap_wei: sending now would overpay or never land."""


class TxNotMined(SenderError):
    """wait_or_replace gave up waiting (its timeout); the last version may still be mined later."""


class NonceTakenElsewhere(SenderError):
    """The nonce was used by a transaction this process did not send (key used outside the billing system?)."""


@dataclass(frozen=True)
class SentTx:
    tx_hash: str
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    # What is needed to re-sign the same transaction with other fees.
    sender: str = ""
    to: str = ""
    data: str = "0x"
    value: int = 0
    gas: int = 0
    chain_id: int = 0
    hashes: tuple[str, ...] = field(default=())  # every version broadcast with this nonce, oldest first


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    base_fee_per_gas: int  # what the next block is expected to charge


# --- key ---------------------------------------------------------------------------------------------


# The one operator-key loader lives with the other key loaders (billing.chain.quote); the sender calls it
# `operator_account`.
operator_account = get_operator_account


# --- nonces ------------------------------------------------------------------------------------------

_nonce_memory: dict[tuple[int, str], tuple[int, float]] = {}
_nonce_memory_lock = threading.Lock()


def _lock_key(chain_id: int, address: str) -> int:
    digest = hashlib.sha256(f"billing-operator-nonce:{chain_id}:{address.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)  # pg advisory locks take a signed bigint


def _lock_nonce(chain_id: int, address: str) -> None:
    """Serialize senders of one address across processes until the surrounding transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(chain_id, address)])


def _next_nonce(client: ChainClient, chain_id: int, address: str) -> int:
    pending = int(client.call("eth_getTransactionCount", [address, "pending"]), 16)
    with _nonce_memory_lock:
        remembered = _nonce_memory.get((chain_id, address.lower()))
    if remembered and time.monotonic() - remembered[1] < NONCE_MEMORY_SECONDS:
        return max(pending, remembered[0])
    return pending


def _remember_nonce(chain_id: int, address: str, next_nonce: int) -> None:
    with _nonce_memory_lock:
        _nonce_memory[(chain_id, address.lower())] = (next_nonce, time.monotonic())


def forget_nonces() -> None:
    with _nonce_memory_lock:
        _nonce_memory.clear()


# --- fees --------------------------------------------------------------------------------------------


def suggest_fees(client: ChainClient, *, cap: int) -> Fees:
    """EIP-1559 fees: next block's base fee from eth_feeHistory, tip from eth_maxPriorityFeePerGas (or
    the median reward of recent blocks), max fee = 2 x base + tip (room for a few full blocks), capped.

    Raises GasPriceAboveCap when even base + tip is above the cap: a tx priced under the base fee
    would wait forever, so refusing now is the honest answer."""
    try:
        history = client.call("eth_feeHistory", [hex(FEE_HISTORY_BLOCKS), "latest", [50]])
        base = int(history["baseFeePerGas"][-1], 16)  # the last entry is the next block's base fee
        rewards = [int(r[0], 16) for r in history.get("reward") or [] if r]
    except MethodNotSupported:
        block = client.get_block("latest") or {}
        base = int(block.get("baseFeePerGas", "0x0"), 16)
        rewards = []
    try:
        tip = int(client.call("eth_maxPriorityFeePerGas"), 16)
    except MethodNotSupported:
        rewards.sort()
        tip = rewards[len(rewards) // 2] if rewards else DEFAULT_PRIORITY_FEE
    if base + tip > cap:
        raise GasPriceAboveCap(
            f"Network fees (base {base} + tip {tip} wei per gas) are above the gas cap of {cap} wei: not sending."
        )
    return Fees(max_fee_per_gas=min(2 * base + tip, cap), max_priority_fee_per_gas=tip, base_fee_per_gas=base)


def _gas_cap(config=None) -> int:
    from billing.models import CryptoConfig

    return int((config or CryptoConfig.load()).gas_cap_wei)


# --- signing and broadcasting --------------------------------------------------------------------------


def _sign(account: LocalAccount, sent: SentTx) -> tuple[str, str]:
    tx = {
        "type": 2,
        "chainId": sent.chain_id,
        "nonce": sent.nonce,
        "to": sent.to,
        "value": sent.value,
        "data": sent.data,
        "gas": sent.gas,
        "maxFeePerGas": sent.max_fee_per_gas,
        "maxPriorityFeePerGas": sent.max_priority_fee_per_gas,
    }
    signed = account.sign_transaction(tx)
    return "0x" + signed.raw_transaction.hex(), "0x" + signed.hash.hex()


def _broadcast(client: ChainClient, raw: str, tx_hash: str) -> str:
    try:
        answered = client.call("eth_sendRawTransaction", [raw])
    except JsonRpcError as exc:
        # After a timeout the client may send the same bytes to the next endpoint, which already has them.
        if any(s in str(exc).lower() for s in ("already known", "already imported")):
            return tx_hash
        raise
    if answered and answered.lower() != tx_hash.lower():
        raise SenderError(f"Node answered hash {answered} for transaction {tx_hash}.")
    return tx_hash


def prepare_transaction(
    *,
    client: ChainClient,
    to: str,
    data: str | bytes = "0x",
    value: int = 0,
    gas: int | None = None,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    config=None,
) -> SentTx:
    """Everything of one operator transaction but its nonce (-1): fees (suggest_fees() unless given, always
    held to the cap) and gas (estimated with a margin; a call that would revert is refused here)."""
    account = operator_account()
    cap = _gas_cap(config)
    to = to_checksum_address(to)
    data_hex = data if isinstance(data, str) else "0x" + bytes(data).hex()
    if max_fee_per_gas is None or max_priority_fee_per_gas is None:
        fees = suggest_fees(client, cap=cap)
        max_fee_per_gas = fees.max_fee_per_gas if max_fee_per_gas is None else max_fee_per_gas
        if max_priority_fee_per_gas is None:
            max_priority_fee_per_gas = min(fees.max_priority_fee_per_gas, max_fee_per_gas)
    if max_fee_per_gas > cap:
        raise GasPriceAboveCap(f"max fee per gas {max_fee_per_gas} wei is above the gas cap of {cap} wei.")
    if max_priority_fee_per_gas > max_fee_per_gas:
        raise SenderError("The priority fee cannot be above the max fee per gas.")
    if gas is None:
        estimate = client.call(
            "eth_estimateGas", [{"from": account.address, "to": to, "data": data_hex, "value": hex(value)}]
        )
        gas = int(estimate, 16) * (100 + GAS_MARGIN_PERCENT) // 100
    return SentTx(
        tx_hash="",
        nonce=-1,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        sender=account.address,
        to=to,
        data=data_hex,
        value=value,
        gas=gas,
        chain_id=client.chain_id_expected,
    )


def reserve_nonce(client: ChainClient, sent: SentTx, *, floor: int = 0) -> int:
    """The next nonce of the sender: the larger of the chain's pending count, this process's memory and
    `floor` (what the caller's own records already hold). Takes the per-address advisory lock, so it must
    run inside the transaction that records the nonce; the lock goes with that transaction."""
    _lock_nonce(sent.chain_id, sent.sender)
    return max(_next_nonce(client, sent.chain_id, sent.sender), floor)


def remember_broadcast(sent: SentTx) -> None:
    """A node accepted `sent`: this process hands out the next nonce even if a lagging node does not count it."""
    _remember_nonce(sent.chain_id, sent.sender, sent.nonce + 1)


def sign_transaction(sent: SentTx) -> tuple[SentTx, str]:
    """Sign `sent` (its nonce and fees as they are) with the operator key: (the version with its hash
    appended to `hashes`, the raw bytes as hex). Signing is deterministic (RFC 6979): the same fields give
    the same bytes and hash, so a row that holds them can be broadcast again after a crash."""
    account = operator_account()
    if account.address.lower() != sent.sender.lower():
        raise SenderError("The operator key changed since this transaction was prepared; cannot sign it.")
    raw, tx_hash = _sign(account, sent)
    hashes = sent.hashes if tx_hash in sent.hashes else (*sent.hashes, tx_hash)
    return replace(sent, tx_hash=tx_hash, hashes=hashes), raw


def broadcast(client: ChainClient, raw: str, tx_hash: str) -> str:
    """eth_sendRawTransaction; a node that already has these bytes counts as accepted. A JsonRpcError is a
    refusal by the node; any other error (timeout, connection) leaves it unknown whether the node got it."""
    return _broadcast(client, raw, tx_hash)


def send_transaction(
    *,
    client: ChainClient,
    to: str,
    data: str | bytes = "0x",
    value: int = 0,
    gas: int | None = None,
    max_fee_per_gas: int | None = None,
    max_priority_fee_per_gas: int | None = None,
    config=None,
) -> SentTx:
    """Sign and broadcast one operator transaction, holding the nonce lock through the broadcast (no row:
    billing.services.operator_txs.operator_tx_send is the path that records one first). Fees default to
    suggest_fees(); explicit fees are still held to the cap. Does not wait for it to be mined: see
    wait_or_replace."""
    account = operator_account()
    prepared = prepare_transaction(
        client=client,
        to=to,
        data=data,
        value=value,
        gas=gas,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        config=config,
    )
    chain_id = prepared.chain_id
    for _attempt in range(3):
        with transaction.atomic():
            _lock_nonce(chain_id, account.address)
            nonce = _next_nonce(client, chain_id, account.address)
            sent = replace(prepared, nonce=nonce)
            raw, tx_hash = _sign(account, sent)
            try:
                _broadcast(client, raw, tx_hash)
            except JsonRpcError as exc:
                if nonce_in_use(exc):
                    # Our view of the nonce was stale (lagging node, or the key used elsewhere): move on.
                    _remember_nonce(chain_id, account.address, nonce + 1)
                    logger.warning("operator_tx_nonce_in_use", nonce=nonce, chain_id=chain_id, error=str(exc))
                    continue
                raise
            _remember_nonce(chain_id, account.address, nonce + 1)
        logger.info(
            "operator_tx_sent",
            chain_id=chain_id,
            tx_hash=tx_hash,
            nonce=nonce,
            to=sent.to,
            value=str(value),
            max_fee_per_gas=str(sent.max_fee_per_gas),
            max_priority_fee_per_gas=str(sent.max_priority_fee_per_gas),
        )
        return replace(sent, tx_hash=tx_hash, hashes=(tx_hash,))
    raise SenderError(f"No free nonce for {account.address} on chain {chain_id} after 3 tries.")


def nonce_in_use(exc: Exception) -> bool:
    """The node refused the nonce: a transaction with it was mined or is pending (sent by someone else)."""
    text = str(exc).lower()
    return "nonce too low" in text or "replacement transaction underpriced" in text


# --- waiting and replacing -----------------------------------------------------------------------------


def _bumped(old: int, percent: int) -> int:
    return math.ceil(old * (100 + percent) / 100)


def _replacement_fees(client: ChainClient, sent: SentTx, *, percent: int, cap: int) -> Fees | None:
    """Fees for a replacement: both at least `percent` above the last version (what nodes require), and at
    least what the network asks now; None when the cap does not leave room for a valid bump."""
    tip = _bumped(sent.max_priority_fee_per_gas, percent)
    max_fee = _bumped(sent.max_fee_per_gas, percent)
    base = 0
    try:
        now = suggest_fees(client, cap=cap)
    except GasPriceAboveCap:
        now = None
    if now is not None:
        base = now.base_fee_per_gas
        tip = max(tip, now.max_priority_fee_per_gas)
        max_fee = max(max_fee, 2 * base + tip)
    max_fee = min(max_fee, cap)
    tip = min(tip, max_fee)
    if max_fee < _bumped(sent.max_fee_per_gas, percent) or tip < _bumped(sent.max_priority_fee_per_gas, percent):
        return None
    return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip, base_fee_per_gas=base)


def find_receipt(client: ChainClient, hashes: tuple[str, ...]) -> dict | None:
    for tx_hash in reversed(hashes):  # the newest version is the likeliest to have landed
        receipt = client.get_transaction_receipt(tx_hash)
        if receipt is not None:
            return receipt
    return None


def replace_once(*, client: ChainClient, sent: SentTx, fee_bump_percent: int, config=None) -> SentTx:
    """Re-sign the same nonce with fees bumped by at least fee_bump_percent (never under 10 %, never above the
    cap) and broadcast it. Returns the new version (its hash appended to `hashes`), or `sent` unchanged when
    the cap leaves no room; when a node refuses the bump as underpriced, the returned version carries the
    refused fees so the next call escalates from them. "nonce too low" (a version was mined) is raised."""
    account = operator_account()
    if account.address.lower() != sent.sender.lower():
        raise SenderError("The operator key changed since this transaction was sent; cannot replace it.")
    cap = _gas_cap(config)
    percent = max(MIN_FEE_BUMP_PERCENT, int(fee_bump_percent))
    hashes = sent.hashes or (sent.tx_hash,)
    fees = _replacement_fees(client, sent, percent=percent, cap=cap)
    if fees is None:
        logger.warning(
            "operator_tx_replacement_capped", chain_id=sent.chain_id, tx_hash=hashes[-1], nonce=sent.nonce, cap=str(cap)
        )
        return replace(sent, hashes=hashes)
    candidate = replace(
        sent, max_fee_per_gas=fees.max_fee_per_gas, max_priority_fee_per_gas=fees.max_priority_fee_per_gas
    )
    raw, tx_hash = _sign(account, candidate)
    try:
        _broadcast(client, raw, tx_hash)
    except JsonRpcError as exc:
        if "underpriced" not in str(exc).lower():
            raise
        # The node wants a bigger bump: escalate from these fees next time.
        logger.warning("operator_tx_replacement_refused", tx_hash=tx_hash, nonce=sent.nonce, error=str(exc))
        return replace(candidate, hashes=hashes)
    logger.info(
        "operator_tx_replaced",
        chain_id=sent.chain_id,
        nonce=sent.nonce,
        tx_hash=tx_hash,
        replaces=hashes[-1],
        max_fee_per_gas=str(fees.max_fee_per_gas),
        max_priority_fee_per_gas=str(fees.max_priority_fee_per_gas),
    )
    return replace(candidate, tx_hash=tx_hash, hashes=(*hashes, tx_hash))


def wait_or_replace(
    *,
    client: ChainClient,
    sent: SentTx,
    stuck_after_seconds: float,
    fee_bump_percent: int,
    poll: float = 1.0,
    timeout: float | None = None,
    config=None,
    sleep=time.sleep,
    clock=time.monotonic,
) -> dict:
    """Wait for the transaction; each time it has been pending stuck_after_seconds, re-sign the same nonce
    with fees bumped by at least fee_bump_percent (never under 10 %, never above the cap) and keep waiting.
    Returns the receipt of whichever version landed (check its `status`: a revert is mined too)."""
    if operator_account().address.lower() != sent.sender.lower():
        raise SenderError("The operator key changed since this transaction was sent; cannot replace it.")
    percent = max(MIN_FEE_BUMP_PERCENT, int(fee_bump_percent))
    hashes = sent.hashes or (sent.tx_hash,)
    current = replace(sent, hashes=hashes)
    started = last_sent = clock()
    while True:
        receipt = find_receipt(client, hashes)
        if receipt is not None:
            logger.info(
                "operator_tx_mined",
                chain_id=sent.chain_id,
                tx_hash=receipt.get("transactionHash"),
                nonce=sent.nonce,
                versions=len(hashes),
                status=receipt.get("status"),
            )
            return receipt
        mined_nonce = int(client.call("eth_getTransactionCount", [sent.sender, "latest"]), 16)
        if mined_nonce > sent.nonce:
            # The nonce is used. One of ours, mined between the two reads? Otherwise someone else's.
            receipt = find_receipt(client, hashes)
            if receipt is not None:
                continue
            raise NonceTakenElsewhere(
                f"Nonce {sent.nonce} of {sent.sender} was used by a transaction other than {', '.join(hashes)}."
            )
        now = clock()
        if timeout is not None and now - started >= timeout:
            raise TxNotMined(f"Transaction {hashes[-1]} (nonce {sent.nonce}) not mined after {timeout:g}s.")
        if now - last_sent >= stuck_after_seconds:
            last_sent = now
            try:
                current = replace_once(client=client, sent=current, fee_bump_percent=percent, config=config)
            except JsonRpcError as exc:
                if "nonce too low" in str(exc).lower():
                    continue  # a version was just mined: the next loop finds its receipt
                raise
            hashes = current.hashes
        sleep(poll)


__all__ = [
    "Fees",
    "GasPriceAboveCap",
    "NonceTakenElsewhere",
    "OperatorKeyMissing",
    "RpcError",
    "SenderError",
    "SentTx",
    "TxNotMined",
    "broadcast",
    "nonce_in_use",
    "operator_account",
    "prepare_transaction",
    "replace_once",
    "remember_broadcast",
    "reserve_nonce",
    "send_transaction",
    "sign_transaction",
    "find_receipt",
    "suggest_fees",
    "wait_or_replace",
]
