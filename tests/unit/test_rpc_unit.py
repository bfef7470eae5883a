"""ChainClient logic on recorded JSON-RPC answers (tests/fixtures/rpc/, recorded from anvil or copied from
providers' documented errors): backoff math, retry/failover order, error classes, getLogs splitting."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from billing import retry
from billing.chain import rpc
from billing.chain.rpc import (
    AllEndpointsFailed,
    ChainClient,
    EndpointSpec,
    JsonRpcError,
    LogRangeTooLarge,
    MethodNotSupported,
    RetryPolicy,
    RpcTimeout,
    TransportError,
    classify_rpc_error,
)
from billing_project.logging import mask_url

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rpc"


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(autouse=True)
def _clean_state():
    rpc.reset_endpoint_state()
    yield
    rpc.reset_endpoint_state()


class Replay:
    """Stands in for the network: answers each (endpoint, method) from recorded JSON-RPC answers."""

    def __init__(self, answers: dict):
        self.answers = answers  # url -> method -> answer dict | "down" | callable(params) -> answer
        self.requests: list[tuple[str, str, list]] = []

    def __call__(self, session, spec, method, params):
        self.requests.append((spec.url, method, params))
        answer = self.answers[spec.url].get(method, "down") if spec.url in self.answers else "down"
        if callable(answer):
            answer = answer(params)
        if answer == "down":
            raise TransportError("connection failed: connection refused", endpoint=spec.masked_url)
        return answer, 0.004


@pytest.fixture
def replay(monkeypatch):
    def install(answers: dict) -> Replay:
        fake = Replay(answers)
        monkeypatch.setattr(rpc, "post_json_rpc", fake)
        return fake

    return install


def make_client(urls: list[str], policy: RetryPolicy, sleeps: list | None = None, **kwargs) -> ChainClient:
    return ChainClient(
        chain_id=31337,
        endpoints=[EndpointSpec(url=url, timeout=1) for url in urls],
        policy=policy,
        record_health=False,
        sleep=(sleeps.append if sleeps is not None else (lambda _s: None)),
        **kwargs,
    )


# --- backoff math -----------------------------------------------------------------------------------------


def test_backoff_caps_double_from_the_base_up_to_the_max():
    policy = RetryPolicy()  # base 0.2 s, max 5 s
    assert [policy.backoff_cap(i) for i in range(7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_backoff_is_billing_retry_jitter_between_half_the_cap_and_the_cap():
    policy = RetryPolicy(backoff_base=0.1, backoff_max=1.0)
    random.seed(7)
    samples = [policy.backoff(2) for _ in range(4000)]  # cap 0.4 for the third retry
    assert min(samples) >= 0.2 and max(samples) <= 0.4
    assert sum(samples) / len(samples) == pytest.approx(0.3, abs=0.01)  # uniform in [cap/2, cap]
    assert len({round(s, 6) for s in samples}) > 3900  # jitter, not a fixed delay
    assert max(policy.backoff(9) for _ in range(200)) <= 1.0


def test_worst_case_seconds_adds_timeouts_and_backoff_caps_per_endpoint():
    policy = RetryPolicy(max_retries=3, backoff_base=0.2, backoff_max=0.5)
    # per endpoint: (3 + 2) timeouts + caps 0.2 + 0.4 + 0.5
    assert policy.worst_case_seconds([1.0, 2.0]) == pytest.approx(5 * 1.0 + 1.1 + 5 * 2.0 + 1.1)
    assert RetryPolicy(max_retries=0).worst_case_seconds([3.0]) == pytest.approx(6.0)


def test_retries_sleep_the_jittered_backoff_then_fail_over(replay, monkeypatch):
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)  # jitter at its ceiling: sleeps = caps
    fake = replay(
        {
            "http://b": {
                "eth_chainId": recorded("eth_chainId_31337.json"),
                "eth_blockNumber": recorded("eth_blockNumber.json"),
            }
        }
    )
    sleeps: list[float] = []
    client = make_client(
        ["http://a", "http://b"], RetryPolicy(max_retries=3, backoff_base=0.2, backoff_max=0.5), sleeps
    )

    assert client.block_number() == int(recorded("eth_blockNumber.json")["result"], 16)
    assert sleeps == pytest.approx([0.2, 0.4, 0.5])  # between a's 4 tries; none when failing over
    assert [(url, method) for url, method, _ in fake.requests] == [
        ("http://a", "eth_chainId"),
        ("http://a", "eth_chainId"),
        ("http://a", "eth_chainId"),
        ("http://a", "eth_chainId"),
        ("http://b", "eth_chainId"),
        ("http://b", "eth_blockNumber"),
    ]
    # a is cooling down: the next call starts from b and does not check its chain again
    fake.requests.clear()
    client.block_number()
    assert [(url, method) for url, method, _ in fake.requests] == [("http://b", "eth_blockNumber")]


def test_cooled_down_preferred_endpoint_is_tried_first_again(replay, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(rpc.time, "monotonic", lambda: now[0])
    answers = {
        "http://b": {
            "eth_chainId": recorded("eth_chainId_31337.json"),
            "eth_blockNumber": recorded("eth_blockNumber.json"),
        }
    }
    fake = replay(answers)
    client = make_client(["http://a", "http://b"], RetryPolicy(max_retries=0), cooldown=10)
    client.block_number()
    now[0] += 9.9
    fake.requests.clear()
    client.block_number()
    assert fake.requests[0][0] == "http://b"
    now[0] += 0.2  # cool-down over, and a is back
    answers["http://a"] = dict(answers["http://b"])
    fake.requests.clear()
    client.block_number()
    assert [url for url, _, _ in fake.requests] == ["http://a", "http://a"]  # chain check, then the call


def test_all_down_lists_every_endpoint_masked(replay):
    replay({})
    client = make_client(
        ["https://rpc.example/v3/KEY123", "https://user:pw@other.example/rpc"], RetryPolicy(max_retries=1)
    )
    with pytest.raises(AllEndpointsFailed) as caught:
        client.block_number()
    message = str(caught.value)
    assert "https://rpc.example/****" in message and "https://other.example/****" in message
    assert "KEY123" not in message and "pw" not in message


# --- error classes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", recorded("provider_errors.json")["errors"], ids=lambda c: c["error"]["message"][:40])
def test_provider_errors_are_classified(case):
    error = case["error"]
    assert classify_rpc_error("eth_getLogs", error["code"], error["message"]) == case["kind"]


def test_range_messages_only_count_for_get_logs():
    assert classify_rpc_error("eth_call", -32005, "query returned more than 10000 results") == "transient"


def test_a_request_error_is_raised_at_once_without_retry_or_failover(replay):
    fake = replay(
        {
            "http://a": {
                "eth_chainId": recorded("eth_chainId_31337.json"),
                "eth_sendRawTransaction": recorded("anvil_nonce_too_low.json"),
            },
            "http://b": {"eth_chainId": recorded("eth_chainId_31337.json")},
        }
    )
    client = make_client(["http://a", "http://b"], RetryPolicy(max_retries=3))
    with pytest.raises(JsonRpcError, match="nonce too low") as caught:
        client.call("eth_sendRawTransaction", ["0x02"])
    assert caught.value.code == -32003
    assert [method for _, method, _ in fake.requests] == ["eth_chainId", "eth_sendRawTransaction"]


def test_a_missing_method_is_asked_once_per_endpoint(replay):
    not_found = recorded("anvil_method_not_found.json")
    chain_id = recorded("eth_chainId_31337.json")
    fake = replay(
        {
            "http://a": {"eth_chainId": chain_id, "eth_getBlockReceipts": not_found},
            "http://b": {"eth_chainId": chain_id, "eth_getBlockReceipts": not_found},
        }
    )
    client = make_client(["http://a", "http://b"], RetryPolicy(max_retries=3))
    with pytest.raises(MethodNotSupported):
        client.call("eth_getBlockReceipts", ["0x1"])
    assert [m for _, m, _ in fake.requests].count("eth_getBlockReceipts") == 2


def test_mask_url_masks_paths_queries_and_credentials():
    assert mask_url("https://mainnet.infura.io/v3/abcdef") == "https://mainnet.infura.io/****"
    assert mask_url("https://rpc.example?apikey=abc") == "https://rpc.example/****"
    assert mask_url("https://user:secret@rpc.example/") == "https://rpc.example"
    assert mask_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"


# --- getLogs splitting on recorded logs --------------------------------------------------------------------


@pytest.fixture
def recorded_logs():
    data = recorded("eth_getLogs_emitter.json")
    return data["request"], data["response"]["result"]


def serve_logs(logs: list[dict], *, refuse_over: int, seen: list):
    refusal = next(e for e in recorded("provider_errors.json")["errors"] if e["provider"] == "infura")["error"]

    def answer(params):
        start, end = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
        seen.append((start, end))
        if end - start + 1 > refuse_over:
            return {"jsonrpc": "2.0", "id": 1, "error": refusal}
        result = [entry for entry in logs if start <= int(entry["blockNumber"], 16) <= end]
        return {"jsonrpc": "2.0", "id": 1, "result": result}

    return answer


def test_get_logs_windows_then_halves_refused_windows(replay, recorded_logs):
    request, logs = recorded_logs
    assert request["fromBlock"] == 1 and request["toBlock"] == 13 and len(logs) == 24
    seen: list[tuple[int, int]] = []
    replay(
        {
            "http://a": {
                "eth_chainId": recorded("eth_chainId_31337.json"),
                "eth_getLogs": serve_logs(logs, refuse_over=3, seen=seen),
            }
        }
    )
    client = make_client(["http://a"], RetryPolicy(max_retries=3, max_log_range=5))

    result = client.get_logs(address=request["address"], from_block=1, to_block=13)

    assert result == logs  # each log once, in order
    assert seen == [(1, 5), (1, 3), (4, 5), (6, 10), (6, 8), (9, 10), (11, 13)]


def test_get_logs_halves_recursively_down_to_what_the_provider_accepts(replay, recorded_logs):
    request, logs = recorded_logs
    seen: list[tuple[int, int]] = []
    replay(
        {
            "http://a": {
                "eth_chainId": recorded("eth_chainId_31337.json"),
                "eth_getLogs": serve_logs(logs, refuse_over=2, seen=seen),
            }
        }
    )
    client = make_client(["http://a"], RetryPolicy(max_log_range=10_000))
    result = client.get_logs(address=request["address"], from_block=1, to_block=13)
    assert result == logs
    accepted = [(s, e) for s, e in seen if e - s + 1 <= 2]
    assert accepted[0][0] == 1 and accepted[-1][1] == 13
    assert all(b[0] == a[1] + 1 for a, b in zip(accepted, accepted[1:], strict=False))  # a tiling, no overlap


def test_one_block_the_provider_refuses_cannot_be_split(replay, recorded_logs):
    request, logs = recorded_logs
    replay(
        {
            "http://a": {
                "eth_chainId": recorded("eth_chainId_31337.json"),
                "eth_getLogs": serve_logs(logs, refuse_over=0, seen=[]),
            }
        }
    )
    client = make_client(["http://a"], RetryPolicy())
    with pytest.raises(LogRangeTooLarge):
        client.get_logs(address=request["address"], from_block=4, to_block=7)


def test_empty_range_asks_nothing(replay):
    fake = replay({})
    assert make_client(["http://a"], RetryPolicy()).get_logs(address="0x0", from_block=5, to_block=4) == []
    assert fake.requests == []


def test_a_timeout_fails_over_at_once_and_the_next_call_starts_elsewhere(replay):
    def hung(params):
        raise RpcTimeout("timed out after 1s", endpoint="http://a")

    answers = {
        "http://a": {"eth_chainId": recorded("eth_chainId_31337.json"), "eth_blockNumber": hung},
        "http://b": {
            "eth_chainId": recorded("eth_chainId_31337.json"),
            "eth_blockNumber": recorded("eth_blockNumber.json"),
        },
    }
    fake = replay(answers)
    sleeps: list[float] = []
    client = make_client(["http://a", "http://b"], RetryPolicy(max_retries=3), sleeps, cooldown=30)
    assert client.block_number() == int(recorded("eth_blockNumber.json")["result"], 16)
    # one timed-out request on a, no retry and no sleep: b answers this very call
    assert [(url, method) for url, method, _ in fake.requests] == [
        ("http://a", "eth_chainId"),
        ("http://a", "eth_blockNumber"),
        ("http://b", "eth_chainId"),
        ("http://b", "eth_blockNumber"),
    ]
    assert sleeps == []
    fake.requests.clear()
    client.block_number()
    assert [url for url, _, _ in fake.requests] == ["http://b"]  # a is cooling down
