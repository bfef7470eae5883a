"""Checkout idempotency and input validation over HTTP (issue 4, docs/reference/api/contract.md "Checkout
idempotency"): the same key and body replay the first answer and write nothing; the same key while the first
request runs, or with another body, get their 409; bad input is a 4xx naming the field, with nothing written."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from billing.models import IdempotencyKey, PaymentTransaction, TransactionStatusChange
from billing.services import checkout as checkout_service
from billing.services.idempotency import request_fingerprint
from tests.conftest import link_wallet, token_client
from tests.factories import random_address
from tests.integration.lifecycle.conftest import PAYERS

pytestmark = [pytest.mark.chain]
URL = "/v1/billing/checkout"


def post(client, body: dict, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(URL, body, format="json", **headers)


def ledger_size() -> tuple[int, int]:
    return PaymentTransaction.objects.count(), TransactionStatusChange.objects.count()


@pytest.mark.django_db
def test_same_key_and_body_replays_the_first_answer_and_writes_nothing(world, user_api, plain_user, django_user_model):
    body = {"plan": "pro", "wallet": PAYERS[0].address}
    first = post(user_api, body, key="order-1")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first.headers
    written = ledger_size()
    assert written == (1, 1)

    for replay_no in (1, 2):
        again = post(user_api, body, key="order-1")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()  # same order id, same signed payload, same everything
        assert ledger_size() == written
        assert IdempotencyKey.objects.get(user=plain_user, key="order-1").replay_count == replay_no

    # Another body under the same key: refused, nothing written.
    other = post(user_api, {**body, "periods": 2}, key="order-1")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_mismatch"
    assert ledger_size() == written

    # Keys belong to a user: someone else's "order-1" (from their own verified wallet) is a new checkout.
    someone = django_user_model.objects.create_user(username="stranger", password="pw")
    their_wallet = link_wallet(someone, random_address()).address
    theirs = post(token_client(someone), {**body, "wallet": their_wallet}, key="order-1")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert PaymentTransaction.objects.count() == 2


@pytest.mark.django_db
def test_same_key_while_the_first_is_running_is_409_in_progress(world, user_api, plain_user):
    body = {"plan": "pro", "wallet": PAYERS[0].address}
    IdempotencyKey.objects.create(
        user=plain_user,
        key="busy",
        fingerprint=request_fingerprint(method="POST", path=URL, body=body),
        state=IdempotencyKey.State.IN_PROGRESS,
        expires_at=IdempotencyKey._meta.get_field("expires_at").to_python("2999-01-01T00:00:00Z"),
    )
    response = post(user_api, body, key="busy")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_progress"
    assert PaymentTransaction.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_requests_racing_with_one_key_one_runs_one_gets_409(world, plain_user, monkeypatch):
    """Two real requests: the first is held inside the provider adapter (committed key row, open ledger
    transaction) while the second arrives."""
    entered, release = threading.Event(), threading.Event()
    real_get_adapter = checkout_service.get_adapter

    class SlowAdapter:
        def __init__(self, inner):
            self.inner = inner

        def checkout(self, request):
            entered.set()
            assert release.wait(20)
            return self.inner.checkout(request)

    monkeypatch.setattr(checkout_service, "get_adapter", lambda kind: SlowAdapter(real_get_adapter(kind)))
    body = {"plan": "pro", "wallet": PAYERS[1].address}

    def first_request():
        try:
            return post(token_client(plain_user), body, key="race")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(first_request)
        assert entered.wait(20)
        second = post(token_client(plain_user), body, key="race")
        release.set()
        first = running.result(timeout=30)

    assert second.status_code == 409 and second.json()["error"]["code"] == "idempotency_in_progress"
    assert first.status_code == 201, first.content
    assert PaymentTransaction.objects.count() == 1
    replay = post(token_client(plain_user), body, key="race")
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert PaymentTransaction.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"plan": "no-such-plan"}, 404, "plan_not_found", "plan"),
        ({"plan": "starter", "_inactive": True}, 400, "plan_inactive", "plan"),
        ({"token": "DOGE"}, 400, "token_not_offered", "token"),
        ({"network": "ethereum-mainnet"}, 400, "network_not_offered", "network"),
        ({"wallet": "0x1234"}, 400, "invalid_wallet", "wallet"),
        ({"wallet": "0x" + "g" * 40}, 400, "invalid_wallet", "wallet"),
        ({"wallet": PAYERS[0].address.swapcase().replace("0X", "0x")}, 400, "invalid_wallet", "wallet"),  # bad EIP-55
        ({"periods": 0}, 400, "validation_error", "periods"),
        ({"periods": 37}, 400, "validation_error", "periods"),
        ({"periods": "many"}, 400, "validation_error", "periods"),
        ({"plan": None}, 400, "validation_error", "plan"),
    ],
)
def test_bad_checkout_input_is_4xx_with_the_field_and_writes_nothing(world, user_api, change, status, code, field):
    change = dict(change)
    if change.pop("_inactive", False):
        world.plans["starter"].is_active = False
        world.plans["starter"].save()
    body = {"plan": "pro", "wallet": PAYERS[0].address, **change}
    body = {k: v for k, v in body.items() if v is not None}

    response = post(user_api, body, key=f"bad-{code}-{field}")
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and field in error["fields"], error
    assert ledger_size() == (0, 0)
    # The refusal is the key's first answer: replayed as is, still nothing written.
    again = post(user_api, body, key=f"bad-{code}-{field}")
    assert again.status_code == status and again.json() == response.json()
    assert ledger_size() == (0, 0)


@pytest.mark.django_db
def test_idempotency_key_longer_than_255_is_refused(world, user_api):
    response = post(user_api, {"plan": "pro", "wallet": PAYERS[0].address}, key="k" * 256)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert PaymentTransaction.objects.count() == 0 and IdempotencyKey.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("wallet", "key", "code"),
    [
        ("0x\x00" + "1" * 39, "nul-in-wallet", "validation_error"),  # found by the schemathesis bench: a 500
        ("\x00", "nul-wallet", "validation_error"),
        (PAYERS[0].address, "nul\x00in-key", "invalid_idempotency_key"),
        (PAYERS[0].address, "tab\tin-key", "invalid_idempotency_key"),
    ],
)
def test_nul_and_control_characters_are_refused_with_a_reason_not_a_500(world, user_api, wallet, key, code):
    """The key's lookup also reads the payer check for the body's wallet (one round trip): a wallet that is not
    an address is not sent to PostgreSQL (which refuses NUL in text), the serializer refuses it; a key with a
    control character is refused before anything is read."""
    response = post(user_api, {"plan": "pro", "wallet": wallet}, key=key)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert PaymentTransaction.objects.count() == 0
