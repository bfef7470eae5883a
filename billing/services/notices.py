"""Telling ops about a condition, once. Billing never imports `notifications`: a notice is an outbox event
(`ops.notice.v1`) written in the transaction that records the condition, and the notifications app turns it
into an ops `Notification` whose dedupe key is `ops:<key>`, so a retried task, a re-run sweep or a restarted
worker that raises the same notice again sends nothing twice."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from billing.services.outbox import outbox_emit
from billing_project.logging import mask_url

TOPIC = "ops.notice.v1"


def ops_notice(*, kind: str, key: str, title: str, body: str = "", data: dict | None = None) -> None:
    """`kind` names the condition (dead_letter, needs_review, unmatched_transfer, rpc_down, rpc_failover,
    deep_reorg, refund_failed, sweep_error, reconcile_difference, ...); `key` identifies this occurrence
    (e.g. f"needs_review:tx:{pk}"). Must run inside the caller's transaction. No secrets in any field."""
    outbox_emit(
        topic=TOPIC,
        aggregate_type="ops",
        aggregate_id=key[:64],
        payload={"kind": kind, "key": key, "title": title[:200], "body": body, "data": data or {}},
    )


def sweep_error_notice(*, sweep: str, subject: str, error: str) -> None:
    """A beat sweep failed on `subject` (a row id, a contract slug): ops hear at most once an hour per sweep
    and subject (the key's hour bucket), however often the sweep runs into it. Best effort: a failure to
    record the notice is logged, never raised into the sweep."""
    import structlog

    error = mask_url(error)[:500]
    try:
        with transaction.atomic():
            ops_notice(
                kind="sweep_error",
                key=f"sweep_error:{sweep}:{subject}:{timezone.now():%Y%m%d%H}",
                title=f"Sweep {sweep} failed on {subject}",
                body=error,
                data={"sweep": sweep, "subject": subject},
            )
    except Exception as exc:  # noqa: BLE001 (the sweep goes on; the next failure tries again)
        structlog.get_logger(__name__).warning("notice.sweep_error_failed", sweep=sweep, error=type(exc).__name__)
