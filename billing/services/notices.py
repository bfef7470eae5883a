"""Telling ops about a condition, once. Billing never imports `notifications`: a notice is an outbox event
(`ops.notice.v1`) written in the transaction that records the condition, and the notifications app turns it
into an ops `Notification` whose dedupe key is `ops:<key>`, so a retried task, a re-run sweep or a restarted
worker that raises the same notice again sends nothing twice."""

from __future__ import annotations

import structlog
from django.db import transaction
from django.utils import timezone

# The notice itself is an outbox event: it lives with the outbox (which raises dead-letter notices itself).
from billing.services.outbox import OPS_NOTICE_TOPIC as TOPIC
from billing.services.outbox import ops_notice
from billing_project.logging import mask_url

__all__ = ["TOPIC", "ops_notice", "rpc_endpoint_down_notice", "rpc_failover_notice", "sweep_error_notice"]

log = structlog.get_logger(__name__)


# Keys raised by this process: a sweep failing every few seconds writes one outbox row an hour, not one a tick
# (the notifications app would keep one anyway; this keeps the outbox small during an outage).
_SWEEP_NOTICED: set[str] = set()


def sweep_error_notice(*, sweep: str, subject: str, error: str) -> None:
    """A beat sweep failed on `subject` (a row id, a contract slug): ops hear at most once an hour per sweep
    and subject (the key's hour bucket), however often the sweep runs into it. Best effort: a failure to
    record the notice is logged, never raised into the sweep."""
    error = mask_url(error)[:500]
    key = f"sweep_error:{sweep}:{subject}:{timezone.now():%Y%m%d%H}"
    if key in _SWEEP_NOTICED:  # this process raised it this hour: no outbox row per failing tick
        return
    try:
        with transaction.atomic():
            ops_notice(
                kind="sweep_error",
                key=key,
                title=f"Sweep {sweep} failed on {subject}",
                body=error,
                data={"sweep": sweep, "subject": subject},
            )
    except Exception as exc:  # noqa: BLE001 (the sweep goes on; the next failure tries again)
        log.warning("notice.sweep_error_failed", sweep=sweep, error=type(exc).__name__)
        return
    if len(_SWEEP_NOTICED) > 10_000:
        _SWEEP_NOTICED.clear()
    _SWEEP_NOTICED.add(key)


# --- RPC health: the chain client calls these through hooks (billing.chain.rpc never imports services);
# billing.apps wires them at startup. ---------------------------------------------------------------------


def rpc_endpoint_down_notice(*, endpoint_id: int, network: str, url: str, error: str, stamp) -> None:
    """Raised inside the write that flips the endpoint's row to unhealthy: once per outage."""
    ops_notice(
        kind="rpc_down",
        key=f"rpc_down:endpoint:{endpoint_id}:{stamp.isoformat()}",
        title=f"RPC endpoint {network}#{endpoint_id} is down",
        body=f"{mask_url(url)} used up its retries: {mask_url(error)[:300]}. Calls fail over to the next "
        "endpoint; see docs/playbooks/billing.md (RPC outage).",
        data={"network": network, "endpoint_id": endpoint_id, "url": mask_url(url)},
    )


def rpc_failover_notice(*, network: str, from_label: str, to_label: str, from_url: str, to_url: str, why: str) -> None:
    """A call was served by another endpoint than the first: once an hour per serving endpoint (hour bucket in
    the key dedupes across processes). Best effort, in its own savepoint."""
    try:
        with transaction.atomic():
            ops_notice(
                kind="rpc_failover",
                key=f"rpc_failover:{network}:{to_label}:{timezone.now():%Y%m%d%H}",
                title=f"RPC failover on {network}: served by endpoint {to_label}",
                body=f"The first endpoint ({mask_url(from_url)}) did not serve the call ({why}); "
                f"{mask_url(to_url)} did.",
                data={"network": network, "from": from_label, "to": to_label},
            )
    except Exception as exc:  # noqa: BLE001 (bookkeeping must never break the call it describes)
        log.warning("notice.rpc_failover_failed", network=network, error=type(exc).__name__)
