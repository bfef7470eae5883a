"""Transactional outbox: `outbox_emit` writes the event and one delivery row per subscriber in the
caller's transaction; `transaction.on_commit` only kicks the relay. `outbox_delivery_attempt` delivers
one row (in-project handler or signed HTTP POST), retries with backoff, and dead-letters after the last
attempt; `outbox_delivery_replay` brings a dead letter back."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import requests
import structlog
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from billing import metrics, signing
from billing.attempts import Attempts, parse_claim
from billing.dispatch import enqueue_on_commit, enqueue_once_on_commit
from billing.models import DeliveryAttempt, OutboxDelivery, OutboxEvent
from billing_project.logging import error_text

log = structlog.get_logger(__name__)
# The delivery-attempt state machine (billing.attempts) over outbox deliveries.
ATTEMPTS = Attempts(
    model=OutboxDelivery,
    pending=OutboxDelivery.Status.PENDING,
    done=OutboxDelivery.Status.DELIVERED,
    dead=OutboxDelivery.Status.DEAD,
    done_at="delivered_at",
)


def _subscribers_for(topic: str) -> list[str]:
    internal = list(settings.BILLING_OUTBOX_INTERNAL_SUBSCRIBERS.get(topic, {}))
    external = [s["name"] for s in settings.BILLING_EXTERNAL_SUBSCRIBERS if topic in s.get("topics", [topic])]
    return internal + external


def outbox_emit(*, topic: str, payload: dict, aggregate_type: str = "", aggregate_id: str = "") -> OutboxEvent:
    """Write the event and its deliveries. Must run inside the transaction of the change it reports."""
    event = OutboxEvent(topic=topic, aggregate_type=aggregate_type, aggregate_id=str(aggregate_id))
    event.payload = {"event_id": str(event.event_id), **payload}
    event.save()
    now = timezone.now()
    deliveries = OutboxDelivery.objects.bulk_create(
        [
            OutboxDelivery(
                event=event, subscriber=name, next_attempt_at=now, max_attempts=settings.BILLING_OUTBOX_MAX_ATTEMPTS
            )
            for name in _subscribers_for(topic)
        ]
    )
    ids = [d.pk for d in deliveries]

    enqueue_on_commit("billing.tasks.outbox_deliver", *((pk,) for pk in ids))
    log.info("outbox.emitted", topic=topic, event_id=str(event.event_id), deliveries=len(ids))
    return event


OPS_NOTICE_TOPIC = "ops.notice.v1"


def ops_notice(*, kind: str, key: str, title: str, body: str = "", data: dict | None = None) -> None:
    """Tell ops about a condition, once (billing.services.notices re-exports this; see its docstring).
    `kind` names the condition (dead_letter, needs_review, unmatched_transfer, rpc_down, rpc_failover,
    deep_reorg, refund_failed, sweep_error, reconcile_difference, ...); `key` identifies this occurrence
    (e.g. f"needs_review:tx:{pk}"); the notifications app keeps one Notification per key. Must run inside
    the caller's transaction. No secrets in any field."""
    outbox_emit(
        topic=OPS_NOTICE_TOPIC,
        aggregate_type="ops",
        aggregate_id=key[:64],
        payload={"kind": kind, "key": key, "title": title[:200], "body": body, "data": data or {}},
    )


# The events and their deliveries in one statement: event ids made by PostgreSQL (gen_random_uuid, a v4 UUID
# like the model's default) and put into the payload there, one delivery per (event, subscriber of its topic).
_INSERT_EVENTS_AND_DELIVERIES = f"""
    WITH r AS MATERIALIZED (
        SELECT gen_random_uuid() AS u, v.* FROM jsonb_to_recordset(%s::jsonb) AS v(t text, a text, i text, p jsonb)
    ), events AS (
        INSERT INTO {OutboxEvent._meta.db_table} (event_id, topic, aggregate_type, aggregate_id, payload, created_at)
        SELECT u, t, a, i, jsonb_build_object('event_id', u::text) || p, %s FROM r
        RETURNING id, topic
    )
    INSERT INTO {OutboxDelivery._meta.db_table} (event_id, subscriber, status, attempts, max_attempts,
        next_attempt_at, last_error, created_at, updated_at)
    SELECT events.id, s.s, %s, 0, %s, %s, '', %s, %s
    FROM events JOIN json_to_recordset(%s::json) AS s(t text, s text) ON s.t = events.topic"""  # noqa: S608


