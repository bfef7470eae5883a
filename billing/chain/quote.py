"""EIP-712 checkout quotes: the typed data the SubscriptionPass contract checks in `pay`, its digest, and the
backend's signing keys.

Keys come from the environment or a key file (settings.BILLING_QUOTE_SIGNER_KEY / _FILE and
settings.BILLING_OPERATOR_KEY / _FILE), never from the database, and never appear in a log line or an
exception message.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_utils import is_address, keccak

from billing.chain.abi import checksum as to_checksum_address  # cached: the same few addresses every time
from billing.fields import UINT64_MAX, UINT256_MAX, ZERO_ADDRESS

QUOTE_TYPE = [
    {"name": "orderId", "type": "bytes32"},
    {"name": "payer", "type": "address"},
    {"name": "planId", "type": "uint256"},
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "periods", "type": "uint64"},
    {"name": "deadline", "type": "uint64"},
]
QUOTE_TYPE_STRING = (
    "Quote(bytes32 orderId,address payer,uint256 planId,address token,uint256 amount,uint64 periods,uint64 deadline)"
)
QUOTE_TYPEHASH = keccak(text=QUOTE_TYPE_STRING)
EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
DEFAULT_NAME = "SubscriptionPass"
DEFAULT_VERSION = "1"


class SignerKeyMissing(ImproperlyConfigured):
    pass


class OperatorKeyMissing(SignerKeyMissing):
    """No usable operator key in settings (the message never contains the key)."""


def new_order_id() -> str:
    """A random bytes32 order id: 0x + 64 hex digits."""
    return "0x" + secrets.token_hex(32)


def _order_id_bytes(order_id: str) -> bytes:
    if not (isinstance(order_id, str) and order_id.startswith("0x") and len(order_id) == 66):
        raise ValueError("An order id is 0x followed by 64 hex digits.")
    return bytes.fromhex(order_id[2:])


@dataclass(frozen=True)
class Quote:
    """One price quote; `token` is None (or the zero address) for the native coin."""

    order_id: str
    payer: str
    plan_id: int
    token: str | None
    amount: int
    periods: int
    deadline: int  # unix seconds

    def __post_init__(self):
        _order_id_bytes(self.order_id)
        if not is_address(self.payer):
            raise ValueError("payer is not an address")
        if self.token is not None and not is_address(self.token):
            raise ValueError("token is not an address")
        limits = (("plan_id", UINT256_MAX), ("amount", UINT256_MAX), ("periods", UINT64_MAX), ("deadline", UINT64_MAX))
        for name, top in limits:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ValueError(f"{name} must be an integer in range")

    @property
    def token_address(self) -> str:
        """The token as the contract sees it: the zero address for native."""
        return to_checksum_address(self.token) if self.token else ZERO_ADDRESS

    @property
    def is_native(self) -> bool:
        return self.token_address == ZERO_ADDRESS

    def message(self) -> dict:
        """The EIP-712 message (typed values, as eth_account wants them)."""
        return {
            "orderId": _order_id_bytes(self.order_id),
            "payer": to_checksum_address(self.payer),
            "planId": self.plan_id,
            "token": self.token_address,
            "amount": self.amount,
            "periods": self.periods,
            "deadline": self.deadline,
        }

    def as_abi_tuple(self) -> tuple:
        """Positional tuple for the contract's `Quote calldata` argument."""
        m = self.message()
        return (m["orderId"], m["payer"], m["planId"], m["token"], m["amount"], m["periods"], m["deadline"])

    def as_json(self) -> dict:
        """JSON-safe view: integers as strings (uint256 exceeds 2^53), bytes32 as 0x hex."""
        return {
            "orderId": self.order_id.lower(),
            "payer": to_checksum_address(self.payer),
            "planId": str(self.plan_id),
            "token": self.token_address,
            "amount": str(self.amount),
            "periods": str(self.periods),
            "deadline": str(self.deadline),
        }


def domain(*, chain_id: int, verifying_contract: str, name: str = DEFAULT_NAME, version: str = DEFAULT_VERSION) -> dict:
    return {
        "name": name,
        "version": version,
        "chainId": int(chain_id),
        "verifyingContract": to_checksum_address(verifying_contract),
    }


def typed_data(quote: Quote, **domain_kwargs) -> dict:
    """The full EIP-712 document (what `eth_signTypedData_v4` takes), with JSON-safe message values."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Quote": QUOTE_TYPE},
        "primaryType": "Quote",
        "domain": domain(**domain_kwargs),
        "message": quote.as_json(),
    }


def _signable(quote: Quote, **domain_kwargs):
    """eth_account's generic EIP-712 encoder: only for recovering a signer (tests, tools), not on the hot path."""
    return encode_typed_data(
        domain_data=domain(**domain_kwargs), message_types={"Quote": QUOTE_TYPE}, message_data=quote.message()
    )


# EIP-712 written out for the one fixed type: every Quote field is a static type, so its encoding is seven 32-byte
# words. The type hashes are constants and the domain separator is computed once per (chain, contract, name,
# version) and process; a checkout then costs two keccaks and one ECDSA signature.


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


