"""Rollout and incident operations run from a shell (management commands), each audited with the acting
user (or "cli:<login>" when none is named) and each with a dry run that reads but writes nothing:

- quote signer rotation: generate a new key into a file (only its address is shown), allow the new signer
  on the contract (setSigner(new, true)), deploy the key to the app, then retire the old one
  (setSigner(old, false); refused while it is still the configured signer);
- webhook secret rotation (the old secret stays valid as `previous` during the grace period, or is dropped at
  once with `drop_previous` after a leak);
- dead-letter replay (billing.services.operator.outbox_replay, one audit note per delivery);
- cursor resync: the follower reads a contract's logs again from a block (a missed or mis-applied range;
  applying is idempotent per log).
"""

from __future__ import annotations

import getpass
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from django.db import transaction
from django.utils import timezone

from billing.models import ChainBlock, ChainCursor, OutboxDelivery, PaymentContract
from billing.services.operator import acting_user, audit_note

log = structlog.get_logger(__name__)


class RolloutError(Exception):
    """The operation is refused (says why); nothing was changed."""


@dataclass
class Outcome:
    dry_run: bool
    lines: list[str] = field(default_factory=list)
    tx_hash: str = ""

    def say(self, text: str) -> None:
        self.lines.append(("[dry run] " if self.dry_run else "") + text)


def actor_label(user) -> str:
    if user is not None:
        return f"user:{user.pk}"
    try:
        login = getpass.getuser()
    except Exception:  # noqa: BLE001 (no login name in some containers)
        login = "unknown"
    return f"cli:{login}"


# --- quote signer -------------------------------------------------------------------------------------------


def signer_key_generate(*, path: str, actor, contract: PaymentContract, dry_run: bool) -> Outcome:
    """Write a fresh secp256k1 key to `path` (0600, refused if it exists); only the address is returned."""
    from eth_account import Account

    out = Outcome(dry_run)
    target = Path(path)
    if target.exists():
        raise RolloutError(f"{path} exists; choose a new file (a key is never overwritten).")
    if dry_run:
        out.say(f"would write a new signer key to {path} (mode 0600)")
        return out
    account = Account.create()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(account.key.hex() + "\n")
    with acting_user(actor):
        audit_note(
            instance=contract,
            actor=actor,
            note="signer_key_generated",
            details={"actor": actor_label(actor), "address": account.address},
        )
    out.say(f"new signer key written to {path}; address {account.address}")
    out.say(f"next: manage.py billing_rotate_signer --contract {contract.slug} --allow {account.address}")
    return out


def _is_signer(client, contract: PaymentContract, address: str) -> bool | None:
    from eth_abi import encode
    from eth_utils import function_signature_to_4byte_selector

    data = "0x" + (function_signature_to_4byte_selector("isSigner(address)") + encode(["address"], [address])).hex()
    try:
        answer = client.call("eth_call", [{"to": contract.address, "data": data}, "latest"])
    except Exception:  # noqa: BLE001 (a contract without isSigner: unknown)
        return None
    return bool(int(answer, 16)) if answer and answer != "0x" else None


def signer_set(
    *, contract: PaymentContract, address: str, allowed: bool, actor, dry_run: bool, wait_seconds: float = 120.0
) -> Outcome:
    """setSigner(address, allowed) on the contract, signed by the operator (owner) key, waited for."""
    from eth_utils import is_address, to_checksum_address
    from web3 import Web3

    from billing.chain.rpc import ChainClient

    if not is_address(address):
        raise RolloutError(f"{address!r} is not an address.")
    address = to_checksum_address(address)
    if not contract.has_method("setSigner"):
        raise RolloutError(f"{contract.slug}'s ABI has no setSigner(address,bool).")
    if not allowed:
        try:
            from billing.chain.quote import get_quote_signer

            current = get_quote_signer().address
        except Exception:  # noqa: BLE001 (no key configured here: nothing to protect)
            current = None
        if current == address:
            raise RolloutError(
                f"{address} is the quote signer this deployment signs with; deploy the new key first "
                "(BILLING_QUOTE_SIGNER_KEY / _FILE), then retire the old one."
            )
    client = ChainClient.for_network(contract.network, contract=contract)
    before = _is_signer(client, contract, address)
    out = Outcome(dry_run)
    verb = "allow" if allowed else "retire"
    if before is allowed:
        out.say(
            f"{address} is already {'an allowed' if allowed else 'not a'} signer of {contract.slug}: nothing to send"
        )
        return out
    if dry_run:
        out.say(f"would send setSigner({address}, {str(allowed).lower()}) to {contract.slug} ({contract.address})")
        return out
    from billing.chain.sender import send_transaction

    data = Web3().eth.contract(abi=contract.abi).encode_abi("setSigner", args=[address, allowed])
    sent = send_transaction(client=client, to=contract.address, data=data)
    receipt = _wait(client, sent.tx_hash, wait_seconds)
    status = "mined" if receipt and int(receipt["status"], 16) == 1 else ("reverted" if receipt else "pending")
    with acting_user(actor):
        audit_note(
            instance=contract,
            actor=actor,
            note=f"signer_{'allowed' if allowed else 'retired'}",
            details={"actor": actor_label(actor), "address": address, "tx_hash": sent.tx_hash, "status": status},
        )
    log.info("rollout.signer_set", contract_slug=contract.slug, address=address, allowed=allowed, tx_hash=sent.tx_hash)
    out.tx_hash = sent.tx_hash
    out.say(f"{verb} {address}: {sent.tx_hash} {status}")
    if status != "mined":
        raise RolloutError(f"setSigner was sent ({sent.tx_hash}) but is {status}; check it before going on.")
    return out


