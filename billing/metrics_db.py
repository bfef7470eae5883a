"""Gauges read from the database when `/metrics` is scraped (billing.selectors.metrics_snapshot).

Apart from billing.metrics because it reads selectors, and the chain client (which billing.selectors
reaches) imports billing.metrics: keeping them apart keeps billing free of import cycles."""

from __future__ import annotations

import time

import structlog
from prometheus_client.core import GaugeMetricFamily

from billing.selectors import metrics_snapshot

log = structlog.get_logger(__name__)


class DatabaseCollector:
    """Gauges read from the database at scrape time (billing.selectors.metrics_snapshot). A database that
    does not answer gives billing_metrics_database_up 0 and no other family, never a failed scrape."""

    def describe(self):
        return []  # nothing collected at registration time

    def collect(self):
        started = time.monotonic()
        up = GaugeMetricFamily("billing_metrics_database_up", "1 when the scrape-time database gauges were read.")
        try:
            snap = metrics_snapshot()
        except Exception as exc:  # the scrape must still answer
            log.warning("metrics.database_failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _families(snap)
        took = GaugeMetricFamily(
            "billing_metrics_database_seconds", "Time the scrape-time database gauges took to read."
        )
        took.add_metric([], time.monotonic() - started)
        yield took


def _family(name: str, doc: str, labels: list[str], rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for *values, number in rows:
        family.add_metric([str(v) for v in values], float(number))
    return family


def _families(snap: dict):
    yield _family(
        "billing_subscriptions_live",
        "Live subscriptions by plan and status (active, past_due): active subscriptions by plan are "
        'billing_subscriptions_live{status="active"}.',
        ["plan", "status"],
        snap["subscriptions"],
    )
    yield _family(
        "billing_transactions_open",
        "Payments in a status that must move on (pending, submitted, needs_review, unmatched), by network.",
        ["status", "network"],
        snap["open_transactions"],
    )
    yield _family(
        "billing_transactions_oldest_age_seconds",
        "Age of the oldest payment in a status: pending and needs_review since their checkout, submitted since "
        "the wallet reported the send (0 when there is none).",
        ["status"],
        snap["oldest_transactions"],
    )
    yield _family(
        "billing_outbox_deliveries",
        "Outbox deliveries not delivered, by status (pending: the backlog, dead: dead letters) and subscriber.",
        ["status", "subscriber"],
        snap["outbox"],
    )
    yield _family(
        "billing_outbox_oldest_due_seconds",
        "How long the most overdue pending outbox delivery has been due (0 when none is overdue).",
        [],
        [(snap["outbox_oldest_due"],)],
    )
    yield _family(
        "billing_inbound_backlog",
        "Stored webhook deliveries not processed yet (status received), by contract.",
        ["contract"],
        snap["inbound_backlog"],
    )
    yield _family(
        "billing_inbound_oldest_due_seconds",
        "How long the most overdue stored webhook delivery has been due (0 when none is overdue).",
        [],
        [(snap["inbound_oldest_due"],)],
    )
    yield _family(
        "billing_operator_transactions",
        "Operator transactions (refunds, withdrawals) by kind and state; mined ones are left out (they only grow).",
        ["kind", "state"],
        snap["operator_txs"],
    )
    yield _family(
        "billing_operator_transactions_oldest_pending_seconds",
        "Since when the oldest broadcast operator transaction waits to be mined (0 when none).",
        [],
        [(snap["operator_oldest_pending"],)],
    )
    yield _family(
        "billing_follower_cursor_block",
        "Last block the chain follower fully applied, per contract.",
        ["contract"],
        [(c["contract"], c["last_block"]) for c in snap["cursors"]],
    )
    yield _family(
        "billing_follower_last_run_age_seconds",
        "Seconds since the chain follower last ran for the contract (successfully or not).",
        ["contract"],
        [(c["contract"], c["age"]) for c in snap["cursors"] if c["age"] is not None],
    )
    yield _family(
        "billing_follower_failing",
        "1 when the follower's last run for the contract ended with an error (ChainCursor.last_error).",
        ["contract"],
        [(c["contract"], 1 if c["failing"] else 0) for c in snap["cursors"]],
    )
    yield _family(
        "billing_rpc_endpoint_up",
        "1 when the RpcEndpoint row says healthy (written by whichever process used it last), per enabled endpoint.",
        ["network", "endpoint"],
        [(e["network"], e["endpoint"], 1 if e["healthy"] else 0) for e in snap["endpoints"]],
    )
