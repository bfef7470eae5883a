"""Prometheus metrics of the billing core.

Two kinds:
- Counters, histograms and a few gauges updated where things happen (the hot path: one dict lookup and
  one write to a memory-mapped file). gunicorn workers and Celery workers run in prometheus_client's
  multiprocess mode (PROMETHEUS_MULTIPROC_DIR, one folder for every process `make run` starts): `/metrics`
  adds up the files of all of them. Every gauge therefore names its multiprocess_mode.
- Gauges read from the database when `/metrics` is scraped (DatabaseCollector): small indexed counts and
  GROUP BYs over small sets (open payments, live subscriptions, undelivered outbox rows, cursors, endpoints),
  never a scan of the ledger; one short transaction with a statement timeout.

Labels never carry an RPC URL (provider keys live in URLs): an endpoint is its RpcEndpoint id, or
"fallback" for a contract's fallback_rpc. Metric names and labels: docs/runtime.md#metrics.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

log = structlog.get_logger(__name__)

# --- RPC -------------------------------------------------------------------------------------------

RPC_REQUESTS = Counter(
    "billing_rpc_requests_total",
    "JSON-RPC requests sent by the billing chain client, by outcome (ok, timeout, error, rpc_error, range, "
    "unsupported, deterministic).",
    ["network", "endpoint", "method", "outcome"],
)
RPC_LATENCY = Histogram(
    "billing_rpc_latency_seconds",
    "Latency of JSON-RPC requests that got an answer.",
    ["network", "endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# liveall: one series per live worker process; a dead worker's last opinion must not linger.
RPC_ENDPOINT_HEALTHY = Gauge(
    "billing_rpc_endpoint_healthy",
    "1 when the endpoint answered its last request, 0 after it failed its retries or answers for another chain.",
    ["network", "endpoint"],
    multiprocess_mode="liveall",
)
RPC_FAILOVERS = Counter(
    "billing_rpc_failovers_total",
    "Calls answered by an endpoint after an earlier one in the order had failed (retries used up, wrong chain, "
    "method missing), by the endpoint that answered.",
    ["network", "endpoint"],
)
RPC_CALLS_FAILED = Counter(
    "billing_rpc_calls_failed_total",
    "Calls that failed on every endpoint (AllEndpointsFailed and its kinds).",
    ["network", "method"],
)

# --- webhooks (contract indexer -> us) ---------------------------------------------------------------

WEBHOOK_RECEIVED = Counter(
    "billing_webhook_deliveries_total",
    "Contract webhook deliveries with a valid signature, by outcome (accepted, duplicate, bad_method).",
    ["contract", "outcome"],
)
WEBHOOK_VERIFIED = Counter(
    "billing_webhook_verified_total",
    "Stored webhook deliveries verified on chain by the workers, by outcome (processed, retry, failed).",
    ["contract", "outcome"],
)
WEBHOOK_REJECTED = Counter(
    "billing_webhook_rejected_total",
    "Contract webhook deliveries refused before anything was stored (bad, missing or stale signature).",
    ["contract", "reason"],
)

# --- ledger ----------------------------------------------------------------------------------------

TRANSACTIONS = Counter(
    "billing_transactions_total",
    "Payment ledger rows entering a status (a checkout enters pending), counted when the change commits.",
    ["status", "network", "token"],
)
CONFIRMATION_LATENCY = Histogram(
    "billing_confirmation_latency_seconds",
    "From the wallet's reported send (since=submitted) or, when it never reported one, from the checkout "
    "(since=checkout) to the confirmation.",
    ["network", "since"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600),
)

# --- chain follower ----------------------------------------------------------------------------------

CHAIN_EVENTS_FAILED = Counter(
    "billing_chain_events_failed_total",
    "Contract logs the chain follower could not apply (recorded for review on ChainEvent.apply_error, skipped).",
    ["contract"],
)
# mostrecent: whichever worker synced the contract last tells the truth.
FOLLOWER_LAG = Gauge(
    "billing_follower_lag_blocks",
    "Blocks between the contract's cursor and the network's applicable block, after the follower's last run.",
    ["contract"],
    multiprocess_mode="mostrecent",
)
PAYMENTS_REVERIFIED = Counter(
    "billing_payments_reverified_total",
    "Recent confirmations checked again against the chain by the re-verification sweep, by outcome.",
    ["outcome"],
)

# --- outbox, sweeps, tasks ------------------------------------------------------------------------------

OUTBOX_DELIVERIES = Counter(
    "billing_outbox_deliveries_total",
    "Outbox delivery attempts by outcome: delivered, retry (failed, tried again later), dead (last attempt "
    "failed: a dead letter).",
    ["subscriber", "outcome"],
)
SWEEP_ERRORS = Counter(
    "billing_sweep_errors_total",
    "Errors in beat sweeps: a sweep task that raised, or one item a sweep skipped after an error.",
    ["sweep"],
)
TASKS = Counter(
    "billing_celery_tasks_total",
    "Celery task runs by outcome (success, failure, retry), counted in the worker process that ran them.",
    ["task", "outcome"],
)


def sweep_error(sweep: str) -> None:
    SWEEP_ERRORS.labels(sweep=sweep).inc()


# --- gauges computed at scrape time ---------------------------------------------------------------------


class DatabaseCollector:
    """Gauges read from the database at scrape time (billing.selectors.metrics_snapshot). A database that
    does not answer gives billing_metrics_database_up 0 and no other family, never a failed scrape."""

    def describe(self):
        return []  # nothing collected at registration time

    def collect(self):
        from billing.selectors import metrics_snapshot

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
