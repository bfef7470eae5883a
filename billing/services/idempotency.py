"""Idempotency keys (api.md): one row per (user, scope, key) with the request fingerprint and the first
response, kept at least 72 hours. The row is written by the same statement as the work's rows (a checkout's
ledger row), so both exist or neither; while the work runs, the key's advisory lock (session-level, released by
that statement) tells a concurrent request with the same key to answer 409 instead of doing the work twice.
(Rows `in_progress` were written by the previous scheme, which committed the key before the work; they are
still answered 409.)"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
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


_FIND_SQL = """
SELECT pg_try_advisory_lock(hashtextextended(%s, 0)), k.id, k.fingerprint, k.state, k.response_status,
       k.response_body, k.transaction_id, k.expires_at{also}
FROM (SELECT 1) AS one
LEFT JOIN billing_idempotencykey k ON k.user_id = %s AND k.scope = %s AND k.key = %s
"""
_UNLOCK = "pg_advisory_unlock(hashtextextended(%s, 0))"
_REPLAY_SQL = "UPDATE billing_idempotencykey SET replay_count = replay_count + 1 WHERE id = %s"
_REPLAY_UNLOCK_SQL = _REPLAY_SQL + " RETURNING " + _UNLOCK
# The key's row, as a CTE of the work's own INSERT (`tx` is the row the work writes) or alone.
_KEY_FROM_TX_SQL = """
INSERT INTO billing_idempotencykey
    (user_id, key, scope, fingerprint, state, response_status, response_body, transaction_id, replay_count,
     created_at, expires_at)
SELECT %s, %s, %s, %s, %s, %s, %s::jsonb, tx.id, 0, %s, %s FROM tx
RETURNING id
"""
_KEY_ALONE_SQL = """
INSERT INTO billing_idempotencykey
    (user_id, key, scope, fingerprint, state, response_status, response_body, transaction_id, replay_count,
     created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, NULL, 0, %s, %s)
RETURNING id, pg_advisory_unlock(hashtextextended(%s, 0))
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
    also_read: tuple[str, list] | None = None,
) -> IdempotentOutcome:
    """Run `work()` at most once per (user, scope, key). `work()` returns (status, body, write): `write` is None
    when the answer wrote nothing (a refusal), else a callable that writes the work's rows in one statement and
    takes the key's row as a CTE (`write(also_sql=, also_params=, tail=, tail_params=)` -> row id, see
    billing.services.checkout.checkout_write): the work's rows and the key's first answer commit together or not
    at all, in one round trip.

    With a key: one statement takes the key's advisory lock (session-level, released by the write itself) and
    reads its row. Lock held by another request: that request is still running, 409 in_progress (unless its
    answer is already stored: then this is a replay). A row: replay its answer (200/201/4xx as first sent), 409
    mismatch for another body, or forget it when expired. No row: run the work, then write. A 5xx answer or a
    refusal whose code is in `retryable_codes` writes nothing and keeps no key, so the client's retry runs
    again.

    `also_read` (an SQL expression and its parameters) is read by the key's statement too, and its value given to
    the work as `work(read=value)`: one round trip for what the work would otherwise ask on its own (without a
    key there is no such statement, and the work is called without it)."""
    if not key:
        status, body, write = work()
        tx_id = write() if write is not None and status < 500 else None
        return IdempotentOutcome(status, body, tx_id)
    lock_name = f"idempotency:{user.pk}:{scope}:{key}"
    for _ in range(2):
        locked = False
        try:
            with connection.cursor() as cursor:
                if also_read is None:
                    cursor.execute(_FIND_SQL.format(also=""), [lock_name, user.pk, scope, key])
                else:
                    cursor.execute(
                        _FIND_SQL.format(also=f", ({also_read[0]})"), [lock_name, *also_read[1], user.pk, scope, key]
                    )
                locked, pk, stored_fp, state, status, body, tx_id, expires_at, *read = cursor.fetchone()
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
                with connection.cursor() as cursor:
                    cursor.execute(_REPLAY_UNLOCK_SQL if locked else _REPLAY_SQL, [pk, lock_name] if locked else [pk])
                locked = False
                log.info("idempotency.replay", user_id=user.pk, scope=scope, transaction_id=tx_id)
                if isinstance(body, str):
                    body = json.loads(body)
                return IdempotentOutcome(status, body, tx_id, replayed=True)
            if not locked:
                return IdempotentOutcome(409, None, refusal="in_progress")
            status, body, write = work(read=read[0]) if also_read is not None else work()
            if not _kept(status, body, retryable_codes):
                return IdempotentOutcome(status, body, None)  # the finally releases the lock
            key_values = [user.pk, key, scope, fingerprint, IdempotencyKey.State.COMPLETED, status, json.dumps(body)]
            key_values += [now, now + settings.BILLING_IDEMPOTENCY_TTL]
            # One statement, its own transaction under autocommit; inside a caller's transaction (tests) a
            # savepoint keeps a unique violation from breaking it.
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                if write is None:
                    with connection.cursor() as cursor:
                        cursor.execute(_KEY_ALONE_SQL, [*key_values, lock_name])
                    tx_id = None
                else:
                    tx_id = write(
                        also_sql=_KEY_FROM_TX_SQL, also_params=key_values, tail=_UNLOCK, tail_params=[lock_name]
                    )
            locked = False
            return IdempotentOutcome(status, body, tx_id)
        except IntegrityError:
            # The key's row appeared after we looked (a racing request past an expired row): nothing of ours was
            # written (one statement); look again, it is a replay now.
            continue
        finally:
            if locked:
                with connection.cursor() as cursor:
                    cursor.execute(f"SELECT {_UNLOCK}", [lock_name])
    raise RuntimeError("idempotency key could not be claimed")  # pragma: no cover - needs a racing delete
