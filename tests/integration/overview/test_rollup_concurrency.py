"""The revenue rollup under concurrent writers (migration 0018): a writer never waits on another one's rollup
rows, so two transactions moving money of the same keys in opposite orders neither block nor deadlock, and
the rollup equals the ledger after both commit. Each writer runs with a short lock_timeout: a wait on the
other's rows would fail the test (as it would with a counter row updated in place)."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from billing.models import PaymentTransaction
from tests.factories import ConfirmedTransactionFactory, PlanFactory
from tests.integration.overview.test_rollup_properties import fresh_aggregate, rollup

pytestmark = pytest.mark.django_db(transaction=True)


def set_rate(pk: int, rate: str) -> None:
    PaymentTransaction.objects.filter(pk=pk).update(usd_rate_at_confirmation=Decimal(rate))


def test_two_writers_on_the_same_keys_in_opposite_orders_neither_wait_nor_deadlock():
    first = ConfirmedTransactionFactory()
    other_plan = PlanFactory(provider=first.plan.provider, contract=first.contract, price_token=first.token)
    # Two keys (same day, network and token; two plans), two payments on each.
    a, d = first, ConfirmedTransactionFactory(plan=first.plan)
    b, c = ConfirmedTransactionFactory(plan=other_plan), ConfirmedTransactionFactory(plan=other_plan)
    assert len(rollup()) == 2

    step = [threading.Event() for _ in range(3)]
    errors: list[BaseException] = []

    def second_writer() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '3s'")
                step[0].wait(10)
                set_rate(c.pk, "1.10000000")  # key 2, while the first writer holds its rows of key 1
                step[1].set()
                step[2].wait(10)
                set_rate(d.pk, "1.20000000")  # key 1, whose rows the first writer folded and still holds
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)
        finally:
            step[1].set()
            connection.close()

    thread = threading.Thread(target=second_writer)
    thread.start()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '3s'")
        set_rate(a.pk, "0.90000000")  # key 1
        step[0].set()
        assert step[1].wait(10)
        set_rate(b.pk, "0.80000000")  # key 2, whose rows the second writer holds
        step[2].set()
        thread.join(15)  # the second writer commits while this transaction is still open
        assert not thread.is_alive()
    assert errors == []
    assert rollup() == fresh_aggregate()
    gross = {key[4]: value for key, value in rollup().items()}
    amount = first.amount
    assert gross[first.plan_id][1] == amount * Decimal("0.9") + amount * Decimal("1.2")
    assert gross[other_plan.pk][1] == b.amount * Decimal("0.8") + c.amount * Decimal("1.1")
