"""Telling ops about a condition, once. Billing never imports `notifications`: a notice is an outbox event
(`ops.notice.v1`) written in the transaction that records the condition, and the notifications app turns it
into an ops `Notification` whose dedupe key is `ops:<key>`, so a retried task, a re-run sweep or a restarted
worker that raises the same notice again sends nothing twice."""

from __future__ import annotations

from billing.services.outbox import outbox_emit

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
