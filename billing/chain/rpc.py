"""JSON-RPC client for one EVM chain that survives bad endpoints.

Endpoints are tried in their configured order. Every request has a deadline (the endpoint's timeout, for
connect, headers and body together). An endpoint that times out is abandoned at once: the next endpoint
takes this very call, and the timed-out one is "cooling down", so the next calls start elsewhere (a hung
endpoint costs one timeout, not one per retry). A fast failure (connection refused, HTTP 5xx, a transient
JSON-RPC error) is retried on the same endpoint with `billing.retry.backoff_seconds`, then the next
endpoint takes over and the failing one cools down too. Calls start from the first endpoint that is not
cooling down, so the preferred endpoint takes the traffic back as soon as its cool-down is over and it
answers again.
The first time a client uses an endpoint it checks eth_chainId: an endpoint answering for another chain
is never used by that client.

Results are the raw JSON-RPC values (dicts and hex strings), except block_number/chain_id (ints).
RPC URLs carry provider keys, so they only ever reach a log line, an exception or a metric masked.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import structlog
from urllib3.util import Timeout
from web3 import Web3
from web3.providers.base import JSONBaseProvider

from billing import metrics
from billing.retry import backoff_seconds
from billing_project.logging import mask_url

logger = structlog.get_logger(__name__)


# --- errors -----------------------------------------------------------------------------------------


class RpcError(Exception):
    """One endpoint call failed (timeout, HTTP error, JSON-RPC error)."""

    def __init__(self, message: str, *, code: int | None = None, data: Any = None, endpoint: str = ""):
        super().__init__(message)
        self.code = code
        self.data = data
        self.endpoint = endpoint  # masked label, never the URL


class AllEndpointsFailed(RpcError):
    """Every endpoint failed after its retries; the message lists each (masked) endpoint and its last error."""


class WrongChain(RpcError):
    """The endpoint answers for another chain id."""


class AllEndpointsWrongChain(AllEndpointsFailed, WrongChain):
    """Every endpoint answers for another chain: both a failover failure and a configuration mistake."""


class LogRangeTooLarge(RpcError):
    """The provider refused an eth_getLogs range (too many results / range too wide)."""


class JsonRpcError(RpcError):
    """The node answered the request with an error another endpoint would give too (revert, bad params,
    nonce too low, already known...). Raised at once: retrying or failing over cannot help."""


class MethodNotSupported(RpcError):
    """No reachable endpoint implements the method (e.g. eth_getBlockReceipts on some providers)."""


# Codes/messages that say "your request is wrong" rather than "this endpoint is unwell".
_DETERMINISTIC_CODES = {3, -32700, -32600, -32602}
_DETERMINISTIC_RE = re.compile(
    r"revert|nonce too low|nonce too high|already known|already imported|replacement transaction underpriced"
    r"|transaction underpriced|insufficient funds|intrinsic gas|gas too low|exceeds block gas limit"
    r"|max fee per gas less than block base fee|invalid sender|invalid signature|out of gas",
    re.I,
)
_UNSUPPORTED_RE = re.compile(
    r"method not found|not supported|unsupported method|does not exist/is not available|method .* not available",
    re.I,
)
_RANGE_RE = re.compile(
    r"query returned more than|too many (results|logs|blocks)|range (is )?too (large|wide|big)|block range"
    r"|response size (exceeded|is larger)|exceed(s|ed)? (the )?max(imum)? (block )?range|is limited to"
    r"|limit exceeded|result set too large|max results",
    re.I,
)


def _is_range_error(message: str) -> bool:
    # "rate limit exceeded" is throttling, not a range problem: retry/fail over instead of splitting.
    return bool(_RANGE_RE.search(message)) and not re.search(r"rate|request count|credits|capacity", message, re.I)


def classify_rpc_error(method: str, code: int | None, message: str) -> str:
    """-> "range" | "unsupported" | "deterministic" | "transient" (retry, then fail over)."""
    if method == "eth_getLogs" and _is_range_error(message):
        return "range"
    if code == -32601 or _UNSUPPORTED_RE.search(message):
        return "unsupported"
    if code in _DETERMINISTIC_CODES or _DETERMINISTIC_RE.search(message):
        return "deterministic"
    return "transient"


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointSpec:
    url: str
    timeout: float
    endpoint_id: int | None = None  # RpcEndpoint pk; None for a contract's fallback_rpc

    @property
    def label(self) -> str:
        """Metric/log label: never the URL (it carries keys)."""
        return str(self.endpoint_id) if self.endpoint_id is not None else "fallback"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


def endpoint_specs(network, *, timeout_cap: float | None = None) -> list[EndpointSpec]:
    """The network's enabled RPC endpoints by position (the one place RpcEndpoint rows become EndpointSpecs);
    each request's timeout is the endpoint's, at most `timeout_cap` when given."""
    specs = []
    for e in network.rpc_endpoints.filter(enabled=True).order_by("position", "id"):
        timeout = float(e.timeout_seconds) if timeout_cap is None else min(float(e.timeout_seconds), timeout_cap)
        specs.append(EndpointSpec(url=e.url, timeout=timeout, endpoint_id=e.pk))
    return specs


def fallback_spec(url: str, config) -> EndpointSpec:
    """A contract's fallback_rpc, with the CryptoConfig request timeout (no RpcEndpoint row: no health)."""
    return EndpointSpec(url=url, timeout=float(config.request_timeout_seconds))


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    max_log_range: int = 2000

    def backoff_cap(self, retry: int) -> float:
        """Upper bound of the sleep before retry number `retry` (0-based): min(max, base * 2^retry)."""
        return min(self.backoff_max, self.backoff_base * (2**retry))

    def backoff(self, retry: int) -> float:
        """The one backoff rule (`billing.retry.backoff_seconds`, jitter in [cap/2, cap]) for retry number
        `retry` (0-based): clients that failed together do not retry in lockstep."""
        return backoff_seconds(retry + 1, base=self.backoff_base, cap=self.backoff_max)

    def worst_case_seconds(self, timeouts: list[float]) -> float:
        """The longest one call() can take before AllEndpointsFailed, given the endpoints' timeouts.

        Per endpoint: max_retries + 1 attempts of at most one timeout each, plus one more timeout for the
        eth_chainId check on first use (only an attempt whose check succeeds makes a second request),
        plus the backoff caps between attempts. Failing over to the next endpoint does not sleep.
        """
        sleeps = sum(self.backoff_cap(i) for i in range(self.max_retries))
        return sum((self.max_retries + 2) * t + sleeps for t in timeouts)


