"""Field validators shared by models, serializers and admin forms."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from eth_utils import is_address, is_checksum_address, to_checksum_address


def validate_checksum_address(value: str) -> None:
    if not value:
        return
    if not is_address(value):
        raise ValidationError("%(value)s is not an EVM address.", params={"value": value}, code="invalid_address")
    if not is_checksum_address(value):
        raise ValidationError(
            "Address must be EIP-55 checksummed: %(checksum)s.",
            params={"checksum": to_checksum_address(value)},
            code="not_checksummed",
        )


def validate_tx_hash(value: str) -> None:
    if not value:
        return
    if not (isinstance(value, str) and value.startswith("0x") and len(value) == 66):
        raise ValidationError("A transaction hash is 0x followed by 64 hex digits.", code="invalid_hash")
    try:
        int(value, 16)
    except ValueError as exc:
        raise ValidationError("A transaction hash is 0x followed by 64 hex digits.", code="invalid_hash") from exc


def abi_functions(abi: list) -> dict[str, dict]:
    return {item["name"]: item for item in abi if isinstance(item, dict) and item.get("type") == "function"}


def validate_abi(abi) -> None:
    if not isinstance(abi, list) or not abi:
        raise ValidationError("ABI must be a non-empty JSON list.", code="invalid_abi")
    for index, item in enumerate(abi):
        if not isinstance(item, dict) or "type" not in item:
            raise ValidationError("ABI item %(i)s has no type.", params={"i": index}, code="invalid_abi")
        if item["type"] in ("function", "event") and not item.get("name"):
            raise ValidationError("ABI item %(i)s has no name.", params={"i": index}, code="invalid_abi")
        if item["type"] in ("function", "event", "constructor", "error"):
            for arg in item.get("inputs", []):
                if not isinstance(arg, dict) or "type" not in arg:
                    raise ValidationError(
                        "ABI item %(i)s has an input without a type.", params={"i": index}, code="invalid_abi"
                    )
