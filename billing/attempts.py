"""The one delivery-attempt state machine: outbox deliveries (billing.services.outbox), notifications
(notifications.services) and inbound webhook deliveries (billing.services.webhooks) are rows that are
claimed, attempted, and then delivered, retried later or given up on; receipt checks
(billing.services.receipts) and re-verification passes (billing.services.reverify) use the same claim and
backoff on their own columns.

- the claim (`claim_due`): `SELECT ... FOR UPDATE SKIP LOCKED` over the due rows (a concurrent claimer takes
  the next ones), and the rows' next-attempt column moved to the claim (a lease) in the same transaction;
- the turn (`is_turn`, `take`): a message attempts a row only while the claim it carries is still the row's
  (a stale or duplicate message is a no-op), or, without a claim, only when the row is due;
- the outcome (`Attempts.succeeded`, `Attempts.failed`): delivered (done, no next attempt), or failed:
  due again after `billing.retry.retry_at`'s backoff, or in its final state once the attempts are used up;
  `back_off` for rows that count failures in a row without a final state.

Each caller keeps its own attempt (what a delivery does), its counters and its log lines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from billing.retry import backoff_seconds, retry_at


def parse_claim(claim: datetime | str | None) -> datetime | None:
    """A claim as a task message carries it (ISO text) or as a service call passes it."""
    return datetime.fromisoformat(claim) if isinstance(claim, str) else claim


def claim_due(
    rows: QuerySet,
    *,
    column: str,
    claim: datetime,
    order_by: Sequence[str],
    limit: int | None = None,
    of: tuple[str, ...] = (),
    key: str = "pk",
) -> list:
    """Claim the due `rows` (a filter of the model's due ones), oldest first by `order_by`, at most `limit`:
    locked with SKIP LOCKED and their `column` set to `claim` (the lease's end) in the same transaction, so a
    second claimer neither waits for them nor gets them. `of`: lock only these tables of a joined query
    (("self",) when the filter joins other tables). -> the claimed rows' `key` (a unique column; the primary
    key by default)."""
    with transaction.atomic():
        due = rows.select_for_update(skip_locked=True, of=of).order_by(*order_by)
        ids = list(due.values_list(key, flat=True)[:limit])
        if ids:
            rows.model._default_manager.filter(**{f"{key}__in": ids}).update(**{column: claim})
    return ids


def is_turn(next_at: datetime | None, *, claim: datetime | None, now: datetime) -> bool:
    """May a message attempt a row whose next-attempt column is `next_at`? With the `claim` a sweep wrote:
    only while it is still the row's (re-claimed or attempted since: no). Without: only when due (no next
    attempt set, or it has passed)."""
    if claim is not None:
        return next_at == claim
    return next_at is None or next_at <= now


def take(rows: QuerySet, *, column: str, claim: datetime | None, lease: timedelta) -> bool:
    """The turn without a row lock (compare-and-set): one UPDATE moves the row's `column` a `lease` ahead only
    while it holds `claim` (or, without one, while the row is due), so a second message gets nothing until
    this attempt has recorded its outcome."""
    now = timezone.now()
    if claim is not None:
        rows = rows.filter(**{column: claim})
    else:
        rows = rows.filter(Q(**{f"{column}__isnull": True}) | Q(**{f"{column}__lte": now}))
    return bool(rows.update(**{column: now + lease}))


def back_off(
    rows: QuerySet, *, failures: int, counter: str, column: str, base: float, cap: float, also: dict | None = None
) -> None:
    """After `failures` failed attempts in a row (no final state): store the count and make the row due
    again after billing.retry.backoff_seconds (`also`: more columns written by the same UPDATE)."""
    delay = backoff_seconds(failures, base=base, cap=cap)
    rows.update(**{counter: failures, column: timezone.now() + timedelta(seconds=delay), **(also or {})})


def count_failure(
    model: type[models.Model],
    pk,
    *,
    counter: str,
    column: str,
    base: float,
    cap: float,
    key: str = "pk",
    also: dict | None = None,
) -> None:
    """One more failure in a row for the row whose `key` (a unique column; the primary key by default) is `pk`:
    read its `counter`, add one, then `back_off` (`also`: more columns written by the same UPDATE)."""
    rows = model._default_manager.filter(**{key: pk})
    row = rows.only(counter).first()
    if row is None:
        return
    back_off(rows, failures=getattr(row, counter) + 1, counter=counter, column=column, base=base, cap=cap, also=also)


@dataclass(frozen=True)
class Attempts:
    """The state machine of one kind of row with a status: `pending` rows are attempted; an attempt ends
    `done` (with `done_at` stamped) or fails, to be retried later or, with its attempts used up, `dead`."""

    model: type[models.Model]
    pending: str
    done: str
    dead: str
    done_at: str
    error: str = "last_error"
    next_at: str = "next_attempt_at"

    def claim_due(
        self, rows: QuerySet, *, claim: datetime, order_by: Sequence[str], limit: int | None = None
    ) -> list[int]:
        return claim_due(rows, column=self.next_at, claim=claim, order_by=order_by, limit=limit)

    def lock(self, pk: int, *, related: Iterable[str] = (), pending_only: bool = True) -> models.Model | None:
        """The row for one attempt, if still pending (any status: `pending_only=False`, for an operator's
        re-run) and not held by another attempt (SKIP LOCKED). of=self: locking the joined rows (`related`)
        too would make a concurrent attempt of a sibling row skip its own, or block inserts that reference them."""
        rows = self.model._default_manager.select_for_update(skip_locked=True, of=("self",)).select_related(*related)
        return (rows.filter(pk=pk, status=self.pending) if pending_only else rows.filter(pk=pk)).first()

    def is_turn(self, row: models.Model, *, claim: datetime | None, now: datetime, force: bool = False) -> bool:
        return force or is_turn(getattr(row, self.next_at), claim=claim, now=now)

    def succeeded(self, row: models.Model, *, now: datetime, status: str | None = None, error: str = "") -> list[str]:
        """Delivered (or another final `status`, with a note in `error`): no next attempt. -> the fields set."""
        row.status = status or self.done
        setattr(row, self.done_at, now)
        setattr(row, self.error, error)
        setattr(row, self.next_at, None)
        return ["status", self.done_at, self.error, self.next_at]

    def failed(
        self, row: models.Model, *, error: str, now: datetime, max_attempts: int, base: float, cap: float
    ) -> bool:
        """After `row.attempts` attempts, this one failed with `error`: due again after the backoff
        (billing.retry.retry_at), or `dead` when `max_attempts` are used up. -> True when dead."""
        setattr(row, self.error, error)
        next_at = retry_at(attempts=row.attempts, max_attempts=max_attempts, now=now, base=base, cap=cap)
        setattr(row, self.next_at, next_at)
        row.status = self.pending if next_at is not None else self.dead
        return next_at is None

    def release(self, ids: Iterable[int]) -> None:
        """Claimed but not attempted (a time budget ran out): due again now, for the next claim."""
        self.model._default_manager.filter(pk__in=list(ids), status=self.pending).update(
            **{self.next_at: timezone.now()}
        )
