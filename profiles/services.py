"""Wallet linking by Sign-In with Ethereum (EIP-4361) with server-side, single-use, expiring nonces.

`siwe.SiweMessage.verify()` checks the signature, domain, nonce and the expiration/not-before times, but
not the chain id or the URI; those are checked here against settings (SIWE_URI, SIWE_ALLOWED_CHAIN_IDS),
as is an issued-at in the future. The nonce row is locked (select_for_update), checked to belong to the
caller, and marked used in the same transaction that links the wallet, so a nonce links at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import siwe
import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from siwe.siwe import datetime_from_iso8601_string

from billing_project.errors import ServiceError
from profiles.models import SiweNonce, Wallet

log = structlog.get_logger(__name__)

NONCE_TTL = timedelta(minutes=10)
# Wallet clocks drift; an issued-at this far ahead of ours is still accepted.
CLOCK_SKEW = timedelta(seconds=60)


class SiweError(ServiceError):
    """A Sign-In with Ethereum message or link refused; about the `message` field unless said otherwise."""

    def __init__(self, code: str, message: str, *, status: int = 400, field: str = "message"):
        super().__init__(code, message, status=status, field=field)


@dataclass(frozen=True)
class SiweParameters:
    domain: str
    uri: str
    chain_ids: tuple[int, ...]


def siwe_parameters() -> SiweParameters:
    return SiweParameters(
        domain=settings.SIWE_DOMAIN, uri=settings.SIWE_URI, chain_ids=tuple(settings.SIWE_ALLOWED_CHAIN_IDS)
    )


@transaction.atomic
def siwe_nonce_issue(*, user) -> SiweNonce:
    return SiweNonce.objects.create(user=user, nonce=siwe.generate_nonce(), expires_at=timezone.now() + NONCE_TTL)


def _ts(value) -> datetime:
    parsed = datetime_from_iso8601_string(str(value))
    # A timestamp without an offset is read as UTC rather than failing the comparison.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _uri_allowed(uri: str, expected: str) -> bool:
    expected = expected.rstrip("/")
    return uri.rstrip("/") == expected or uri.startswith(expected + "/")


def _parse(message: str) -> siwe.SiweMessage:
    if not isinstance(message, str) or not message.strip():
        raise SiweError("siwe_malformed", "The message is empty.")
    try:
        return siwe.SiweMessage.from_message(message=message)
    except Exception as exc:  # the parser raises ValueError, pydantic errors and its own types
        raise SiweError("siwe_malformed", f"Not an EIP-4361 message: {type(exc).__name__}.")


def _check_claims(msg: siwe.SiweMessage, params: SiweParameters, now: datetime) -> None:
    if msg.domain != params.domain:
        raise SiweError("siwe_domain_mismatch", f"The message is for domain {msg.domain!r}, not {params.domain!r}.")
    if not _uri_allowed(str(msg.uri), params.uri):
        raise SiweError("siwe_uri_mismatch", f"The message URI {msg.uri!s} is not under {params.uri}.")
    if msg.chain_id not in params.chain_ids:
        raise SiweError(
            "siwe_chain_not_allowed",
            f"Chain id {msg.chain_id} is not accepted; accepted: {', '.join(map(str, params.chain_ids))}.",
        )
    issued_at = _ts(msg.issued_at)
    if issued_at > now + CLOCK_SKEW:
        raise SiweError("siwe_issued_in_future", "The message's Issued At is in the future.")
    if msg.expiration_time is not None and _ts(msg.expiration_time) <= now:
        raise SiweError("siwe_expired", "The message has expired (Expiration Time has passed).")
    if msg.not_before is not None and _ts(msg.not_before) > now:
        raise SiweError("siwe_not_yet_valid", "The message is not valid yet (Not Before is in the future).")


@transaction.atomic
def wallet_link_by_siwe(*, user, message: str, signature: str, now: datetime | None = None) -> Wallet:
    now = now or timezone.now()
    params = siwe_parameters()
    msg = _parse(message)
    _check_claims(msg, params, now)

    nonce = SiweNonce.objects.select_for_update().filter(nonce=msg.nonce).first()
    if nonce is None or nonce.user_id != user.pk:
        raise SiweError("siwe_nonce_unknown", "The nonce was not issued to you; ask for a new one.")
    if nonce.used_at is not None:
        raise SiweError("siwe_nonce_used", "The nonce was already used; ask for a new one.")
    if nonce.expires_at <= now:
        raise SiweError("siwe_nonce_expired", "The nonce has expired; ask for a new one.")

    try:
        msg.verify(signature, domain=params.domain, nonce=nonce.nonce, timestamp=now)
    except siwe.ExpiredMessage:
        raise SiweError("siwe_expired", "The message has expired (Expiration Time has passed).")
    except siwe.NotYetValidMessage:
        raise SiweError("siwe_not_yet_valid", "The message is not valid yet (Not Before is in the future).")
    except siwe.VerificationError:
        raise SiweError("siwe_bad_signature", "The signature does not match the message's address.", field="signature")
    except Exception:  # malformed hex and friends inside eth_account
        raise SiweError("siwe_bad_signature", "The signature is not a valid signature.", field="signature")

    nonce.used_at = now
    nonce.save(update_fields=["used_at"])

    address = msg.address
    existing = Wallet.objects.select_for_update().filter(address=address).first()
    if existing is not None and existing.user_id != user.pk:
        raise SiweError("wallet_taken", "This wallet is linked to another account.", status=409, field="address")
    # The wallet just proven becomes the primary (confirmed) one.
    Wallet.objects.filter(user=user, is_primary=True).exclude(address=address).update(is_primary=False)
    try:
        with transaction.atomic():
            if existing is None:
                wallet = Wallet.objects.create(
                    user=user, address=address, chain_id=msg.chain_id, is_primary=True, verified_at=now
                )
            else:
                existing.chain_id = msg.chain_id
                existing.is_primary = True
                existing.verified_at = now
                existing.save(update_fields=["chain_id", "is_primary", "verified_at"])
                wallet = existing
    except IntegrityError:
        # Another request linked the same address to someone else between our check and insert.
        raise SiweError("wallet_taken", "This wallet is linked to another account.", status=409, field="address")
    log.info("wallet.linked", user_id=user.pk, address=address, chain_id=msg.chain_id)
    return wallet