@lru_cache(maxsize=256)
def domain_separator(chain_id: int, verifying_contract: str, name: str = DEFAULT_NAME, version: str = DEFAULT_VERSION):
    """keccak256(typeHash(EIP712Domain) || keccak(name) || keccak(version) || chainId || verifyingContract)."""
    if not is_address(verifying_contract):
        raise ValueError("verifying_contract is not an address")
    return keccak(
        EIP712_DOMAIN_TYPEHASH
        + keccak(text=name)
        + keccak(text=version)
        + int(chain_id).to_bytes(32, "big")
        + _address_word(verifying_contract)
    )


def quote_struct_hash(quote: Quote) -> bytes:
    """hashStruct(Quote): keccak256(QUOTE_TYPEHASH || the seven fields as 32-byte words)."""
    return keccak(
        QUOTE_TYPEHASH
        + _order_id_bytes(quote.order_id)
        + _address_word(quote.payer)
        + quote.plan_id.to_bytes(32, "big")
        + _address_word(quote.token or ZERO_ADDRESS)
        + quote.amount.to_bytes(32, "big")
        + quote.periods.to_bytes(32, "big")
        + quote.deadline.to_bytes(32, "big")
    )


def quote_digest_bytes(
    quote: Quote, *, chain_id: int, verifying_contract: str, name: str = DEFAULT_NAME, version: str = DEFAULT_VERSION
) -> bytes:
    separator = domain_separator(int(chain_id), verifying_contract.lower(), name, version)
    return keccak(b"\x19\x01" + separator + quote_struct_hash(quote))


def quote_digest(
    quote: Quote, *, chain_id: int, verifying_contract: str, name: str = DEFAULT_NAME, version: str = DEFAULT_VERSION
) -> str:
    """keccak256(0x1901 || domainSeparator || structHash): what the contract's `quoteDigest` returns."""
    digest = quote_digest_bytes(
        quote, chain_id=chain_id, verifying_contract=verifying_contract, name=name, version=version
    )
    return "0x" + digest.hex()


@lru_cache(maxsize=8)
def _signing_key(raw: bytes) -> keys.PrivateKey:
    """The eth_keys key of an account, built once per process (deriving its public key is the costly part).
    eth_keys signs through coincurve (libsecp256k1) when it is installed; `ecc_backend_name()` tells which."""
    return keys.PrivateKey(raw)


def ecc_backend_name() -> str:
    """The ECDSA backend eth_keys uses in this process: "CoinCurveECCBackend" (compiled) or "NativeECCBackend"."""
    return type(keys.PrivateKey(b"\x01" * 32).backend).__name__


def sign_quote(
    quote: Quote,
    *,
    chain_id: int,
    verifying_contract: str,
    name: str = DEFAULT_NAME,
    version: str = DEFAULT_VERSION,
    signer: LocalAccount | None = None,
) -> str:
    """65-byte signature (r || s || v, v = 27/28) as 0x hex, by the configured quote signer unless one is given."""
    account = signer or get_quote_signer()
    digest = quote_digest_bytes(
        quote, chain_id=chain_id, verifying_contract=verifying_contract, name=name, version=version
    )
    signature = _signing_key(bytes(account.key)).sign_msg_hash(digest)
    return (
        "0x" + signature.r.to_bytes(32, "big").hex() + signature.s.to_bytes(32, "big").hex() + f"{signature.v + 27:02x}"
    )


def recover_quote_signer(quote: Quote, signature: str, **domain_kwargs) -> str:
    signable = _signable(quote, **domain_kwargs)
    return Account.recover_message(signable, signature=signature)


def load_account(
    *, key: str, key_file: str, what: str, setting: str, error: type[SignerKeyMissing] = SignerKeyMissing
) -> LocalAccount:
    """A local account from a hex key given directly or in a file. Error messages name the setting, never the key.

    Built once per process and key: a key file is looked at (one stat) on every call, so replacing the file
    takes effect at the next call without a restart."""
    stamp = None
    if not (key or "").strip() and key_file:
        try:
            info = os.stat(key_file)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None  # _load_account reports the unreadable file
    return _load_account(key, key_file, what, setting, error, stamp)


@lru_cache(maxsize=16)
def _load_account(key: str, key_file: str, what: str, setting: str, error: type, _stamp) -> LocalAccount:
    raw = (key or "").strip()
    if not raw and key_file:
        try:
            raw = Path(key_file).read_text(encoding="ascii").strip()
        except OSError as exc:
            raise error(f"The {what} key file set in {setting}_FILE cannot be read ({exc.strerror}).") from None
    if not raw:
        raise error(f"No {what} key: set {setting} or {setting}_FILE (environment, never the database).")
    try:
        return Account.from_key(raw)
    except Exception:  # noqa: BLE001 - any parse error; the message must not echo the key
        raise error(f"The {what} key in {setting} / {setting}_FILE is not a valid private key.") from None


def get_quote_signer() -> LocalAccount:
    return load_account(
        key=settings.BILLING_QUOTE_SIGNER_KEY,
        key_file=settings.BILLING_QUOTE_SIGNER_KEY_FILE,
        what="quote signer",
        setting="BILLING_QUOTE_SIGNER_KEY",
    )


def get_operator_account() -> LocalAccount:
    """The contract owner's key, the one loader for it: deploys, refunds, withdrawals, signer rotation
    (billing.chain.sender signs with it as `operator_account`). Raises OperatorKeyMissing."""
    return load_account(
        key=settings.BILLING_OPERATOR_KEY,
        key_file=settings.BILLING_OPERATOR_KEY_FILE,
        what="operator",
        setting="BILLING_OPERATOR_KEY",
        error=OperatorKeyMissing,
    )
