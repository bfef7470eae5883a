"""Idempotency keys (api.md): one row per (user, scope, key) with the request fingerprint and the first
response, kept at least 72 hours. The row is committed `in_progress` before the work starts, so a
concurrent request with the same key sees it and gets 409 instead of doing the work twice."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import IdempotencyKey

log = structlog.get_logger(__name__)


def request_fingerprint(*, method: str, path: str, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class IdempotencyClaim:
    """What to do with a request: run it (`record` is ours), replay, or refuse."""

    outcome: str  # "run" | "replay" | "in_progress" | "mismatch"
    record: IdempotencyKey


def idempotency_claim(*, user, key: str, fingerprint: str, scope: str = "checkout") -> IdempotencyClaim:
    now = timezone.now()
    for _ in range(2):
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    user=user,
                    key=key,
                    scope=scope,
                    fingerprint=fingerprint,
                    expires_at=now + settings.BILLING_IDEMPOTENCY_TTL,
                )
            return IdempotencyClaim("run", record)
        except IntegrityError:
            pass
        with transaction.atomic():
            record = IdempotencyKey.objects.select_for_update().get(user=user, scope=scope, key=key)
            if record.expires_at <= now:
                record.delete()  # expired: the key may be used afresh
                continue
            if record.fingerprint != fingerprint:
                return IdempotencyClaim("mismatch", record)
            if record.state == IdempotencyKey.State.IN_PROGRESS:
                return IdempotencyClaim("in_progress", record)
            record.replay_count += 1
            record.save(update_fields=["replay_count"])
        log.info("idempotency.replay", user_id=user.pk, scope=scope, replay_count=record.replay_count)
        return IdempotencyClaim("replay", record)
    raise RuntimeError("idempotency key could not be claimed")  # pragma: no cover - needs a racing delete


def idempotency_complete(*, record: IdempotencyKey, status: int, body: dict, transaction_id: int | None = None) -> None:
    IdempotencyKey.objects.filter(pk=record.pk).update(
        state=IdempotencyKey.State.COMPLETED, response_status=status, response_body=body, transaction_id=transaction_id
    )


def idempotency_release(*, record: IdempotencyKey) -> None:
    """The work failed unexpectedly (5xx): forget the key so the client's retry runs again."""
    IdempotencyKey.objects.filter(pk=record.pk, state=IdempotencyKey.State.IN_PROGRESS).delete()