# --- process-wide endpoint state ----------------------------------------------------------------------
# Clients are cheap and short-lived (one per task run), so what must outlive a client lives here: which
# endpoint is cooling down, and when health was last written to the database (writes are throttled).

HEALTH_WRITE_INTERVAL = 5.0  # seconds between two DB writes for one endpoint, unless its state flips
DEFAULT_COOLDOWN = 10.0  # seconds an endpoint that used up its retries is tried only after the others


@dataclass
class _EndpointState:
    down_until: float = 0.0
    healthy: bool | None = None
    consecutive_failures: int = 0
    last_write: float = float("-inf")
    written_healthy: bool | None = None


_STATE: dict[tuple[int, str], _EndpointState] = {}
_STATE_LOCK = threading.RLock()


def endpoint_state(chain_id: int, url: str) -> _EndpointState:
    with _STATE_LOCK:
        return _STATE.setdefault((chain_id, url), _EndpointState())


def reset_endpoint_state() -> None:
    """Forget cool-downs and health-write throttling (tests start from a clean slate)."""
    with _STATE_LOCK:
        _STATE.clear()
        _FAILOVER_NOTICED.clear()


def record_health(
    *,
    spec: EndpointSpec,
    state: _EndpointState,
    network_label: str,
    ok: bool,
    healthy: bool | None,
    latency_ms: int | None = None,
    error: str = "",
    head_block: int | None = None,
    force: bool = False,
    write_db: bool = True,
    attempt: bool = True,
) -> None:
    """Update the in-process state, the gauge, and (throttled) the RpcEndpoint row.

    `healthy` None keeps the current opinion (a single failed attempt does not make an endpoint unhealthy;
    using up its retries or answering for another chain does). QuerySet.update: health is not audited.
    """
    now = time.monotonic()
    with _STATE_LOCK:
        if ok:
            state.consecutive_failures = 0
        elif attempt:  # a verdict about attempts already counted (retries used up) adds none
            state.consecutive_failures += 1
        if healthy is not None:
            state.healthy = healthy
        flipped = state.healthy is not None and state.healthy != state.written_healthy
        due = force or flipped or now - state.last_write >= HEALTH_WRITE_INTERVAL
        if due:
            state.last_write = now
            state.written_healthy = state.healthy
        failures = state.consecutive_failures
        current = state.healthy
    if current is not None:
        metrics.RPC_ENDPOINT_HEALTHY.labels(network=network_label, endpoint=spec.label).set(1 if current else 0)
    if not (write_db and due and spec.endpoint_id is not None):
        return
    from django.utils import timezone

    from billing.models import RpcEndpoint

    stamp = timezone.now()
    values: dict[str, Any] = {"last_checked_at": stamp, "consecutive_failures": failures}
    if current is not None:
        values["healthy"] = current
    if ok:
        values.update(last_ok_at=stamp, last_latency_ms=latency_ms, last_error="")
    else:
        values["last_error"] = mask_url(error)[:500]
    if head_block is not None:
        values["last_head_block"] = head_block
    from django.db import transaction

    try:
        # Best effort, and never a wait: callers ask the chain inside their own transactions (a follower batch,
        # a webhook), and waiting here on a row another such transaction updated could deadlock the two. A row
        # held elsewhere is skipped (SKIP LOCKED) and the next call writes it; a savepoint keeps a failed write
        # from aborting the caller's transaction.
        with transaction.atomic():
            free = RpcEndpoint.objects.filter(pk=spec.endpoint_id).select_for_update(skip_locked=True)
            row = free.values("pk", "healthy").first()  # locked: one process sees the flip
            written = RpcEndpoint.objects.filter(pk=row["pk"]).update(**values) if row else 0
            if written and current is False and row["healthy"] is not False and endpoint_down_hook is not None:
                endpoint_down_hook(
                    endpoint_id=spec.endpoint_id, network=network_label, url=spec.url, error=error, stamp=stamp
                )
    except Exception as exc:  # health bookkeeping must never break the call it describes
        logger.warning("rpc_health_write_failed", endpoint=spec.label, error=type(exc).__name__)
        written = 0
    if not written:
        with _STATE_LOCK:
            state.last_write = float("-inf")
            state.written_healthy = None


