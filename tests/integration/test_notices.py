"""Issue 13 notices: every user notice (payment received, failed with advice, renewal due, past due,
expired, refunded) is sent once however often its task runs or its outbox row is delivered again; every ops
notice (dead letter, RPC endpoint down, RPC failover, sweep error) is raised by the condition it names."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from billing import models as m
from billing.chain.rpc import ChainClient, RpcError, reset_endpoint_state
from billing.services.ledger import transaction_set_status
from billing.services.outbox import outbox_delivery_attempt
from billing.services.payments import payment_mark_failed
from billing.services.subscriptions import subscription_advance
from notifications.models import Notification
from notifications.receivers import handle_plan_changed
from notifications.services import notification_deliver
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _locmem_mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFICATIONS_OPS_WEBHOOK_URL = ""  # ops notices go to the log
    reset_endpoint_state()
    yield
    reset_endpoint_state()


def deliver_twice() -> None:
    """Deliver every pending outbox row, then deliver each once more as a redelivery would (the row back to
    pending: a worker that died after the handler's commit, an operator's replay of a delivered event)."""
    done = []
    while pending := list(m.OutboxDelivery.objects.filter(status="pending").exclude(pk__in=done)):
        for delivery in pending:
            outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
            done.append(delivery.pk)
    for pk in done:
        m.OutboxDelivery.objects.filter(pk=pk).update(status="pending")
        outbox_delivery_attempt(delivery_id=pk, force=True)


def send_all_twice() -> list[str]:
    outcomes = []
    for pk in Notification.objects.values_list("pk", flat=True):
        outcomes += [notification_deliver(notification_id=pk), notification_deliver(notification_id=pk)]
    return outcomes


def confirm(tx) -> None:
    transaction_set_status(
        tx=tx,
        status=m.TxStatus.CONFIRMED,
        actor="test",
        fields={"tx_hash": f.random_hash(), "block_number": 10, "block_hash": f.random_hash(), "log_index": 0},
    )


def user_notes(user, kind):
    return Notification.objects.filter(user=user, kind=kind)


def test_payment_received_is_sent_once():
    tx = f.PaymentTransactionFactory(user=f.UserFactory(email="payer@example.test"))
    confirm(tx)
    deliver_twice()
    note = user_notes(tx.user, "payment_received").get()
    assert note.title == "Payment received" and "10 " in note.body and tx.plan.slug in note.body
    assert send_all_twice().count("sent") == Notification.objects.count()
    assert [msg.subject for msg in mail.outbox].count("Payment received") == 1


@pytest.mark.parametrize(
    ("reason", "advice"),
    [
        ("not mined before the checkout's deadline", "quote expired"),
        ("execution reverted: ERC20: insufficient allowance", "allowance was too low"),
        ("execution reverted: QuoteExpired()", "quote expired"),
        ("reverted", "Start a new checkout"),
    ],
)
def test_payment_failed_says_what_to_do_once(reason, advice):
    tx = f.PaymentTransactionFactory(status=m.TxStatus.SUBMITTED, tx_hash="0x" + "ab" * 32)
    payment_mark_failed(tx=tx, reason=reason, source="chain:receipt")
    payment_mark_failed(tx=tx, reason=reason, source="chain:receipt")  # the receipt task retried
    deliver_twice()
    note = user_notes(tx.user, "payment_failed").get()
    assert advice in note.body and note.data["reason"] == reason and advice in note.data["advice"]


def test_refund_is_one_notice_whichever_event_tells_it_first():
    tx = f.ConfirmedTransactionFactory()
    transaction_set_status(tx=tx, status=m.TxStatus.REFUNDED, actor="chain:follower")
    deliver_twice()
    handle_plan_changed(  # the subscription side of the same refund
        {
            "event_id": "e1",
            "user_id": tx.user_id,
            "plan": None,
            "previous_plan": tx.plan.slug,
            "reason": "refunded",
            "transaction_id": str(tx.pk),
        }
    )
    assert user_notes(tx.user, "refunded").count() == 1


def test_renewal_due_is_sent_once_per_period_end_to_payers_with_nothing_queued():
    from notifications.tasks import renewal_due_notify

    now = timezone.now()
    due = f.SubscriptionFactory(
        current_period_start=now - timedelta(days=28), current_period_end=now + timedelta(days=2)
    )
    queued = f.SubscriptionFactory(
        current_period_start=now - timedelta(days=28), current_period_end=now + timedelta(days=2)
    )
    f.SubscriptionPeriodFactory(
        subscription=queued, starts_at=queued.current_period_end, ends_at=queued.current_period_end + timedelta(30)
    )
    f.SubscriptionFactory(
        current_period_start=now - timedelta(days=28),
        current_period_end=now + timedelta(days=2),
        cancel_at_period_end=True,
    )
    f.SubscriptionFactory(current_period_start=now, current_period_end=now + timedelta(days=20))  # not yet
    assert renewal_due_notify() == 1
    assert renewal_due_notify() == 0  # the beat ran again (or in two workers)
    note = Notification.objects.get(kind="renewal_due")
    assert note.user_id == due.user_id and note.title.endswith("plan renews in 2 days")
    assert note.data["subscription_id"] == due.pk and note.data["price_token"] == due.plan.price_token.symbol
    # The period end moved (renewed): the next period's reminder is a new one.
    due.current_period_end += timedelta(hours=1)
    due.save()
    assert renewal_due_notify() == 1


def test_past_due_and_expired_are_sent_once_when_the_advance_task_is_retried():
    now = timezone.now()
    sub = f.SubscriptionFactory(current_period_start=now - timedelta(days=30), current_period_end=now - timedelta(1))
    f.SubscriptionPeriodFactory(subscription=sub)
    subscription_advance(subscription_id=sub.pk)
    subscription_advance(subscription_id=sub.pk)  # retried
    deliver_twice()
    assert user_notes(sub.user, "renewal_overdue").count() == 1
    later = now + timedelta(days=sub.plan.grace_period_days + 2)
    subscription_advance(subscription_id=sub.pk, now=later)
    subscription_advance(subscription_id=sub.pk, now=later)
    deliver_twice()
    assert user_notes(sub.user, "expired").count() == 1
    assert Notification.objects.filter(audience="ops", kind="ops_expired").count() == 1


# --- ops notices ---------------------------------------------------------------------------------------------


def test_a_dead_letter_raises_one_dead_letter_notice(settings):
    settings.BILLING_OUTBOX_MAX_ATTEMPTS = 2
    settings.BILLING_EXTERNAL_SUBSCRIBERS = [
        {"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": "s", "topics": ["payment.status.v1"]}
    ]
    tx = f.PaymentTransactionFactory()
    confirm(tx)
    crm = m.OutboxDelivery.objects.get(subscriber="crm")
    for _ in range(3):  # the third finds it dead and does nothing
        outbox_delivery_attempt(delivery_id=crm.pk, force=True)
    crm.refresh_from_db()
    assert crm.status == "dead"
    deliver_twice()
    note = Notification.objects.get(audience="ops", kind="dead_letter")
    assert note.data["delivery_id"] == crm.pk and note.data["subscriber"] == "crm"
    assert note.data["topic"] == "payment.status.v1"
    assert Notification.objects.filter(kind="dead_letter").count() == 1


def test_a_dead_ops_notice_does_not_raise_a_notice_about_itself(settings, monkeypatch):
    from django.db import transaction

    from billing.services.notices import ops_notice
    from notifications import receivers

    settings.BILLING_OUTBOX_MAX_ATTEMPTS = 1
    monkeypatch.setattr(receivers, "notify", lambda **kw: (_ for _ in ()).throw(RuntimeError("down")))
    with transaction.atomic():
        ops_notice(kind="needs_review", key="k1", title="t")
    (delivery,) = m.OutboxDelivery.objects.all()
    outbox_delivery_attempt(delivery_id=delivery.pk, force=True)
    delivery.refresh_from_db()
    assert delivery.status == "dead"
    assert m.OutboxDelivery.objects.count() == 1  # no notice about the dead notice


def _network_with(urls, chain_id=31337):
    network = f.NetworkFactory(chain_id=chain_id)
    for position, url in enumerate(urls):
        f.RpcEndpointFactory(network=network, position=position, url=url, timeout_seconds=Decimal("1"))
    config = m.CryptoConfig.load()
    config.max_retries = 0
    config.save()
    return network


def test_an_endpoint_going_down_raises_one_rpc_down_notice():
    network = _network_with(["http://127.0.0.1:9/KEYINPATH"])
    m.RpcEndpoint.objects.update(healthy=True)
    for _ in range(3):  # the outage goes on: still one notice
        with pytest.raises(RpcError):
            ChainClient.for_network(network).block_number()
        reset_endpoint_state()  # a new worker process: its own memory, the same row
    deliver_twice()
    note = Notification.objects.get(audience="ops", kind="rpc_down")
    assert note.data["endpoint_id"] == network.rpc_endpoints.get().pk
    assert "KEYINPATH" not in note.body + str(note.data)
    assert m.RpcEndpoint.objects.get().healthy is False
    # Back up, then down again: a new outage, a new notice.
    m.RpcEndpoint.objects.update(healthy=True)
    with pytest.raises(RpcError):
        ChainClient.for_network(network).block_number()
    deliver_twice()
    assert Notification.objects.filter(kind="rpc_down").count() == 2


@pytest.mark.chain
def test_a_call_served_by_the_second_endpoint_raises_one_failover_notice(anvil):
    network = _network_with(["http://127.0.0.1:9/", anvil.url])
    client = ChainClient.for_network(network)
    for _ in range(3):
        assert client.block_number() >= 0
    deliver_twice()
    note = Notification.objects.get(audience="ops", kind="rpc_failover")
    second = network.rpc_endpoints.get(position=1)
    assert note.data == {
        "key": note.data["key"],
        "network": network.slug,
        "from": str(network.rpc_endpoints.get(position=0).pk),
        "to": str(second.pk),
    }


def test_a_failing_sweep_raises_one_sweep_error_notice():
    from billing.services import notices
    from billing.tasks import operator_txs_sweep

    network = _network_with(["http://127.0.0.1:9/"], chain_id=31337)
    row = f.OperatorTransactionFactory(network=network)
    notices._SWEEP_NOTICED.clear()
    assert operator_txs_sweep() == 1
    assert operator_txs_sweep() == 1  # the next beat tick fails the same way: no second outbox row
    assert m.OutboxEvent.objects.filter(payload__kind="sweep_error").count() == 1
    notices._SWEEP_NOTICED.clear()  # another worker process (its own memory) fails on it too
    assert operator_txs_sweep() == 1
    deliver_twice()
    note = Notification.objects.get(audience="ops", kind="sweep_error")
    assert note.data["sweep"] == "operator_txs_sweep" and note.data["subject"] == f"operator_tx:{row.pk}"
