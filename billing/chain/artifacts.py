"""Compiled contract artifacts (contracts/build/<Name>.json, written by `make contracts`), and the small web3
helpers that deploy them and send owner transactions from a local key."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

BUILD_DIR = Path(settings.BASE_DIR) / "contracts" / "build"


class ArtifactNotBuilt(RuntimeError):
    pass


def artifact_path(name: str) -> Path:
    return BUILD_DIR / f"{name}.json"


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_artifact(name: str) -> dict:
    """{contractName, abi, bytecode, deployedBytecode, sourceHash} of a compiled contract.

    Cached per file modification time, so a rebuild is picked up without a restart."""
    path = artifact_path(name)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ArtifactNotBuilt(f"Contract artifact {path} is missing: run `make contracts` (node contracts/compile.js)")
    data = _load(str(path), mtime)
    if not data.get("abi") or not str(data.get("bytecode", "")).startswith("0x") or len(data["bytecode"]) <= 2:
        raise ArtifactNotBuilt(f"Contract artifact {path} is incomplete: run `make contracts` again.")
    return data


def send_transaction(w3, account, tx: dict[str, Any], *, timeout: float = 120):
    """Fill nonce, chain id, gas and fees, sign with the local account, send, and wait for the receipt.

    Raises RuntimeError when the transaction reverted (status 0)."""
    tx = dict(tx)
    tx.setdefault("from", account.address)
    tx.setdefault("chainId", w3.eth.chain_id)
    tx.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
    tx.setdefault("value", 0)
    if "gas" not in tx:
        tx["gas"] = int(w3.eth.estimate_gas(tx) * 1.2) + 10_000
    if "maxFeePerGas" not in tx and "gasPrice" not in tx:
        base = w3.eth.get_block("latest").get("baseFeePerGas") or 0
        priority = w3.eth.max_priority_fee
        tx["maxPriorityFeePerGas"] = priority
        tx["maxFeePerGas"] = 2 * base + priority
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.2)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


def deploy_artifact(w3, account, name: str, *constructor_args, timeout: float = 120):
    """Deploy a compiled contract from `account`; returns (web3 contract at its address, receipt)."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*constructor_args).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    # build_transaction filled the fees already; send_transaction only signs and waits.
    receipt = send_transaction(w3, account, tx, timeout=timeout)
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"]), receipt


def transact(w3, account, contract_function, *, value: int = 0, timeout: float = 120):
    """Send one contract call (e.g. `contract.functions.setSigner(a, True)`) from the local account."""
    tx = contract_function.build_transaction(
        {"from": account.address, "value": value, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    return send_transaction(w3, account, tx, timeout=timeout)