# Ops notices without importing services (chain code sits below them): billing.apps sets these to
# billing.services.notices.rpc_endpoint_down_notice / rpc_failover_notice. None: nobody is told (tests of
# the client alone, scripts without Django apps).
endpoint_down_hook: Callable[..., None] | None = None
failover_hook: Callable[..., None] | None = None


FAILOVER_NOTICE_SECONDS = 3600.0  # one failover notice per serving endpoint per hour and process
_FAILOVER_NOTICED: dict[tuple[int, str], float] = {}


# --- one HTTP request -----------------------------------------------------------------------------------

_ids = itertools.count(1)
_MAX_BODY = 256 * 1024 * 1024


class TransportError(RpcError):
    """The endpoint gave no usable answer (timeout, refused, HTTP error, transient JSON-RPC error): retry, fail over."""


class RpcTimeout(TransportError):
    """The endpoint did not answer within its deadline: fail over at once (no retry on the same endpoint)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def post_json_rpc(
    session: requests.Session, spec: EndpointSpec, method: str, params: list | None
) -> tuple[dict, float]:
    """One JSON-RPC request with a hard deadline of spec.timeout. -> (decoded answer, seconds).

    Raises TransportError for anything that is not a JSON-RPC answer (connect/read timeout, HTTP status,
    garbage body). A JSON-RPC error is returned as is, for the caller to classify.
    """
    body = json.dumps(
        {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params or []}, default=_json_default
    )
    started = time.monotonic()
    deadline = started + spec.timeout
    label = spec.masked_url
    try:
        # total= bounds connect + response headers together; the body loop below enforces the rest.
        with session.post(
            spec.url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=Timeout(total=spec.timeout),
            stream=True,
            allow_redirects=False,
        ) as resp:
            chunks = []
            size = 0
            for chunk in resp.iter_content(chunk_size=65536):
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise RpcTimeout(f"timed out after {spec.timeout:g}s (slow body)", endpoint=label)
                if size > _MAX_BODY:
                    raise TransportError("answer too large", endpoint=label)
            raw = b"".join(chunks)
            status = resp.status_code
    except TransportError:
        raise
    except requests.Timeout:
        raise RpcTimeout(f"timed out after {spec.timeout:g}s", endpoint=label)
    except requests.ConnectionError as exc:
        raise TransportError(f"connection failed: {_reason(exc)}", endpoint=label)
    except requests.RequestException as exc:
        raise TransportError(f"HTTP request failed: {type(exc).__name__}", endpoint=label)
    elapsed = time.monotonic() - started
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and ("result" in answer or "error" in answer) and status < 500:
        # Some providers send JSON-RPC errors with HTTP 400; the JSON-RPC error is what counts.
        return answer, elapsed
    if status >= 400:
        raise TransportError(f"HTTP {status}", endpoint=label)
    raise TransportError("answer is not JSON-RPC", endpoint=label)


def _reason(exc: Exception) -> str:
    """A short, URL-free reason: requests' messages embed the full URL (with its key)."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "remote end closed the connection"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


