"""ChainClient against real anvils: failover past a dead and a wrong-chain endpoint, the time bound when all
are down, going back to the preferred endpoint, getLogs splitting, web3 through the client, the probe."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from prometheus_client import REGISTRY
from web3.exceptions import ContractLogicError

from billing.chain.probe import probe_endpoints
from billing.chain.rpc import (
    AllEndpointsFailed,
    AllEndpointsWrongChain,
    ChainClient,
    EndpointSpec,
    RetryPolicy,
    WrongChain,
    reset_endpoint_state,
)
from billing.models import RpcEndpoint
from tests.anvil import ANVIL_KEYS, ROOT, Anvil, free_port
from tests.factories import CryptoConfigFactory, NetworkFactory, PaymentContractFactory, RpcEndpointFactory

pytestmark = pytest.mark.chain

SECRET = "sk_live_DO_NOT_LEAK_42"
FAST = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02)

EMITTER_SOURCE = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
contract Emitter {
    event Ping(uint256 indexed n, address indexed from, uint256 value);
    function ping(uint256 count) external {
        for (uint256 i = 0; i < count; i++) emit Ping(i, msg.sender, block.number);
    }
}
"""

COMPILE_JS = """
const solc = require('solc');
const source = require('fs').readFileSync(0, 'utf8');
const input = {language: 'Solidity', sources: {'Emitter.sol': {content: source}},
  settings: {outputSelection: {'*': {'*': ['abi', 'evm.bytecode.object']}}}};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of out.errors || []) if (e.severity === 'error') { console.error(e.formattedMessage); process.exit(1); }
const c = out.contracts['Emitter.sol'].Emitter;
process.stdout.write(JSON.stringify({abi: c.abi, bytecode: '0x' + c.evm.bytecode.object}));
"""


@pytest.fixture(autouse=True)
def _clean_endpoint_state():
    reset_endpoint_state()
    yield
    reset_endpoint_state()


@pytest.fixture(scope="module")
def node():
    """Our own anvil (31337): these tests mine and deploy, and must not disturb the shared one."""
    with Anvil() as chain:
        yield chain


@pytest.fixture(scope="module")
def other_chain():
    with Anvil(chain_id=1337) as chain:
        yield chain


