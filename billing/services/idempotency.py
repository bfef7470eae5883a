"""Idempotency keys (docs/reference/api/contract.md, "Checkout idempotency"): one row per (user, scope, key)
with the request fingerprint and the first response, kept at least 72 hours. The row is written in the same
transaction as the work's rows (a checkout's ledger row), so both exist or neither; a concurrent request with
the same key finds the key's advisory lock taken and gets 409 instead of doing the work twice. (Rows
`in_progress` were written by the previous scheme, which committed the key before the work; they are still
answered 409.)"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.models import IdempotencyKey

log = structlog.get_logger(__name__)


def request_fingerprint(*, method: str, path: str, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class IdempotentOutcome:
    """The answer to send: the work's own (`replayed` False) or the key's first answer, or a 409 refusal."""

    status: int
    body: dict | None
    transaction_id: int | None = None
    replayed: bool = False
    refusal: str = ""  # "in_progress" | "mismatch" when the key refuses the request


class _KeyTaken(Exception):
    """The key's row appeared (committed by a racing request) after we looked: start over, it is a replay."""


class _Rollback(Exception):
    def __init__(self, outcome: IdempotentOutcome):
        self.outcome = outcome


_FIND_SQL = """
SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0)), k.id, k.fingerprint, k.state, k.response_status,
       k.response_body, k.transaction_id, k.expires_at
FROM (SELECT 1) AS one
LEFT JOIN billing_idempotencykey k ON k.user_id = %s AND k.scope = %s AND k.key = %s
"""
_INSERT_SQL = """
INSERT INTO billing_idempotencykey
    (user_id, key, scope, fingerprint, state, response_status, response_body, transaction_id, replay_count,
     created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, 0, %s, %s)
ON CONFLICT (user_id, scope, key) DO NOTHING
RETURNING id
"""


def _kept(status: int, body, retryable_codes: frozenset[str]) -> bool:
    """Whether an answer is the key's answer for good: not a 5xx, and not a refusal the client is expected
    to fix and retry with the same key (e.g. `payer_not_verified`: link the wallet, then retry)."""
    if status >= 500:
        return False
    code = ((body or {}).get("error") or {}).get("code") if isinstance(body, dict) else None
    return code not in retryable_codes


def idempotent_run(
    *,
    user,
    key: str | None,
    fingerprint: str,
    work,
    scope: str = "checkout",
    retryable_codes: frozenset[str] = frozenset(),
) -> IdempotentOutcome:
    """Run `work()` -> (status, body, transaction_id) at most once per (user, scope, key), in ONE transaction
    with the key's row: the work's rows and the key's first answer commit together or not at all.

    With a key: one statement takes a transaction-scoped advisory lock on the key and reads its row. Lock
    held by another request: that request is still running, 409 in_progress (unless its answer is already
    committed: then this is a replay). A row: replay its answer (200/201/4xx as first sent), 409 mismatch
    for another body, or forget it when expired. No row: run the work, then INSERT the row
    (ON CONFLICT DO NOTHING); if a racing request committed the key meanwhile, this transaction rolls back
    and the request replays that answer. A 5xx answer, a refusal whose code is in `retryable_codes`, or an
    exception rolls everything back and the key is not kept, so the client's retry runs again."""
    if not key:
        try:
            with transaction.atomic():
                status, body, tx_id = work()
                if status >= 500:
                    raise _Rollback(IdempotentOutcome(status, body, None))
            return IdempotentOutcome(status, body, tx_id)
        except _Rollback as stop:
            return stop.outcome
    lock_name = f"idempotency:{user.pk}:{scope}:{key}"
    for _ in range(2):
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(_FIND_SQL, [lock_name, user.pk, scope, key])
                    locked, pk, stored_fp, state, status, body, tx_id, expires_at = cursor.fetchone()
                now = timezone.now()
                if pk is not None and expires_at <= now:
                    if not locked:  # another request is replacing the expired row right now
                        return IdempotentOutcome(409, None, refusal="in_progress")
                    IdempotencyKey.objects.filter(pk=pk).delete()  # expired: the key may be used afresh
                    pk = None
                if pk is not None:
                    if stored_fp != fingerprint:
                        return IdempotentOutcome(409, None, refusal="mismatch")
                    if state == IdempotencyKey.State.IN_PROGRESS:
                        return IdempotentOutcome(409, None, refusal="in_progress")
                    IdempotencyKey.objects.filter(pk=pk).update(replay_count=F("replay_count") + 1)
                    log.info("idempotency.replay", user_id=user.pk, scope=scope, transaction_id=tx_id)
                    if isinstance(body, str):
                        body = json.loads(body)
                    return IdempotentOutcome(status, body, tx_id, replayed=True)
                if not locked:
                    return IdempotentOutcome(409, None, refusal="in_progress")
                status, body, tx_id = work()
                if not _kept(status, body, retryable_codes):
                    raise _Rollback(IdempotentOutcome(status, body, None))
                with connection.cursor() as cursor:
                    cursor.execute(
                        _INSERT_SQL,
                        [
                            user.pk,
                            key,
                            scope,
                            fingerprint,
                            IdempotencyKey.State.COMPLETED,
                            status,
                            json.dumps(body),
                            tx_id,
                            now,
                            now + settings.BILLING_IDEMPOTENCY_TTL,
                        ],
                    )
                    if cursor.fetchone() is None:
                        raise _KeyTaken()
                return IdempotentOutcome(status, body, tx_id)
        except _KeyTaken:
            continue
        except _Rollback as stop:
            return stop.outcome
    raise RuntimeError("idempotency key could not be claimed")  # pragma: no cover - needs a racing delete