# --- the client ------------------------------------------------------------------------------------------


@dataclass
class _Failure:
    kind: str  # transient | wrong_chain | unsupported
    message: str


class ChainClient:
    def __init__(
        self,
        *,
        chain_id: int,
        endpoints: list[EndpointSpec],
        policy: RetryPolicy = RetryPolicy(),  # noqa: B008 (frozen dataclass: a shared default is safe)
        record_health: bool = True,
        sleep=time.sleep,
        network_label: str | None = None,
        cooldown: float = DEFAULT_COOLDOWN,
    ):
        if not endpoints:
            raise ValueError("A ChainClient needs at least one endpoint.")
        self.chain_id_expected = int(chain_id)
        self.endpoints = list(endpoints)
        self.policy = policy
        self.record_health = record_health
        self.sleep = sleep
        self.network_label = network_label or str(chain_id)
        self.cooldown = cooldown
        self._session = requests.Session()
        self._verified: set[int] = set()
        self._wrong_chain: dict[int, int] = {}  # endpoint index -> chain id it answers for
        self._block_receipts_supported = True
        self._last_latency_ms: int | None = None

    @classmethod
    def for_network(cls, network, *, contract=None, config=None) -> ChainClient:
        """Enabled RpcEndpoints by position, then the contract's fallback_rpc; policy from CryptoConfig."""
        from billing.models import CryptoConfig

        config = config or CryptoConfig.load()
        specs = endpoint_specs(network)
        if contract is not None and contract.fallback_rpc and all(s.url != contract.fallback_rpc for s in specs):
            specs.append(fallback_spec(contract.fallback_rpc, config))
        if not specs:
            raise AllEndpointsFailed(f"Network {network.slug} has no enabled RPC endpoint.")
        return cls(
            chain_id=network.chain_id,
            endpoints=specs,
            policy=policy_from_config(config),
            network_label=network.slug,
        )

    # -- core ------------------------------------------------------------------------------------------

    def _order(self) -> list[int]:
        """Endpoints not answering for another chain: available ones by position, then cooling-down ones
        (a last resort rather than no answer at all)."""
        now = time.monotonic()
        usable = [i for i in range(len(self.endpoints)) if i not in self._wrong_chain]
        ready = [i for i in usable if self._st(i).down_until <= now]
        cooling = [i for i in usable if self._st(i).down_until > now]
        return ready + cooling

    def _st(self, index: int) -> _EndpointState:
        return endpoint_state(self.chain_id_expected, self.endpoints[index].url)

    def _health(self, index: int, **kwargs) -> None:
        if not self.record_health:
            # metrics and in-process state still follow; only the DB write is skipped
            kwargs["write_db"] = False
        record_health(spec=self.endpoints[index], state=self._st(index), network_label=self.network_label, **kwargs)

    def _notice_failover(self, index: int, failures: dict[int, _Failure]) -> None:
        """The first endpoint did not serve this call (it failed now, is cooling down or answers for another
        chain) and endpoint `index` did: tell ops, at most once an hour per serving endpoint (the key's hour
        bucket dedupes across processes). Best effort: a call that succeeded never fails because of this."""
        spec, primary = self.endpoints[index], self.endpoints[0]
        if not self.record_health or primary.endpoint_id is None or failover_hook is None:
            return
        now = time.monotonic()
        memo = (self.chain_id_expected, spec.url)
        with _STATE_LOCK:
            if now - _FAILOVER_NOTICED.get(memo, float("-inf")) < FAILOVER_NOTICE_SECONDS:
                return
            _FAILOVER_NOTICED[memo] = now
        why = failures[0].kind if 0 in failures else "cooling down or answering for another chain"
        failover_hook(
            network=self.network_label,
            from_label=primary.label,
            to_label=spec.label,
            from_url=primary.url,
            to_url=spec.url,
            why=why,
        )

    def _count(self, index: int, method: str, outcome: str) -> None:
        metrics.RPC_REQUESTS.labels(
            network=self.network_label, endpoint=self.endpoints[index].label, method=method, outcome=outcome
        ).inc()

    def _request(self, index: int, method: str, params: list | None) -> Any:
        """One request to one endpoint. Returns the result or raises TransportError / a classified RpcError."""
        spec = self.endpoints[index]
        try:
            answer, elapsed = post_json_rpc(self._session, spec, method, params)
        except TransportError as exc:
            self._count(index, method, "timeout" if isinstance(exc, RpcTimeout) else "error")
            raise
        metrics.RPC_LATENCY.labels(network=self.network_label, endpoint=spec.label).observe(elapsed)
        if "error" not in answer:
            self._count(index, method, "ok")
            self._last_latency_ms = int(elapsed * 1000)
            return answer.get("result")
        error = answer.get("error") or {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        message = mask_url(str(error.get("message", "")))[:300]
        kind = classify_rpc_error(method, code, message)
        self._count(index, method, {"transient": "rpc_error"}.get(kind, kind))
        self._last_latency_ms = int(elapsed * 1000)
        if kind == "range":
            raise LogRangeTooLarge(message, code=code, data=error.get("data"), endpoint=spec.masked_url)
        if kind == "unsupported":
            raise MethodNotSupported(message, code=code, data=error.get("data"), endpoint=spec.masked_url)
        if kind == "deterministic":
            raise JsonRpcError(message, code=code, data=error.get("data"), endpoint=spec.masked_url)
        raise TransportError(f"JSON-RPC error {code}: {message}", code=code, endpoint=spec.masked_url)

    def _verify_chain(self, index: int) -> int:
        """eth_chainId on first use. Returns the chain id; raises TransportError like any request."""
        result = self._request(index, "eth_chainId", [])
        try:
            return int(result, 16)
        except (TypeError, ValueError):
            raise TransportError("eth_chainId answer is not a hex number", endpoint=self.endpoints[index].masked_url)

    def _attempt(self, index: int, method: str, params: list | None) -> Any:
        if index not in self._verified:
            answered = self._verify_chain(index)
            if answered != self.chain_id_expected:
                raise WrongChain(
                    f"answers for chain id {answered}, expected {self.chain_id_expected}",
                    endpoint=self.endpoints[index].masked_url,
                    data=answered,
                )
            self._verified.add(index)
            if method == "eth_chainId":
                return hex(answered)
        return self._request(index, method, params)

    def call(self, method: str, params: list | None = None) -> Any:
        """Raw JSON-RPC result, with retries on each endpoint and failover to the next."""
        failures: dict[int, _Failure] = {}
        for index in self._order():
            spec = self.endpoints[index]
            last: str = ""
            for retry in range(self.policy.max_retries + 1):
                if retry:
                    self.sleep(self.policy.backoff(retry - 1))
                try:
                    result = self._attempt(index, method, params)
                except WrongChain as exc:
                    self._wrong_chain[index] = exc.data
                    self._st(index).down_until = time.monotonic() + self.cooldown
                    self._health(index, ok=False, healthy=False, error=f"wrong chain: {exc}")
                    logger.error(
                        "rpc_wrong_chain",
                        network=self.network_label,
                        endpoint=spec.label,
                        url=spec.masked_url,
                        answered=exc.data,
                        expected=self.chain_id_expected,
                    )
                    failures[index] = _Failure("wrong_chain", str(exc))
                    break
                except MethodNotSupported as exc:
                    # The endpoint is fine, it just lacks the method: another one may have it.
                    self._health(index, ok=True, healthy=True, latency_ms=self._last_latency_ms)
                    failures[index] = _Failure("unsupported", str(exc))
                    break
                except (JsonRpcError, LogRangeTooLarge):
                    # A real answer about the request itself: the endpoint is healthy, the caller decides.
                    self._health(index, ok=True, healthy=True, latency_ms=self._last_latency_ms)
                    raise
                except TransportError as exc:
                    last = str(exc)
                    self._health(index, ok=False, healthy=None, error=last)
                    logger.warning(
                        "rpc_attempt_failed",
                        network=self.network_label,
                        endpoint=spec.label,
                        url=spec.masked_url,
                        method=method,
                        attempt=retry + 1,
                        error=last,
                    )
                    if isinstance(exc, RpcTimeout):
                        # A hung endpoint would cost a full timeout per retry: fail over now, and let the next
                        # calls start from the others until its cool-down is over.
                        break
                    continue
                else:
                    self._st(index).down_until = 0.0
                    self._health(index, ok=True, healthy=True, latency_ms=self._last_latency_ms)
                    if failures:
                        metrics.RPC_FAILOVERS.labels(network=self.network_label, endpoint=spec.label).inc()
                    if index != 0:
                        self._notice_failover(index, failures)
                    return result
            if index not in failures:
                # used up its retries, or timed out once: let the others go first for a while
                self._st(index).down_until = time.monotonic() + self.cooldown
                self._health(index, ok=False, healthy=False, error=last, attempt=False)
                failures[index] = _Failure("transient", last)
                logger.warning(
                    "rpc_endpoint_down",
                    network=self.network_label,
                    endpoint=spec.label,
                    url=spec.masked_url,
                    method=method,
                    error=last,
                )
        for index, wrong in self._wrong_chain.items():
            failures.setdefault(index, _Failure("wrong_chain", f"answers for chain id {wrong}"))
        metrics.RPC_CALLS_FAILED.labels(network=self.network_label, method=method).inc()
        raise self._summarize(method, failures)

    def _summarize(self, method: str, failures: dict[int, _Failure]) -> RpcError:
        parts = "; ".join(
            f"{self.endpoints[i].masked_url} (#{self.endpoints[i].label}): {f.message}"
            for i, f in sorted(failures.items())
        )
        kinds = {f.kind for f in failures.values()}
        if "unsupported" in kinds:
            return MethodNotSupported(f"{method} is not supported by any reachable endpoint: {parts}")
        if kinds == {"wrong_chain"}:
            return AllEndpointsWrongChain(
                f"every endpoint answers for another chain than {self.chain_id_expected}: {parts}"
            )
        return AllEndpointsFailed(f"{method} failed on every endpoint of chain {self.chain_id_expected}: {parts}")

    # -- typed helpers ---------------------------------------------------------------------------------

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def get_block(self, block: int | str, full_transactions: bool = False) -> dict | None:
        method = "eth_getBlockByHash" if _is_hash(block) else "eth_getBlockByNumber"
        return self.call(method, [_block_param(block), full_transactions])

    def get_transaction(self, tx_hash: str) -> dict | None:
        return self.call("eth_getTransactionByHash", [tx_hash])

    def get_transaction_receipt(self, tx_hash: str) -> dict | None:
        return self.call("eth_getTransactionReceipt", [tx_hash])

    def get_block_receipts(self, block: int) -> list[dict]:
        """eth_getBlockReceipts (one request for the whole block); one receipt per tx where unsupported.

        A block the endpoint does not have (yet) raises RpcError rather than looking like an empty block.
        """
        if self._block_receipts_supported:
            try:
                receipts = self.call("eth_getBlockReceipts", [_block_param(block)])
            except MethodNotSupported:
                self._block_receipts_supported = False
                logger.info("rpc_block_receipts_unsupported", network=self.network_label)
            else:
                if receipts is None:
                    raise RpcError(f"block {block} is not available yet")
                return receipts
        header = self.get_block(block, False)
        if header is None:
            raise RpcError(f"block {block} is not available yet")
        receipts = []
        for tx_hash in header.get("transactions", []):
            receipt = self.get_transaction_receipt(tx_hash)
            if receipt is None:
                raise RpcError(f"receipt of {tx_hash} in block {block} is not available yet")
            receipts.append(receipt)
        return receipts

    def get_logs(
        self, *, address: str | list[str], from_block: int, to_block: int, topics: list | None = None
    ) -> list[dict]:
        """Logs of [from_block, to_block], each once and in chain order. Windows of at most
        policy.max_log_range blocks; a window the provider refuses is halved until it is accepted."""
        if to_block < from_block:
            return []
        logs: list[dict] = []
        step = max(1, self.policy.max_log_range)
        start = from_block
        while start <= to_block:
            end = min(to_block, start + step - 1)
            logs.extend(self._get_logs_split(address, start, end, topics))
            start = end + 1
        return logs

    def _get_logs_split(self, address, start: int, end: int, topics: list | None) -> list[dict]:
        query: dict[str, Any] = {"address": address, "fromBlock": hex(start), "toBlock": hex(end)}
        if topics is not None:
            query["topics"] = topics
        try:
            return self.call("eth_getLogs", [query]) or []
        except LogRangeTooLarge:
            if start >= end:
                raise  # one block with too many logs: nothing left to split
            middle = (start + end) // 2
            logger.info("rpc_get_logs_split", network=self.network_label, from_block=start, to_block=end)
            return self._get_logs_split(address, start, middle, topics) + self._get_logs_split(
                address, middle + 1, end, topics
            )

    def web3(self) -> Web3:
        """A Web3 whose every request goes through call(): contract calls and tx sends get the failover.
        web3's own retrying stays off so the two do not nest."""
        return Web3(ClientProvider(self))


def _is_hash(block: int | str) -> bool:
    return isinstance(block, str) and block.startswith("0x") and len(block) == 66


def _block_param(block: int | str) -> str:
    if isinstance(block, int):
        return hex(block)
    return block  # "latest", "safe", "finalized", "pending", "earliest", a hex number or a block hash


def policy_from_config(config) -> RetryPolicy:
    return RetryPolicy(
        max_retries=config.max_retries,
        backoff_base=config.backoff_base_ms / 1000,
        backoff_max=config.backoff_max_ms / 1000,
        max_log_range=config.get_logs_max_range,
    )


class ClientProvider(JSONBaseProvider):
    """web3 provider backed by a ChainClient. JSON-RPC errors about the request (revert...) go back to web3
    as error answers, so it raises its usual ContractLogicError & co; outages raise RpcError."""

    exception_retry_configuration = None  # the ChainClient retries; web3 must not retry on top of it

    def __init__(self, client: ChainClient):
        super().__init__()
        self.client = client

    def make_request(self, method, params):
        request_id = next(self.request_counter)
        try:
            result = self.client.call(str(method), list(params or []))
        except (JsonRpcError, MethodNotSupported) as exc:
            error: dict[str, Any] = {"code": exc.code if exc.code is not None else -32000, "message": str(exc)}
            if exc.data is not None:
                error["data"] = exc.data
            return {"jsonrpc": "2.0", "id": request_id, "error": error}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.client.call("eth_chainId")
        except RpcError:
            if show_traceback:
                raise
            return False
        return True
