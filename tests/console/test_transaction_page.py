"""billing.selectors.transaction_page: the console's ledger page with its related rows attached in a fixed,
small number of statements (no six-way join for PostgreSQL to plan), equal to what the joined queryset gives."""

from __future__ import annotations

import pytest

from billing import selectors
from tests.factories import PaymentTransactionFactory, PlanFactory

pytestmark = pytest.mark.django_db


def test_a_page_carries_its_related_rows_in_four_statements(django_assert_num_queries):
    plans = [PlanFactory(), PlanFactory()]
    made = [PaymentTransactionFactory(plan=plans[i % 2]) for i in range(6)]
    PaymentTransactionFactory(plan=plans[0], user=None)  # a row with no customer (as a transfer has)
    qs = selectors.transaction_search().order_by("-created_at", "-id")
    with django_assert_num_queries(4):  # the page with user, token, network; then contracts, providers, plans
        page = selectors.transaction_page(qs, 5)
        shown = [
            (tx.pk, tx.user and tx.user.username, tx.token.symbol, tx.network.slug, tx.contract.slug)
            + (tx.provider.slug, tx.plan.slug)
            for tx in page
        ]
    expected = [
        (tx.pk, tx.user and tx.user.username, tx.token.symbol, tx.network.slug, tx.contract.slug)
        + (tx.provider.slug, tx.plan.slug)
        for tx in list(qs[:5])
    ]
    assert shown == expected
    assert len(page) == 5 and {tx.pk for tx in made} >= {tx.pk for tx in page[1:]}
    assert page[0].user is None  # the newest row, the one with no customer