def _wait(client, tx_hash: str, seconds: float) -> dict | None:
    import time

    deadline = time.monotonic() + seconds
    while True:
        receipt = client.get_transaction_receipt(tx_hash)
        if receipt is not None or time.monotonic() >= deadline:
            return receipt
        time.sleep(0.5)


# --- webhook secret -----------------------------------------------------------------------------------------


def webhook_secret_rotate(
    *, contract: PaymentContract, actor, dry_run: bool, new_secret: str | None = None, drop_previous: bool = False
) -> tuple[Outcome, str]:
    """A new secret (generated unless given); the old one stays valid as `previous` for the grace period, or
    is dropped at once (`drop_previous`, after a leak). Audited by auditlog as changed, without values."""
    secret = new_secret or "whsec_" + secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise RolloutError("A webhook secret has at least 16 characters.")
    out = Outcome(dry_run)
    keep = "dropped at once" if drop_previous else "kept as previous for the grace period"
    if dry_run:
        out.say(f"would set a new webhook secret on {contract.slug}; the current one {keep}")
        return out, ""
    with acting_user(actor), transaction.atomic():
        locked = PaymentContract.objects.select_for_update().get(pk=contract.pk)
        locked.rotate_webhook_secret(secret)
        if drop_previous:
            locked.previous_webhook_secret = ""
        locked.save()
        audit_note(
            instance=locked,
            actor=actor,
            note="webhook_secret_rotated",
            details={"actor": actor_label(actor), "previous": "dropped" if drop_previous else "grace"},
        )
    out.say(f"new webhook secret set on {contract.slug}; the previous one {keep}")
    return out, secret


# --- dead letters -------------------------------------------------------------------------------------------


def dead_letters_replay(
    *,
    actor,
    dry_run: bool,
    delivery_ids: list[int] | None = None,
    subscriber: str = "",
    topic: str = "",
    limit: int = 500,
) -> Outcome:
    from billing.services.operator import outbox_replay

    rows = OutboxDelivery.objects.filter(status=OutboxDelivery.Status.DEAD).select_related("event")
    if delivery_ids:
        rows = rows.filter(pk__in=delivery_ids)
    if subscriber:
        rows = rows.filter(subscriber=subscriber)
    if topic:
        rows = rows.filter(event__topic=topic)
    rows = list(rows.order_by("pk")[:limit])
    out = Outcome(dry_run)
    for row in rows:
        if dry_run:
            out.say(f"would replay delivery {row.pk} ({row.event.topic} -> {row.subscriber}, {row.attempts} attempts)")
            continue
        outbox_replay(delivery=row, actor=actor)
        out.say(f"replayed delivery {row.pk} ({row.event.topic} -> {row.subscriber})")
    out.say(f"{len(rows)} dead letter(s)")
    return out


# --- follower cursor ----------------------------------------------------------------------------------------


def cursor_resync(*, contract: PaymentContract, from_block: int, actor, dry_run: bool) -> Outcome:
    """Move the follower back so it reads logs again from `from_block` (never below the deployment block).
    Applying a log twice is a no-op per log, so a resync repairs a missed range without double effects."""
    if from_block < contract.deployment_block:
        raise RolloutError(f"{contract.slug} was deployed at block {contract.deployment_block}; start there or later.")
    out = Outcome(dry_run)
    cursor = ChainCursor.objects.filter(contract=contract).first()
    before = cursor.last_block if cursor else None
    if dry_run:
        out.say(f"would move {contract.slug}'s cursor from {before} to {from_block - 1} (next read: {from_block})")
        return out
    with acting_user(actor), transaction.atomic():
        cursor, _ = ChainCursor.objects.select_for_update().get_or_create(
            contract=contract, defaults={"last_block": max(from_block - 1, 0)}
        )
        cursor.last_block = max(from_block - 1, 0)
        cursor.last_block_hash = ""  # read again without a reorg check at the new start
        cursor.last_error = ""
        cursor.last_run_at = timezone.now()
        cursor.save()
        ChainBlock.objects.filter(contract=contract, number__gte=from_block).delete()
        audit_note(
            instance=contract,
            actor=actor,
            note="cursor_resynced",
            details={"actor": actor_label(actor), "from_block": from_block, "previous_last_block": before},
        )
    log.info("rollout.cursor_resynced", contract_slug=contract.slug, from_block=from_block, previous=before)
    out.say(f"{contract.slug}'s cursor moved from {before} to {from_block - 1}; the follower reads from {from_block}")
    return out