@pytest.fixture(scope="module")
def emitter_artifact():
    done = subprocess.run(
        ["node", "-e", COMPILE_JS], input=EMITTER_SOURCE, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def send_signed(chain: Anvil, key: str, *, to: str | None, data: str, nonce: int) -> dict:
    account = Account.from_key(key)
    tx = {
        "type": 2,
        "chainId": chain.chain_id,
        "nonce": nonce,
        "value": 0,
        "data": data,
        "gas": 3_000_000,
        "maxFeePerGas": 10 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    if to:
        tx["to"] = to
    signed = account.sign_transaction(tx)
    tx_hash = chain.call("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
    deadline = time.monotonic() + 10
    while (receipt := chain.call("eth_getTransactionReceipt", [tx_hash])) is None and time.monotonic() < deadline:
        time.sleep(0.02)  # anvil mines right after answering, not before
    assert receipt is not None and receipt["status"] == "0x1"
    return receipt


@pytest.fixture(scope="module")
def emitted(node, emitter_artifact):
    """An Emitter on our anvil and 30 blocks each holding one ping(3): 90 Ping logs, 3 per block."""
    key = ANVIL_KEYS[5]
    sender = Account.from_key(key).address
    nonce = int(node.call("eth_getTransactionCount", [sender, "pending"]), 16)
    deployed = send_signed(node, key, to=None, data=emitter_artifact["bytecode"], nonce=nonce)
    address = to_checksum_address(deployed["contractAddress"])
    selector_ping = "0x" + keccak(text="ping(uint256)")[:4].hex()
    blocks = []
    for i in range(30):
        receipt = send_signed(
            node, key, to=address, data=selector_ping + (3).to_bytes(32, "big").hex(), nonce=nonce + 1 + i
        )
        blocks.append(int(receipt["blockNumber"], 16))
    return {"address": address, "from_block": int(deployed["blockNumber"], 16), "to_block": blocks[-1]}


def counter(method: str, endpoint: str, outcome: str = "ok", network: str = "31337") -> float:
    value = REGISTRY.get_sample_value(
        "billing_rpc_requests_total",
        {"network": network, "endpoint": endpoint, "method": method, "outcome": outcome},
    )
    return value or 0.0


def closed_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


# --- failover ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_fails_over_past_dead_and_wrong_chain_endpoints_and_records_health(node, other_chain):
    CryptoConfigFactory(max_retries=1, backoff_base_ms=10, backoff_max_ms=20)
    network = NetworkFactory(chain_id=31337, slug="local")
    dead = RpcEndpointFactory(network=network, position=0, url=closed_url(f"/v3/{SECRET}"), timeout_seconds=1)
    wrong = RpcEndpointFactory(network=network, position=1, url=other_chain.url, timeout_seconds=1)
    good = RpcEndpointFactory(network=network, position=2, url=node.url, timeout_seconds=Decimal("1.5"))
    RpcEndpointFactory(network=network, position=3, url=closed_url(), enabled=False)

    client = ChainClient.for_network(network)
    assert [e.endpoint_id for e in client.endpoints] == [dead.pk, wrong.pk, good.pk]
    assert client.policy == RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02, max_log_range=2000)

    node.mine(2)
    assert client.block_number() == node.block_number()
    assert client.chain_id() == 31337

    dead.refresh_from_db()
    wrong.refresh_from_db()
    good.refresh_from_db()
    assert dead.healthy is False
    assert dead.consecutive_failures == 2  # one try + max_retries=1
    assert "connection refused" in dead.last_error
    assert SECRET not in dead.last_error
    assert wrong.healthy is False
    assert "1337" in wrong.last_error
    assert good.healthy is True
    assert good.consecutive_failures == 0
    assert good.last_ok_at is not None and good.last_checked_at is not None
    assert good.last_latency_ms is not None and good.last_error == ""

    # The wrong-chain endpoint is never used again by this client: its eth_chainId was asked once.
    label = str(wrong.pk)
    assert counter("eth_chainId", label, network="local") == 1
    assert counter("eth_blockNumber", label, network="local") == 0
    client.block_number()
    client.get_block("latest")
    assert counter("eth_chainId", label, network="local") == 1
    assert (
        REGISTRY.get_sample_value("billing_rpc_endpoint_healthy", {"network": "local", "endpoint": str(good.pk)}) == 1.0
    )


@pytest.mark.django_db
def test_contract_fallback_rpc_is_tried_after_the_network_endpoints(node):
    CryptoConfigFactory(max_retries=0, request_timeout_seconds=Decimal("2"))
    network = NetworkFactory(chain_id=31337)
    RpcEndpointFactory(network=network, position=0, url=closed_url(), timeout_seconds=1)
    contract = PaymentContractFactory(network=network, fallback_rpc=node.url)

    client = ChainClient.for_network(network, contract=contract)
    assert client.endpoints[-1] == EndpointSpec(url=node.url, timeout=2.0, endpoint_id=None)
    assert client.block_number() == node.block_number()


def test_every_endpoint_on_another_chain_raises_wrong_chain(other_chain):
    client = ChainClient(
        chain_id=31337, endpoints=[EndpointSpec(url=other_chain.url, timeout=1)], policy=FAST, record_health=False
    )
    with pytest.raises(WrongChain) as caught:
        client.block_number()
    assert isinstance(caught.value, AllEndpointsWrongChain)
    assert isinstance(caught.value, AllEndpointsFailed)
    assert "1337" in str(caught.value)


class Blackhole:
    """Accepts TCP connections and never answers: a hung endpoint, for the timeout path."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/key/{SECRET}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_all_endpoints_down_fails_within_the_policy_bound():
    hung = Blackhole()
    try:
        policy = RetryPolicy(max_retries=2, backoff_base=0.05, backoff_max=0.08)
        endpoints = [
            EndpointSpec(url=closed_url(f"/v3/{SECRET}"), timeout=0.5),
            EndpointSpec(url=hung.url, timeout=0.3),
            EndpointSpec(url=closed_url(), timeout=0.5),
        ]
        client = ChainClient(chain_id=31337, endpoints=endpoints, policy=policy, record_health=False)
        # Per endpoint: (max_retries + 2) timeouts + the backoff caps 0.05 + 0.08 (see worst_case_seconds).
        bound = 3 * 0.13 + 4 * (0.5 + 0.3 + 0.5)
        assert policy.worst_case_seconds([e.timeout for e in endpoints]) == pytest.approx(bound)

        started = time.monotonic()
        with pytest.raises(AllEndpointsFailed) as caught:
            client.block_number()
        elapsed = time.monotonic() - started
    finally:
        hung.close()

    assert elapsed <= bound
    # The hung endpoint was waited on once, its full timeout, and abandoned at once (no retry).
    assert len(hung.accepted) == 1
    assert elapsed >= 0.3
    message = str(caught.value)
    assert SECRET not in message
    for spec in endpoints:
        assert spec.masked_url in message
    assert "timed out after 0.3s" in message
    assert message.count("connection refused") == 2


@pytest.mark.django_db(transaction=True)
def test_follower_is_on_the_fallback_within_5_seconds_of_a_hung_primary(node):
    """Issue 8 §5: a primary that accepts connections and never answers (a black hole) costs one timeout,
    not one per retry: the chain follower, with the default retry policy, finishes its sync on the contract's
    fallback anvil within 5 s, and the next sync does not touch the hung endpoint again."""
    from billing.services.chain_sync import contract_sync

    hung = Blackhole()
    try:
        CryptoConfigFactory(max_retries=3, request_timeout_seconds=Decimal("2"))  # 4 tries per endpoint
        network = NetworkFactory(chain_id=31337, confirmation_depth=0)
        primary = RpcEndpointFactory(network=network, position=0, url=hung.url, timeout_seconds=Decimal("2"))
        node.mine(3)
        head = node.block_number()
        contract = PaymentContractFactory(network=network, fallback_rpc=node.url, deployment_block=head - 2)

        from billing import metrics

        def failovers() -> float:  # what /metrics shows as billing_rpc_failovers_total for this network
            return sum(
                s.value
                for family in metrics.RPC_FAILOVERS.collect()
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("network") == network.slug
            )

        before = failovers()
        started = time.monotonic()
        result = contract_sync(contract_id=contract.pk)
        elapsed = time.monotonic() - started
        assert result.to_block is not None and result.to_block >= head  # synced, by the fallback
        assert failovers() > before  # the metrics show the failover (issue 14)
        assert elapsed < 5, f"{elapsed:.1f}s"
        assert len(hung.accepted) == 1  # one connection, one timeout, then straight to the fallback
        primary.refresh_from_db()
        assert primary.healthy is False and "timed out after 2s" in primary.last_error
        assert SECRET not in primary.last_error

        node.mine(2)
        started = time.monotonic()
        assert contract_sync(contract_id=contract.pk).to_block >= head + 2
        assert time.monotonic() - started < 1  # the primary is cooling down: not waited on again
        assert len(hung.accepted) == 1
    finally:
        hung.close()


@pytest.mark.django_db
def test_goes_back_to_the_preferred_endpoint_once_it_recovers():
    port = free_port()
    network = NetworkFactory(chain_id=31337)
    first_row = RpcEndpointFactory(network=network, position=0, url=f"http://127.0.0.1:{port}", timeout_seconds=1)
    second_row = RpcEndpointFactory(network=network, position=1, timeout_seconds=1)
    with Anvil() as backup:
        backup.mine(7)
        second_row.url = backup.url
        second_row.save()
        client = ChainClient(
            chain_id=31337,
            endpoints=[
                EndpointSpec(url=first_row.url, timeout=1, endpoint_id=first_row.pk),
                EndpointSpec(url=backup.url, timeout=1, endpoint_id=second_row.pk),
            ],
            policy=FAST,
            cooldown=1.0,
        )
        assert client.block_number() == 7  # answered by the backup
        first_row.refresh_from_db()
        assert first_row.healthy is False

        with Anvil(port=port) as preferred:
            preferred.mine(2)
            # Still cooling down: the backup keeps the traffic for now.
            assert client.block_number() == 7
            time.sleep(1.1)
            assert client.block_number() == 2  # the preferred endpoint answers again
            assert client.block_number() == 2
            first_row.refresh_from_db()
            assert first_row.healthy is True
            assert first_row.consecutive_failures == 0
            assert first_row.last_error == ""


# --- getLogs ---------------------------------------------------------------------------------------------


def reference_logs(node: Anvil, emitted: dict) -> list[dict]:
    logs = node.call(
        "eth_getLogs",
        [{"address": emitted["address"], "fromBlock": hex(emitted["from_block"]), "toBlock": hex(emitted["to_block"])}],
    )
    assert len(logs) == 90
    return logs


def log_keys(logs: list[dict]) -> list[tuple[int, int]]:
    return [(int(entry["blockNumber"], 16), int(entry["logIndex"], 16)) for entry in logs]


def test_get_logs_splits_a_range_above_the_policy_limit(node, emitted):
    expected = reference_logs(node, emitted)
    policy = RetryPolicy(max_retries=0, max_log_range=4)
    client = ChainClient(
        chain_id=31337, endpoints=[EndpointSpec(url=node.url, timeout=5)], policy=policy, record_health=False
    )
    before = counter("eth_getLogs", "fallback")
    logs = client.get_logs(address=emitted["address"], from_block=emitted["from_block"], to_block=emitted["to_block"])
    span = emitted["to_block"] - emitted["from_block"] + 1
    assert counter("eth_getLogs", "fallback") - before == -(-span // 4)  # ceil(span / 4) windows
    assert logs == expected  # every log once, in chain order
    assert len(set(log_keys(logs))) == 90


class LimitedProxy:
    """A provider in front of anvil that refuses eth_getLogs over more than `max_blocks` blocks with
    Infura's answer, and can pretend eth_getBlockReceipts does not exist."""

    def __init__(self, upstream: str, *, max_blocks: int = 5, block_receipts: bool = True):
        self.upstream = upstream
        self.max_blocks = max_blocks
        self.block_receipts = block_receipts
        self.ranges: list[tuple[int, int, bool]] = []
        self.methods: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                proxy.methods.append(request["method"])
                answer = proxy.answer(request, body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v3/{SECRET}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, request: dict, body: bytes) -> dict:
        if request["method"] == "eth_getLogs":
            query = request["params"][0]
            start, end = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            refused = end - start + 1 > self.max_blocks
            self.ranges.append((start, end, refused))
            if refused:
                error = {"code": -32005, "message": "query returned more than 10000 results"}
                return {"jsonrpc": "2.0", "id": request["id"], "error": error}
        if request["method"] == "eth_getBlockReceipts" and not self.block_receipts:
            error = {"code": -32601, "message": "the method eth_getBlockReceipts does not exist/is not available"}
            return {"jsonrpc": "2.0", "id": request["id"], "error": error}
        upstream = urllib.request.Request(self.upstream, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(upstream, timeout=10) as resp:
            return json.loads(resp.read())

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_get_logs_halves_a_range_the_provider_refuses(node, emitted):
    expected = reference_logs(node, emitted)
    proxy = LimitedProxy(node.url, max_blocks=5)
    try:
        client = ChainClient(
            chain_id=31337,
            endpoints=[EndpointSpec(url=proxy.url, timeout=5)],
            policy=RetryPolicy(max_retries=3, max_log_range=10_000),
            record_health=False,
        )
        logs = client.get_logs(
            address=[emitted["address"]], from_block=emitted["from_block"], to_block=emitted["to_block"]
        )
    finally:
        proxy.close()
    assert logs == expected
    assert len(set(log_keys(logs))) == 90
    refused = [r for r in proxy.ranges if r[2]]
    accepted = [r for r in proxy.ranges if not r[2]]
    assert refused[0] == (emitted["from_block"], emitted["to_block"], True)  # tried whole, once (no retries)
    # The accepted ranges tile the requested range exactly, in order, each no wider than the provider allows.
    assert [r[0] for r in accepted] == [emitted["from_block"]] + [r[1] + 1 for r in accepted[:-1]]
    assert accepted[-1][1] == emitted["to_block"]
    assert all(end - start + 1 <= 5 for start, end, _ in accepted)
    # Each refused range was split in two halves.
    for start, end, _ in refused:
        middle = (start + end) // 2
        assert any(r[0] == start and r[1] == middle for r in proxy.ranges)
        assert any(r[0] == middle + 1 and r[1] == end for r in proxy.ranges)


def test_block_receipts_fall_back_to_one_receipt_per_transaction(node, emitted):
    block = emitted["to_block"]
    direct = ChainClient(chain_id=31337, endpoints=[EndpointSpec(url=node.url, timeout=5)], record_health=False)
    expected = direct.get_block_receipts(block)
    assert len(expected) == 1 and len(expected[0]["logs"]) == 3

    proxy = LimitedProxy(node.url, block_receipts=False)
    try:
        client = ChainClient(chain_id=31337, endpoints=[EndpointSpec(url=proxy.url, timeout=5)], record_health=False)
        assert client.get_block_receipts(block) == expected
        assert client.get_block_receipts(block) == expected
    finally:
        proxy.close()
    # Asked once; afterwards the client remembers the method is missing.
    assert proxy.methods.count("eth_getBlockReceipts") == 1
    assert proxy.methods.count("eth_getTransactionReceipt") == 2


# --- web3 through the client ------------------------------------------------------------------------------


def test_web3_requests_go_through_the_failover(node, emitted):
    client = ChainClient(
        chain_id=31337,
        endpoints=[EndpointSpec(url=closed_url(), timeout=1), EndpointSpec(url=node.url, timeout=5)],
        policy=FAST,
        record_health=False,
    )
    w3 = client.web3()
    assert w3.provider.exception_retry_configuration is None
    assert w3.eth.chain_id == 31337
    assert w3.eth.block_number == node.block_number()
    assert w3.eth.get_balance(Account.from_key(ANVIL_KEYS[0]).address) > 0
    # A revert is an answer about the request, not an outage: web3 raises its own error, no failover.
    before = counter("eth_call", "fallback", outcome="deterministic")
    with pytest.raises(ContractLogicError):
        w3.eth.call({"to": emitted["address"], "data": "0xdeadbeef"})
    assert counter("eth_call", "fallback", outcome="deterministic") - before == 1


# --- probe --------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_probe_reports_every_endpoint_and_updates_health(node, other_chain):
    CryptoConfigFactory(request_timeout_seconds=Decimal("1"))
    network = NetworkFactory(chain_id=31337)
    dead = RpcEndpointFactory(network=network, position=0, url=closed_url(f"/v3/{SECRET}"), timeout_seconds=1)
    wrong = RpcEndpointFactory(network=network, position=1, url=other_chain.url, timeout_seconds=1)
    good = RpcEndpointFactory(network=network, position=2, url=node.url, timeout_seconds=1, healthy=False)
    PaymentContractFactory(network=network, slug="pass", fallback_rpc=node.url + "/")

    reports = probe_endpoints(network)

    assert [r["endpoint_id"] for r in reports] == [dead.pk, wrong.pk, good.pk, None]
    by_id = {r["endpoint_id"]: r for r in reports}
    assert by_id[dead.pk]["ok"] is False and "connection refused" in by_id[dead.pk]["error"]
    assert SECRET not in json.dumps(reports)
    assert by_id[dead.pk]["url"].endswith("/****")
    assert by_id[wrong.pk]["chain_id"] == 1337 and by_id[wrong.pk]["chain_id_matches"] is False
    assert by_id[wrong.pk]["ok"] is False
    head = node.block_number()
    for report in (by_id[good.pk], reports[3]):
        assert report["ok"] is True and report["chain_id"] == 31337 and report["chain_id_matches"] is True
        assert report["head_block"] == head and report["latency_ms"] is not None and report["error"] == ""
    assert reports[3]["contract"] == "pass"

    good.refresh_from_db()
    assert good.healthy is True and good.last_head_block == head and good.last_latency_ms is not None
    assert RpcEndpoint.objects.get(pk=wrong.pk).healthy is False
    assert RpcEndpoint.objects.get(pk=dead.pk).consecutive_failures == 1