def outbox_emit_many(events: list[tuple[str, dict, str, str]]) -> int:
    """Bulk form of `outbox_emit` for (topic, payload, aggregate_type, aggregate_id) tuples: one INSERT statement
    for the events and their deliveries in the caller's transaction, and one trigger on commit (`outbox_sweep`,
    which finds every due delivery) instead of one message per delivery. Returns how many events it wrote."""
    if not events:
        return 0
    subscribers = {topic: _subscribers_for(topic) for topic in {topic for topic, _, _, _ in events}}
    rows = [{"t": topic, "a": kind, "i": str(key)[:64], "p": payload} for topic, payload, kind, key in events]
    pairs = [{"t": topic, "s": name} for topic, names in subscribers.items() for name in names]
    deliveries = sum(len(subscribers[topic]) for topic, _, _, _ in events)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_EVENTS_AND_DELIVERIES,
            [
                json.dumps(rows, separators=(",", ":"), cls=DjangoJSONEncoder),
                now,
                OutboxDelivery.Status.PENDING,
                settings.BILLING_OUTBOX_MAX_ATTEMPTS,
                now,
                now,
                now,
                json.dumps(pairs, separators=(",", ":")),
            ],
        )
    if deliveries:
        enqueue_once_on_commit("billing.tasks.outbox_sweep")
    log.info("outbox.emitted_many", events=len(events), deliveries=deliveries)
    return len(events)


class DeliveryRefused(RuntimeError):
    """The subscriber answered with a non-2xx status: kept on the attempt row for the operator."""

    def __init__(self, status_code: int):
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def _external(name: str) -> dict | None:
    return next((s for s in settings.BILLING_EXTERNAL_SUBSCRIBERS if s["name"] == name), None)


def _deliver(delivery: OutboxDelivery) -> int | None:
    """Raises on failure; returns the HTTP status for external subscribers."""
    event = delivery.event
    internal = settings.BILLING_OUTBOX_INTERNAL_SUBSCRIBERS.get(event.topic, {})
    if delivery.subscriber in internal:
        import_string(internal[delivery.subscriber])(event.payload)
        return None
    target = _external(delivery.subscriber)
    if target is None:
        raise RuntimeError(f"subscriber '{delivery.subscriber}' is not configured")
    body = json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Billing-Event": event.topic,
        "X-Billing-Event-Id": str(event.event_id),
        signing.SIGNATURE_HEADER: signing.sign(body, [target.get("secret", "")]),
    }
    response = requests.post(target["url"], data=body, headers=headers, timeout=settings.BILLING_OUTBOX_HTTP_TIMEOUT)
    if response.status_code >= 300:
        raise DeliveryRefused(response.status_code)
    return response.status_code


def outbox_delivery_attempt(
    *, delivery_id: int, force: bool = False, claim: datetime | str | None = None
) -> OutboxDelivery | None:
    """Attempt one delivery if it is due. Safe to call twice at once: the row lock is skip_locked.

    Honours `next_attempt_at`: without `claim` only a due row is attempted (the message sent at emit time);
    with the `claim` a sweep wrote (outbox_claim_due), only while that claim is still the row's, so a stale or
    duplicate message is a no-op. `force` (tests, operator tools) ignores both."""
    claim = parse_claim(claim)
    with transaction.atomic():
        delivery = ATTEMPTS.lock(delivery_id, related=("event",))
        if delivery is None:
            return None
        now = timezone.now()
        if not ATTEMPTS.is_turn(delivery, claim=claim, now=now, force=force):
            # re-claimed or attempted since this message was sent; or backing off, or claimed by a sweep whose
            # message will attempt it
            return delivery
        started = time.monotonic()
        status_code = None
        error = ""
        try:
            with transaction.atomic():  # a failing in-project handler rolls back only its own writes
                status_code = _deliver(delivery)
            ok = True
        except Exception as exc:  # any failure is a retry, recorded with its reason
            ok = False
            error = error_text(exc)  # requests errors carry the subscriber URL's path (tokens live there)
            status_code = getattr(exc, "status_code", None) or getattr(
                getattr(exc, "response", None), "status_code", None
            )
        duration_ms = int((time.monotonic() - started) * 1000)
        delivery.attempts += 1
        DeliveryAttempt.objects.create(
            delivery=delivery, ok=ok, status_code=status_code, error=error, duration_ms=duration_ms
        )
        if ok:
            ATTEMPTS.succeeded(delivery, now=now)
        elif ATTEMPTS.failed(
            delivery,
            error=error,
            now=now,
            max_attempts=delivery.max_attempts,
            base=settings.BILLING_OUTBOX_BACKOFF_BASE_SECONDS,
            cap=settings.BILLING_OUTBOX_BACKOFF_MAX_SECONDS,
        ):
            _dead_letter_notice(delivery, error)
        delivery.save()
    outcome = {OutboxDelivery.Status.DELIVERED: "delivered", OutboxDelivery.Status.DEAD: "dead"}.get(delivery.status)
    metrics.OUTBOX_DELIVERIES.labels(subscriber=delivery.subscriber, outcome=outcome or "retry").inc()
    log.info(
        "outbox.attempt",
        delivery_id=delivery.pk,
        subscriber=delivery.subscriber,
        event_id=str(delivery.event.event_id),
        ok=ok,
        attempts=delivery.attempts,
        status=delivery.status,
        error=error,
    )
    return delivery


