"""Prometheus metrics of the billing core.

Two kinds:
- Counters, histograms and a few gauges updated where things happen (the hot path: one dict lookup and
  one write to a memory-mapped file). gunicorn workers and Celery workers run in prometheus_client's
  multiprocess mode (PROMETHEUS_MULTIPROC_DIR, one folder for every process `make run` starts): `/metrics`
  adds up the files of all of them. Every gauge therefore names its multiprocess_mode.
- Gauges read from the database when `/metrics` is scraped (billing.metrics_db.DatabaseCollector): small
  indexed counts and GROUP BYs over small sets (open payments, live subscriptions, undelivered outbox rows,
  cursors, endpoints), never a scan of the ledger; one short transaction with a statement timeout.

Labels never carry an RPC URL (provider keys live in URLs): an endpoint is its RpcEndpoint id, or
"fallback" for a contract's fallback_rpc. Metric names and labels: docs/runtime.md#metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
