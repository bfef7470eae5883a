"""Prometheus metrics of the billing core. Under gunicorn they work in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR): every gauge therefore names its multiprocess_mode.

Labels never carry an RPC URL (provider keys live in URLs): an endpoint is its RpcEndpoint id, or
"fallback" for a contract's fallback_rpc.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_REQUESTS = Counter(
    "billing_rpc_requests_total",
    "JSON-RPC requests sent by the billing chain client, by outcome.",
    ["network", "endpoint", "method", "outcome"],
)
RPC_LATENCY = Histogram(
    "billing_rpc_latency_seconds",
    "Latency of successful JSON-RPC requests.",
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

WEBHOOK_RECEIVED = Counter(
    "billing_webhook_deliveries_total",
    "Contract webhook deliveries with a valid signature, by outcome.",
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

CHAIN_EVENTS_FAILED = Counter(
    "billing_chain_events_failed_total",
    "Contract logs the chain follower could not apply (recorded for review on ChainEvent.apply_error, skipped).",
    ["contract"],
)
PAYMENTS_REVERIFIED = Counter(
    "billing_payments_reverified_total",
    "Recent confirmations checked again against the chain by the re-verification sweep, by outcome.",
    ["outcome"],
)