def _dead_letter_notice(delivery: OutboxDelivery, error: str) -> None:
    """Ops hear of every dead letter once (keyed by delivery and attempt count: dead again after a replay is
    a new notice), in the transaction that marks it dead. Not for a notice's own delivery to the notifications
    app: that one failing would otherwise raise a notice about itself, again and again."""
    event = delivery.event
    if event.topic == OPS_NOTICE_TOPIC and delivery.subscriber == "notifications":
        log.error("outbox.notice_dead", delivery_id=delivery.pk, key=event.payload.get("key"), error=error)
        return
    ops_notice(
        kind="dead_letter",
        key=f"dead_letter:delivery:{delivery.pk}:{delivery.attempts}",
        title=f"Dead letter: {event.topic} to {delivery.subscriber}",
        body=f"Delivery {delivery.pk} gave up after {delivery.attempts} attempts: {error[:500]}. "
        f"Replay it with `manage.py billing_replay_dead_letters --delivery {delivery.pk}` once the subscriber is back.",
        data={
            "delivery_id": delivery.pk,
            "subscriber": delivery.subscriber,
            "topic": event.topic,
            "event_id": str(event.event_id),
            "attempts": delivery.attempts,
        },
    )


# A sweep's claim keeps a delivery from being claimed again for this long (longer than an attempt can take).
CLAIM_LEASE = timedelta(minutes=5)
# A new delivery's own message (sent when its event commits) gets this head start before a sweep claims it,
# so a healthy system queues one message per delivery.
SWEEP_GRACE = timedelta(seconds=30)


def outbox_due_ids(*, limit: int = 500) -> list[int]:
    """Due deliveries (a read; the sweep claims them with outbox_claim_due)."""
    return list(
        OutboxDelivery.objects.filter(status=OutboxDelivery.Status.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def outbox_claim_due(
    *, limit: int = 500, lease: timedelta = CLAIM_LEASE, grace: timedelta = SWEEP_GRACE
) -> list[tuple[int, datetime]]:
    """Claim due deliveries for one sweep: locked with SKIP LOCKED (a concurrent sweep, or a running attempt,
    keeps its rows) and made not-due until the lease ends, in the same transaction. -> [(id, claim)]: the
    sweep sends one message per row carrying its claim, and only that message can attempt it."""
    now = timezone.now()
    claim = now + lease
    due = OutboxDelivery.objects.filter(status=OutboxDelivery.Status.PENDING, next_attempt_at__lte=now - grace)
    return [(pk, claim) for pk in ATTEMPTS.claim_due(due, claim=claim, order_by=("next_attempt_at",), limit=limit)]


@transaction.atomic
def outbox_delivery_replay(*, delivery: OutboxDelivery, actor: str) -> OutboxDelivery:
    """Bring a dead letter (or a failing delivery) back: pending, due now, with a fresh attempt budget."""
    locked = OutboxDelivery.objects.select_for_update().get(pk=delivery.pk)
    if locked.status == OutboxDelivery.Status.DELIVERED:
        raise ValueError("The delivery was already delivered.")
    locked.status = OutboxDelivery.Status.PENDING
    locked.max_attempts = locked.attempts + settings.BILLING_OUTBOX_MAX_ATTEMPTS
    locked.next_attempt_at = timezone.now()
    locked.save()
    log.info("outbox.replayed", delivery_id=locked.pk, actor=actor)
    enqueue_on_commit("billing.tasks.outbox_deliver", (locked.pk,))
    return locked
