"""POST /v1/billing/checkout/{id}/tx: throttled (scope `checkout_tx`, THROTTLE_CHECKOUT_TX) and a bounded
number of distinct transaction hashes per checkout (BILLING_CHECKOUT_MAX_TX_HASHES): each new hash is a
status-history row and a receipt check, so a client cannot make them unbounded."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from billing.models import TransactionStatusChange, TxStatus
from tests import factories as f

pytestmark = pytest.mark.django_db


def report(client, tx, n: int):
    return client.post(f"/v1/billing/checkout/{tx.public_id}/tx", {"tx_hash": "0x" + f"{n:064x}"}, format="json")


def test_a_checkout_takes_a_bounded_number_of_hashes(user_api, plain_user, settings):
    settings.BILLING_CHECKOUT_MAX_TX_HASHES = 3
    tx = f.PaymentTransactionFactory(user=plain_user)
    assert [report(user_api, tx, n).status_code for n in range(3)] == [200, 200, 200]
    assert report(user_api, tx, 1).status_code == 200  # one already reported is not a new one: current again
    refused = report(user_api, tx, 99)
    assert refused.status_code == 409, refused.content
    error = refused.json()["error"]
    assert error["code"] == "too_many_tx_hashes" and "tx_hash" in error["fields"]
    tx.refresh_from_db()
    assert tx.status == TxStatus.SUBMITTED and tx.tx_hash == "0x" + f"{1:064x}"  # the refused one left no trace
    submitted = TransactionStatusChange.objects.filter(transaction=tx, to_status=TxStatus.SUBMITTED)
    assert submitted.count() == 4 and "0x" + f"{99:064x}" not in {c.details["tx_hash"] for c in submitted}


def test_reporting_hashes_is_throttled(user_api, plain_user):
    tx = f.PaymentTransactionFactory(user=plain_user)
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "checkout_tx": "3/min"}
    try:
        with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
            SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES  # read once at import
            cache.clear()
            codes = [report(user_api, tx, 0).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            limited = report(user_api, tx, 0)
            assert limited.json()["error"]["code"] == "throttled" and int(limited["Retry-After"]) > 0
    finally:
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    assert "checkout_tx" in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
