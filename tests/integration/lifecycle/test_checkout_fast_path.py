"""Issue 9, checkout fast path: few SQL statements per checkout (the catalog and RPC health come from short
per-process caches), the idempotency row written with the ledger row, signatures made through coincurve that the
real contract accepts, and billing.W002 when eth-keys falls back to pure Python."""

from __future__ import annotations

import json
import time

import pytest
from django.core.checks import run_checks

from billing.chain.quote import ecc_backend_name
from billing.models import IdempotencyKey, PaymentTransaction, RpcEndpoint, TransactionStatusChange
from tests.integration.lifecycle.conftest import PAYERS

pytestmark = [pytest.mark.chain, pytest.mark.django_db]
URL = "/v1/billing/checkout"


def _post(user_api, plan="pro", payer=PAYERS[0], key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return user_api.post(URL, {"plan": plan, "wallet": payer.address}, format="json", **headers)


def _statements(captured) -> list[str]:
    return [q["sql"].strip() for q in captured.captured_queries]


def test_a_warm_checkout_is_a_handful_of_statements(world, user_api, django_assert_max_num_queries):
    assert _post(user_api, key="warm-up").status_code == 201  # fills this process's plan and health caches

    # The token, the key's lock and row with the payer's verified-wallet check (BILLING_REQUIRE_VERIFIED_PAYER) in
    # the same statement, then ONE statement writing the ledger row (payload included), its history row and the
    # key's row with the answer (and releasing the lock); here inside a savepoint because the test runs in a
    # transaction (in production the statement is its own transaction). Before issue 9: 22.
    with django_assert_max_num_queries(5) as captured:
        response = _post(user_api, key="measured")
    assert response.status_code == 201, response.content
    sql = _statements(captured)
    writes = [s for s in sql if s.startswith(("INSERT", "UPDATE", "WITH"))]
    assert len(writes) == 1, sql
    for table in ("billing_paymenttransaction", "billing_transactionstatuschange", "billing_idempotencykey"):
        assert f"INSERT INTO {table}" in writes[0].replace('"', ""), table
    assert "auditlog" not in " ".join(sql)
    assert not [s for s in sql if "billing_plan" in s or "billing_token" in s or "billing_rpcendpoint" in s]

    # What the answer says is what the database holds (it was rendered from the rows in memory).
    body = response.json()
    tx = PaymentTransaction.objects.get(public_id=body["id"])
    assert body["payment"] == tx.checkout_payload and body["order_id"] == tx.order_id
    assert [h["to_status"] for h in body["status_history"]] == ["pending"]
    assert TransactionStatusChange.objects.filter(transaction=tx, actor__startswith="user:").count() == 1
    key = IdempotencyKey.objects.get(key="measured")
    assert key.state == "completed" and key.transaction_id == tx.pk and key.response_body == body

    # Without a key: the token, the wallet check and the write.
    with django_assert_max_num_queries(3):
        assert _post(user_api).status_code == 201

    # A replay reads the stored answer and counts it: no signing, no ledger write.
    with django_assert_max_num_queries(3) as captured:
        replay = _post(user_api, key="measured")
    assert replay.status_code == 201 and replay.json() == body and replay.headers["Idempotent-Replayed"] == "true"
    assert not [s for s in _statements(captured) if s.startswith("INSERT")]
    assert PaymentTransaction.objects.count() == 3


def test_rpc_health_is_cached_for_its_ttl(world, user_api, settings):
    settings.BILLING_CHECKOUT_HEALTH_CACHE_SECONDS = 0.5
    assert _post(user_api).status_code == 201
    # Written by another process (the RPC client in a worker): no signal reaches this one, the TTL does.
    RpcEndpoint.objects.filter(network=world.network).update(healthy=False)
    assert _post(user_api).status_code == 201
    time.sleep(0.6)
    response = _post(user_api)
    assert response.status_code == 503 and response.json()["error"]["code"] == "network_unavailable"


def test_a_catalog_save_reaches_the_next_checkout_at_once(world, user_api, settings):
    settings.BILLING_CHECKOUT_CATALOG_CACHE_SECONDS = 3600
    assert _post(user_api, plan="starter").status_code == 201
    world.plans["starter"].is_active = False
    world.plans["starter"].save()
    response = _post(user_api, plan="starter")
    assert response.status_code == 400 and response.json()["error"]["code"] == "plan_inactive"


def test_the_signature_from_checkout_is_accepted_by_the_real_contract(chain, world, user_api):
    assert ecc_backend_name() == "CoinCurveECCBackend"  # the compiled backend signed it
    payer = PAYERS[3]
    body = _post(user_api, plan="eth-pro", payer=payer).json()
    payment = body["payment"]
    (step,) = payment["steps"]
    assert chain.pass_.functions.isSigner(payment["signer"]).call()
    call = {"from": payer.address, "to": step["to"], "data": step["data"], "value": int(step["value"])}
    assert chain.w3.eth.call(call) == b""  # pay() would succeed: the contract recovered an allowed signer

    # The same call with the signature's s changed is refused as InvalidSigner: the check above is real.
    signature = payment["signature"][2:]
    tampered = signature[:64] + f"{int(signature[64:128], 16) ^ 1:064x}" + signature[128:]
    bad = dict(call, data=step["data"].replace(signature, tampered))
    assert bad["data"] != call["data"]
    with pytest.raises(Exception) as refused:
        chain.w3.eth.call(bad)
    invalid_signer = "0x" + chain.w3.keccak(text="InvalidSigner()")[:4].hex()
    assert invalid_signer in str(refused.value) or "InvalidSigner" in str(refused.value)


def test_pure_python_ecdsa_raises_billing_w002(monkeypatch):
    assert "billing.W002" not in {m.id for m in run_checks()}
    monkeypatch.setenv("ECC_BACKEND_CLASS", "eth_keys.backends.NativeECCBackend")
    assert ecc_backend_name() == "NativeECCBackend"
    assert "billing.W002" in {m.id for m in run_checks()}


@pytest.mark.parametrize(("plan", "periods"), [("pro", 1), ("eth", 3)])
def test_the_answer_is_what_the_checkout_serializers_render(world, plain_user, plan, periods):
    """The answer is rendered by the serializer's own fields built once per process (render_new_checkout): the
    same keys in the same order and the same values as NewCheckoutSerializer, and as CheckoutSerializer gives
    for the row once written (GET /v1/billing/checkout/{id})."""
    from billing.api.checkout import CheckoutSerializer, NewCheckoutSerializer, render_new_checkout
    from billing.services.checkout import checkout_prepare, checkout_write
    from tests.conftest import link_wallet

    link_wallet(plain_user, PAYERS[1].address)
    slug = world.plans[plan].slug
    for _ in range(2):  # the second time from the fields built the first time
        prepared = checkout_prepare(user=plain_user, plan_slug=slug, payer_address=PAYERS[1].address, periods=periods)
        rendered = render_new_checkout(prepared.tx, [prepared.history])
        expected = NewCheckoutSerializer(prepared.tx, context={"history": [prepared.history]}).data
        assert json.dumps(rendered) == json.dumps(expected)  # keys, order and values
        assert rendered["amount"] == str(world.plans[plan].price_amount * periods)
        checkout_write(prepared)
        stored = PaymentTransaction.objects.prefetch_related("status_history").get(pk=prepared.tx.pk)
        assert json.loads(json.dumps(CheckoutSerializer(stored).data)) == rendered  # jsonb orders the payload's keys
