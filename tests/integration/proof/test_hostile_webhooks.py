"""Hostile webhook deliveries over HTTP, against real gunicorn (two gthread workers x 4 threads, the `make run` config).

Each hostile request is refused with its documented 4xx (never a 5xx), valid deliveries sent between them are
stored exactly once, and both workers stay alive. The contract's only RPC endpoint is a closed port: the request
path never calls the chain, so nothing here waits on one.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from billing import signing
from billing.models import InboundEvent
from tests import factories as f
from tests.integration.test_webhook_ingest import body_for, closed_port
from tests.processes import Gunicorn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def contract():
    network = f.NetworkFactory()
    f.RpcEndpointFactory(network=network, position=0, url=f"http://127.0.0.1:{closed_port()}")
    return f.PaymentContractFactory(network=network, fallback_rpc="")


@pytest.fixture
def web():
    with Gunicorn(workers=2) as server:
        yield server


def hostile_requests(contract) -> list[tuple[str, str, bytes, dict, set[int]]]:
    """(what, slug, body, headers, acceptable statuses) — each must be refused, none stored."""
    secret = contract.webhook_secret
    good = json.dumps(body_for(contract, 999)).encode()
    now = int(time.time())

    def signed(raw: bytes, *, t: int = now, key: str = secret) -> dict:
        return {"X-Billing-Signature": signing.sign(raw, [key], timestamp=t), "Content-Type": "application/json"}

    nested = b'{"id": "deep", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    huge = json.dumps({**body_for(contract, 998), "failure_reason": "x" * (10 * 1024 * 1024)}).encode()
    truncated = good[: len(good) // 2]
    ct = {"Content-Type": "application/json"}
    return [
        ("stale timestamp", contract.slug, good, signed(good, t=now - 600), {401}),
        ("future timestamp", contract.slug, good, signed(good, t=now + 600), {401}),
        ("wrong secret", contract.slug, good, signed(good, key="whsec_wrong"), {401}),
        ("no header", contract.slug, good, ct, {401}),
        ("garbage header", contract.slug, good, {**ct, "X-Billing-Signature": "t=,v1=,,=="}, {401}),
        ("non-hex v1", contract.slug, good, {**ct, "X-Billing-Signature": f"t={now},v1=zz"}, {401}),
        ("non-ASCII v1", contract.slug, good, {**ct, "X-Billing-Signature": f"t={now},v1=é".encode()}, {401}),
        ("non-ASCII digits in t", contract.slug, good, {**ct, "X-Billing-Signature": "t=²³,v1=ab".encode()}, {401}),
        ("truncated body, original signature", contract.slug, truncated, signed(good), {401}),
        ("truncated body, signed as sent", contract.slug, truncated, signed(truncated), {400}),
        ("deeply nested JSON", contract.slug, nested, signed(nested), {400}),
        ("10 MB body", contract.slug, huge, signed(huge), {400}),
        ("invalid UTF-8", contract.slug, b'{"id": "\xff\xfe"}', signed(b'{"id": "\xff\xfe"}'), {400}),
        ("wrong contract slug", "no-such-contract", good, signed(good), {404}),
        ("JSON array body", contract.slug, b"[1,2]", signed(b"[1,2]"), {400}),
    ]


def test_hostile_deliveries_are_refused_and_valid_ones_stored_once(contract, web):
    url = f"{web.url}/v1/billing/webhooks/contracts/{{}}"
    hostile = hostile_requests(contract)
    # Valid deliveries, each sent three times (a replayed id), interleaved with the hostile ones.
    valid = []
    for n in range(10):
        raw = json.dumps(body_for(contract, n)).encode()
        valid += [("valid", contract.slug, raw, {"Content-Type": "application/json"}, {200, 202})] * 3

    def send(item):
        what, slug, raw, headers, _ = item
        if what == "valid":  # signed at send time, as an indexer would
            headers = {**headers, "X-Billing-Signature": signing.sign(raw, [contract.webhook_secret])}
        started = time.monotonic()
        resp = requests.post(url.format(slug), data=raw, headers=headers, timeout=30)
        return what, resp, time.monotonic() - started

    mixed = [x for pair in zip(valid, hostile * 2, strict=False) for x in pair] + valid[len(hostile) * 2 :]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, mixed))

    expected = {what: codes for what, _, _, _, codes in hostile}
    for what, resp, seconds in results:
        assert resp.status_code < 500, (what, resp.status_code, resp.text[:300])
        if what == "valid":
            assert resp.status_code in (200, 202) and resp.json()["status"] in ("accepted", "duplicate")
        else:
            assert resp.status_code in expected[what], (what, resp.status_code, resp.text[:300])
            assert resp.json()["error"]["message"], what  # the API's error shape with a reason, not an HTML page
        assert seconds < 10, (what, seconds)

    accepted = [r for what, r, _ in results if what == "valid" and r.status_code == 202]
    assert len(accepted) == 10  # each id accepted exactly once; the two repeats answered "duplicate"
    stored = InboundEvent.objects.filter(contract=contract)
    assert sorted(stored.values_list("delivery_id", flat=True)) == sorted(f"dlv-{n}" for n in range(10))
    assert web.alive()
    assert "Traceback" not in web.output() and "Internal Server Error" not in web.output()
