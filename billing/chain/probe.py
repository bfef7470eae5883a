"""The admin's "Test connection": ask every configured endpoint of a network, right now and without
retries, for its chain id and head block, and record what it said as the endpoint's health."""

from __future__ import annotations

import requests
import structlog

from billing.chain.rpc import (
    EndpointSpec,
    TransportError,
    classify_rpc_error,
    endpoint_specs,
    endpoint_state,
    fallback_spec,
    post_json_rpc,
    record_health,
)
from billing_project.logging import mask_url

logger = structlog.get_logger(__name__)


def _ask(session: requests.Session, spec: EndpointSpec, method: str) -> tuple[int, float]:
    """-> (hex result as int, seconds). Raises TransportError with a URL-free message."""
    answer, elapsed = post_json_rpc(session, spec, method, [])
    if "error" in answer:
        error = answer.get("error") or {}
        message = mask_url(str(error.get("message", error) if isinstance(error, dict) else error))[:300]
        code = error.get("code") if isinstance(error, dict) else None
        kind = classify_rpc_error(method, code, message)
        raise TransportError(f"{method}: JSON-RPC error {code} ({kind}): {message}", code=code)
    try:
        return int(answer.get("result"), 16), elapsed
    except (TypeError, ValueError):
        raise TransportError(f"{method}: answer is not a hex number")


def probe_endpoint(
    spec: EndpointSpec, *, chain_id: int, network_label: str, session: requests.Session | None = None
) -> dict:
    session = session or requests.Session()
    report = {
        "endpoint_id": spec.endpoint_id,
        "url": spec.masked_url,
        "ok": False,
        "chain_id": None,
        "chain_id_matches": False,
        "head_block": None,
        "latency_ms": None,
        "error": "",
    }
    try:
        answered, first = _ask(session, spec, "eth_chainId")
        report["chain_id"] = answered
        report["chain_id_matches"] = answered == chain_id
        head, second = _ask(session, spec, "eth_blockNumber")
        report["head_block"] = head
        # the slower of the two: what a real call may cost
        report["latency_ms"] = int(max(first, second) * 1000)
    except TransportError as exc:
        report["error"] = mask_url(str(exc))
    else:
        if report["chain_id_matches"]:
            report["ok"] = True
        else:
            report["error"] = f"answers for chain id {answered}, expected {chain_id}"
    record_health(
        spec=spec,
        state=endpoint_state(chain_id, spec.url),
        network_label=network_label,
        ok=report["ok"],
        healthy=report["ok"],
        latency_ms=report["latency_ms"],
        error=report["error"],
        head_block=report["head_block"] if report["ok"] else None,
        force=True,  # an operator asked: always write what we saw
    )
    logger.info(
        "rpc_probe",
        network=network_label,
        endpoint=spec.label,
        ok=report["ok"],
        chain_id=report["chain_id"],
        head_block=report["head_block"],
        latency_ms=report["latency_ms"],
        error=report["error"],
    )
    return report


def probe_endpoints(network) -> list[dict]:
    """Every enabled RpcEndpoint of the network (by position), then each distinct fallback_rpc of its
    contracts. Each report: endpoint_id, url (masked), ok, chain_id, chain_id_matches, head_block,
    latency_ms, error; fallbacks also carry `contract` (slug) and endpoint_id None."""
    from billing.models import CryptoConfig

    config = CryptoConfig.load()
    specs: list[tuple[EndpointSpec, str | None]] = [(spec, None) for spec in endpoint_specs(network)]
    seen = {spec.url for spec, _ in specs}
    for contract in network.contracts.filter(enabled=True).exclude(fallback_rpc="").order_by("slug"):
        if contract.fallback_rpc in seen:
            continue
        seen.add(contract.fallback_rpc)
        specs.append((fallback_spec(contract.fallback_rpc, config), contract.slug))
    session = requests.Session()
    reports = []
    for spec, contract_slug in specs:
        report = probe_endpoint(spec, chain_id=network.chain_id, network_label=network.slug, session=session)
        if contract_slug is not None:
            report["contract"] = contract_slug
        reports.append(report)
    return reports
