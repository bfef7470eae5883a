"""The re-verification sweep claims its rows like every other sweep (issue 8 §5): a pass claims due payments
with SKIP LOCKED and moves reverify_next_at forward in the same transaction (a concurrent pass takes other
rows, so no payment is checked twice at once), releases each once checked (due at the next pass), and a
check that could not be made waits billing.retry.backoff_seconds."""

from __future__ import annotations

import pytest
from django.utils import timezone

from billing.chain import rpc
from billing.models import PaymentTransaction
from billing.services import reverify
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def outcomes(monkeypatch):
    script = {"next": "ok", "calls": []}

    def fake(*, transaction_id, client=None):
        script["calls"].append(transaction_id)
        return script["next"]

    monkeypatch.setattr(reverify, "payment_reverify", fake)
    monkeypatch.setattr(rpc.ChainClient, "for_network", classmethod(lambda cls, *a, **k: object()))
    return script


def test_a_pass_claims_checks_and_releases_or_backs_off(outcomes):
    tx = f.ConfirmedTransactionFactory()
    assert reverify.payments_reverify_due_ids() == [tx.pk]

    claimed = reverify.payments_reverify_claim_due()
    assert claimed == [tx.pk] and reverify.payments_reverify_claim_due() == []  # a concurrent pass: nothing
    assert reverify.payments_reverify_run() == {}  # still claimed by the first pass
    PaymentTransaction.objects.filter(pk=tx.pk).update(reverify_next_at=None)  # (that pass released it)

    assert reverify.payments_reverify_run() == {"ok": 1}
    assert reverify.payments_reverify_run() == {"ok": 1}  # checked: due again at the next pass

    outcomes["next"] = "unavailable"
    assert reverify.payments_reverify_run() == {"unavailable": 1}
    tx.refresh_from_db()
    waited = (tx.reverify_next_at - timezone.now()).total_seconds()
    assert tx.reverify_failures == 1 and 14 < waited <= 30  # backoff_seconds(1, base=30, ...): [15, 30]
    assert reverify.payments_reverify_run() == {}  # backing off
    assert outcomes["calls"] == [tx.pk, tx.pk, tx.pk]
