"""The webhook request only stores the delivery (docs/reference/api/contract.md "Webhook signature"): one INSERT
for a cached contract, no chain call; workers claim the stored deliveries with SKIP LOCKED and verify them.

No anvil here: the contract's only RPC endpoint is a closed port, so anything that reached for the chain on
the request path would show up as an error or a delay."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.core.servers import basehttp
from django.db import connection
from django.utils import timezone

from billing import signing
from billing.models import InboundEvent
from billing.services import webhooks
from billing.services.webhooks import inbound_events_claim, inbound_events_process_due
from tests import factories as f

URL = "/v1/billing/webhooks/contracts/{}"

# Django's test server listens with a backlog of 10: the 11th of 20 simultaneous connects would wait for a
# SYN retransmission (1 s) before the server even saw it. gunicorn's default backlog is 2048; give the live
# server room too, before it starts (it is session-wide and started by the first test that asks for it).
basehttp.ThreadedWSGIServer.request_queue_size = 64


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def unreachable_contract(**extra):
    network = f.NetworkFactory()
    f.RpcEndpointFactory(network=network, position=0, url=f"http://127.0.0.1:{closed_port()}")
    return f.PaymentContractFactory(network=network, fallback_rpc="", **extra)


def body_for(contract, n: int = 0, **extra) -> dict:
    return {
        "id": f"dlv-{n}",
        "type": "payment.confirmed",
        "chain_id": contract.network.chain_id,
        "contract_address": contract.address,
        "method": "pay",
        "tx_hash": "0x" + f"{n:064x}",
        "log_index": 0,
        "block_number": 10,
        "block_hash": "0x" + "ab" * 32,
        "order_id": "0x" + "cd" * 32,
        "payer": contract.address,
        "token": None,
        "amount": "1000",
        **extra,
    }


def post(client, contract, body, *, secret=None, raw=None):
    raw = raw if raw is not None else json.dumps(body).encode()
    return client.post(
        URL.format(contract.slug),
        raw,
        content_type="application/json",
        HTTP_X_BILLING_SIGNATURE=signing.sign(raw, [secret or contract.webhook_secret]),
    )


@pytest.mark.django_db
def test_new_delivery_is_one_insert_and_202_repeat_is_200(api_client, django_assert_num_queries):
    contract = unreachable_contract()
    assert post(api_client, contract, body_for(contract, 0)).status_code == 202  # warms the contract cache
    with django_assert_num_queries(1):  # the INSERT ... ON CONFLICT DO NOTHING, nothing else
        response = post(api_client, contract, body_for(contract, 1))
    assert response.status_code == 202 and response.json() == {"status": "accepted"}
    with django_assert_num_queries(1):
        repeat = post(api_client, contract, body_for(contract, 1))
    assert repeat.status_code == 200 and repeat.json() == {"status": "duplicate"}
    # Another delivery id for the same (chain_id, tx_hash, log_index) is a duplicate too.
    same_log = post(api_client, contract, body_for(contract, 1, id="other-id"))
    assert same_log.status_code == 200 and same_log.json() == {"status": "duplicate"}
    event = InboundEvent.objects.get(delivery_id="dlv-1")
    assert (event.status, event.attempts, event.error) == (InboundEvent.Status.RECEIVED, 0, "")
    assert event.next_attempt_at is not None and event.payload["order_id"] == "0x" + "cd" * 32
    assert event.tx_hash == "0x" + f"{1:064x}" and event.raw_body == json.dumps(body_for(contract, 1))
    assert InboundEvent.objects.count() == 2


@pytest.mark.django_db
def test_refusals_store_nothing_and_say_why(api_client):
    contract = unreachable_contract()
    good = body_for(contract)
    raw = json.dumps(good).encode()

    wrong = api_client.post(
        URL.format(contract.slug), raw, content_type="application/json",
        HTTP_X_BILLING_SIGNATURE=signing.sign(raw, ["not-the-secret"]),
    )  # fmt: skip
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_signature"
    stale = signing.sign(raw, [contract.webhook_secret], timestamp=int(time.time()) - 301)
    late = api_client.post(
        URL.format(contract.slug), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=stale
    )
    assert late.status_code == 401 and "tolerance" in late.json()["error"]["message"]
    missing = api_client.post(URL.format(contract.slug), raw, content_type="application/json")
    assert missing.status_code == 401
    assert post(api_client, contract, None, raw=b"{not json").status_code == 400
    bad = post(api_client, contract, {**good, "tx_hash": "0x12", "log_index": -1, "amount": 5})
    assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"tx_hash", "log_index", "amount"}
    other_chain = post(api_client, contract, {**good, "chain_id": 1})
    assert other_chain.status_code == 400 and other_chain.json()["error"]["fields"] == {"chain_id": "Wrong chain."}
    nul = post(api_client, contract, {**good, "failure_reason": "a\u0000b"})
    assert nul.status_code == 400
    unknown = api_client.post(URL.format("no-such"), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE="x")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_contract"
    assert not InboundEvent.objects.exists()


@pytest.mark.django_db
def test_method_not_in_the_abi_is_stored_failed_and_answered_422_once(api_client):
    contract = unreachable_contract()
    first = post(api_client, contract, body_for(contract, method="mintFree"))
    assert first.status_code == 422 and first.json()["error"]["fields"] == {"method": "Not in the ABI."}
    event = InboundEvent.objects.get()
    assert event.status == InboundEvent.Status.FAILED and "mintFree" in event.error and event.next_attempt_at is None
    again = post(api_client, contract, body_for(contract, method="mintFree"))
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert inbound_events_claim() == []  # never due


@pytest.mark.django_db
def test_secret_rotation_reaches_the_cache_within_its_ttl(api_client, settings):
    contract = unreachable_contract(webhook_secret="whsec_" + "a" * 20)
    assert post(api_client, contract, body_for(contract, 0)).status_code == 202
    # A rotation that bypasses model signals (another process's write): the cache keeps the old secret ...
    type(contract).objects.filter(pk=contract.pk).update(
        webhook_secret="whsec_" + "b" * 20, previous_webhook_secret="", secret_rotated_at=timezone.now()
    )
    assert post(api_client, contract, body_for(contract, 1), secret="whsec_" + "b" * 20).status_code == 401
    # ... until its entry is older than the TTL.
    settings.BILLING_WEBHOOK_CONTRACT_CACHE_SECONDS = 0.2
    time.sleep(0.25)
    assert post(api_client, contract, body_for(contract, 2), secret="whsec_" + "b" * 20).status_code == 202
    assert post(api_client, contract, body_for(contract, 3), secret="whsec_" + "a" * 20).status_code == 401

    # A save in this process drops the entry at once; the previous secret stays valid during the grace.
    settings.BILLING_WEBHOOK_CONTRACT_CACHE_SECONDS = 3600
    contract.refresh_from_db()
    contract.rotate_webhook_secret("whsec_" + "c" * 20)
    contract.save()
    assert post(api_client, contract, body_for(contract, 4), secret="whsec_" + "c" * 20).status_code == 202
    assert post(api_client, contract, body_for(contract, 5), secret="whsec_" + "b" * 20).status_code == 202
    type(contract).objects.filter(pk=contract.pk).update(secret_rotated_at=timezone.now() - timedelta(days=30))
    webhooks.webhook_contracts_forget()
    assert post(api_client, contract, body_for(contract, 6), secret="whsec_" + "b" * 20).status_code == 401


@pytest.mark.django_db
def test_claims_are_disjoint_and_leased(api_client):
    contract = unreachable_contract()
    for n in range(6):
        assert post(api_client, contract, body_for(contract, n)).status_code == 202
    first = inbound_events_claim(limit=4)
    second = inbound_events_claim(limit=4)
    assert len(first) == 4 and len(second) == 2 and not set(first) & set(second)
    assert inbound_events_claim() == []  # all leased
    leased = InboundEvent.objects.filter(pk__in=first).values_list("next_attempt_at", flat=True)
    assert all(at > timezone.now() + timedelta(seconds=60) for at in leased)


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_rows_another_worker_holds(api_client):
    contract = unreachable_contract()
    for n in range(3):
        post(api_client, contract, body_for(contract, n))
    held = threading.Event()
    release = threading.Event()
    seen = {}

    def other_worker():  # holds the first row's lock in its own transaction and connection
        from django.db import transaction

        try:
            with transaction.atomic():
                row = InboundEvent.objects.select_for_update().order_by("pk").first()
                seen["held"] = row.pk
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        claimed = inbound_events_claim()
        assert time.monotonic() - started < 2  # SKIP LOCKED: no wait on the held row
        assert seen["held"] not in claimed and len(claimed) == 2
    finally:
        release.set()
        thread.join()


@pytest.mark.django_db
def test_chain_unreachable_records_the_error_and_backs_off_for_the_whole_batch(api_client):
    contract = unreachable_contract()
    for n in range(5):
        post(api_client, contract, body_for(contract, n))
    started = time.monotonic()
    report = inbound_events_process_due()
    assert report.claimed == 5 and report.outcomes == {"retry": 5}
    assert time.monotonic() - started < 10  # one client, and the batch stops asking a network that is down
    for event in InboundEvent.objects.all():
        assert event.status == InboundEvent.Status.RECEIVED and event.attempts == 1
        assert event.error.startswith("chain unavailable") and "127.0.0.1" in event.error
        # billing.retry.backoff_seconds(1, base=2, cap=300): between 1 and 2 seconds from now
        assert timezone.now() + timedelta(seconds=0.5) < event.next_attempt_at < timezone.now() + timedelta(seconds=3)
    assert inbound_events_process_due().claimed == 0  # not due again yet


@pytest.mark.django_db
def test_one_failing_delivery_does_not_stop_the_batch(api_client, monkeypatch):
    contract = unreachable_contract()
    for n in range(3):
        post(api_client, contract, body_for(contract, n))
    broken = InboundEvent.objects.order_by("pk").first()
    real = webhooks._process

    def flaky(event, chain, *, force=False):
        if event.pk == broken.pk:
            raise ValueError("decoder blew up")
        return real(event, chain, force=force)

    monkeypatch.setattr(webhooks, "_process", flaky)
    report = inbound_events_process_due()
    assert report.outcomes == {"retry": 3}
    broken.refresh_from_db()
    assert broken.error == "ValueError: decoder blew up" and broken.attempts == 1
    assert InboundEvent.objects.filter(error__startswith="chain unavailable").count() == 2


@pytest.mark.django_db
def test_time_budget_releases_what_was_not_attempted(api_client):
    contract = unreachable_contract()
    for n in range(4):
        post(api_client, contract, body_for(contract, n))
    report = inbound_events_process_due(budget_seconds=-1)  # over budget before the first delivery
    assert report.claimed == 4 and report.released == 4 and report.outcomes == {}
    assert sorted(inbound_events_claim()) == sorted(InboundEvent.objects.values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_20_parallel_deliveries_answer_fast_while_the_chain_is_unreachable(live_server):
    """Acceptance (issue 9): the contract's only RPC endpoint is a closed port. 20 signed deliveries sent at
    the same instant each answer 202 within 2 s, and the plans catalog keeps answering meanwhile."""
    contract = unreachable_contract()
    f.PlanFactory(provider=f.PaymentProviderFactory(contract=contract), contract=contract)
    barrier = threading.Barrier(21)
    url = live_server.url + URL.format(contract.slug)
    # The server's first request imports the URLconf (every view): a one-off start-up cost, paid here.
    assert requests.get(live_server.url + "/v1/billing/plans", timeout=30).status_code == 200

    def deliver(n: int):
        raw = json.dumps(body_for(contract, n)).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Billing-Signature": signing.sign(raw, [contract.webhook_secret]),
        }
        barrier.wait(timeout=20)
        started = time.monotonic()
        response = requests.post(url, data=raw, headers=headers, timeout=10)
        return started, time.monotonic(), response.status_code, response.json()

    def catalog():
        barrier.wait(timeout=20)
        answers = []
        for _ in range(5):
            started = time.monotonic()
            response = requests.get(live_server.url + "/v1/billing/plans", timeout=10)
            answers.append((response.status_code, time.monotonic() - started, len(response.json())))
        return answers

    with ThreadPoolExecutor(max_workers=21) as pool:
        plans = pool.submit(catalog)
        results = list(pool.map(deliver, range(20)))
        plans_answers = plans.result()

    assert [(code, body) for _, _, code, body in results] == [(202, {"status": "accepted"})] * 20
    assert max(end - start for start, end, _, _ in results) < 2.0
    # They overlapped: at some instant several requests were in flight at once.
    marks = sorted([(start, 1) for start, _, _, _ in results] + [(end, -1) for _, end, _, _ in results])
    in_flight = peak = 0
    for _, step in marks:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak >= 5, peak
    assert all(code == 200 and seconds < 2.0 and count == 1 for code, seconds, count in plans_answers)
    assert InboundEvent.objects.filter(contract=contract, status="received", attempts=0).count() == 20


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["t=1,v1=é", "t=²,v1=" + "a" * 64, "v1=ÿÿ,t=" + "9" * 5000])
def test_non_ascii_signature_header_is_401_not_500(api_client, value):
    contract = unreachable_contract()
    raw = json.dumps(body_for(contract)).encode()
    # WSGI hands headers over as latin-1 decoded str: this is what a client sending these bytes produces.
    response = api_client.post(
        URL.format(contract.slug), raw, content_type="application/json", HTTP_X_BILLING_SIGNATURE=value
    )
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_signature"
    assert not InboundEvent.objects.exists()


@pytest.mark.django_db
def test_stubbed_failing_rpc_and_three_sweeps_count_one_attempt(api_client, monkeypatch):
    """Issue 8 acceptance: the RPC client stubbed to fail, the inbound sweep called three times in a row:
    exactly one attempt is counted (the row is not due again until its backoff has passed), and the chain was
    asked once."""
    from billing.chain import rpc

    calls = []

    class FailingClient:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                calls.append(name)
                raise rpc.AllEndpointsFailed("stubbed: every endpoint is down")

            return fail

    monkeypatch.setattr(rpc.ChainClient, "for_network", classmethod(lambda cls, *a, **k: FailingClient()))
    contract = unreachable_contract()
    assert post(api_client, contract, body_for(contract, 0)).status_code == 202
    reports = [inbound_events_process_due() for _ in range(3)]
    assert [r.claimed for r in reports] == [1, 0, 0]
    event = InboundEvent.objects.get()
    assert event.attempts == 1 and event.status == InboundEvent.Status.RECEIVED
    assert event.error.startswith("chain unavailable: stubbed") and event.next_attempt_at > timezone.now()
    assert calls == ["get_transaction_receipt"]
