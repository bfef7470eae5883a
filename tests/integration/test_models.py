"""The data model's integrity, proven on PostgreSQL: what the database refuses, what the model refuses,
and that 256-bit amounts survive every hop exactly. Every refusal test has a control beside it, so a
missing constraint or a too-broad one makes a test fail."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from rest_framework import serializers

from billing.fields import UINT256_MAX, TokenAmountField
from billing.models import (
    ALLOWED_TRANSITIONS,
    PaymentTransaction,
    Plan,
    Subscription,
    SubscriptionStatus,
    TransactionStatusChange,
    TxStatus,
)
from billing.services.ledger import TransitionNotAllowed, transaction_set_status
from tests import factories as f

pytestmark = pytest.mark.django_db


def _refused(callable_, *args, **kwargs) -> IntegrityError:
    """Run a write that must be refused inside its own savepoint, so the test's transaction stays usable."""
    with pytest.raises(IntegrityError) as exc, transaction.atomic():
        callable_(*args, **kwargs)
    return exc.value


# --- uniqueness: idempotency is a database constraint -------------------------------------------------


def test_inbound_delivery_id_unique_per_contract():
    first = f.InboundEventFactory(delivery_id="dlv-1")
    other_contract = f.PaymentContractFactory()

    err = _refused(f.InboundEventFactory, contract=first.contract, delivery_id="dlv-1")
    assert "inbound_unique_delivery" in str(err)
    # Control: the same id on another contract, and another id on the same contract, are fine.
    f.InboundEventFactory(contract=other_contract, delivery_id="dlv-1")
    f.InboundEventFactory(contract=first.contract, delivery_id="dlv-2")


def test_inbound_chain_log_unique():
    first = f.InboundEventFactory(log_index=3)

    err = _refused(
        f.InboundEventFactory,
        contract=first.contract,
        chain_id=first.chain_id,
        tx_hash=first.tx_hash,
        log_index=3,
    )
    assert "inbound_unique_chain_log" in str(err)
    # Control: another log of the same transaction, and deliveries without a chain position, are fine.
    f.InboundEventFactory(contract=first.contract, chain_id=first.chain_id, tx_hash=first.tx_hash, log_index=4)
    f.InboundEventFactory(contract=first.contract, chain_id=None, tx_hash=None, log_index=None)
    f.InboundEventFactory(contract=first.contract, chain_id=None, tx_hash=None, log_index=None)


def test_transaction_chain_log_unique():
    first = f.ConfirmedTransactionFactory(log_index=7)

    err = _refused(
        f.ConfirmedTransactionFactory,
        plan=first.plan,
        chain_id=first.chain_id,
        tx_hash=first.tx_hash,
        log_index=7,
    )
    assert "tx_unique_chain_log" in str(err)
    # Control: same hash and log index on another chain is another payment.
    other_net = f.NetworkFactory()
    f.ConfirmedTransactionFactory(plan=first.plan, chain_id=other_net.chain_id, tx_hash=first.tx_hash, log_index=7)
    # Pending rows (no hash yet) never collide.
    f.PaymentTransactionFactory(plan=first.plan, tx_hash=None, log_index=None)
    f.PaymentTransactionFactory(plan=first.plan, tx_hash=None, log_index=None)


def test_transaction_order_unique_per_contract():
    first = f.PaymentTransactionFactory()

    err = _refused(f.PaymentTransactionFactory, plan=first.plan, order_id=first.order_id)
    assert "tx_unique_contract_order" in str(err)
    # Control: the same order id on another contract, and rows without an order (unmatched transfers).
    f.PaymentTransactionFactory(order_id=first.order_id)
    f.PaymentTransactionFactory(plan=first.plan, order_id=None)
    f.PaymentTransactionFactory(plan=first.plan, order_id=None)


def test_idempotency_key_unique_per_user_and_scope():
    first = f.IdempotencyKeyFactory(key="k-1", scope="checkout")

    err = _refused(f.IdempotencyKeyFactory, user=first.user, key="k-1", scope="checkout")
    assert "idempotency_unique_user_key" in str(err)
    # Control: another scope, and another user with the same key.
    f.IdempotencyKeyFactory(user=first.user, key="k-1", scope="refund")
    f.IdempotencyKeyFactory(key="k-1", scope="checkout")


def test_one_live_subscription_per_user():
    live = f.SubscriptionFactory(status=SubscriptionStatus.ACTIVE)

    for status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE):
        err = _refused(f.SubscriptionFactory, user=live.user, plan=live.plan, status=status)
        assert "subscription_one_live_per_user" in str(err)
    # Control: ended subscriptions beside the live one are history, not a second live one.
    f.SubscriptionFactory(user=live.user, plan=live.plan, status=SubscriptionStatus.EXPIRED)
    f.SubscriptionFactory(user=live.user, plan=live.plan, status=SubscriptionStatus.CANCELED)
    assert Subscription.objects.filter(user=live.user).count() == 3


# --- 256-bit amounts ---------------------------------------------------------------------------------


def test_uint256_max_round_trips_through_the_orm():
    plan = f.PlanFactory(price_amount=UINT256_MAX)
    tx = f.ConfirmedTransactionFactory(plan=plan, amount=UINT256_MAX, fee=UINT256_MAX)

    tx_db = PaymentTransaction.objects.get(pk=tx.pk)
    plan_db = Plan.objects.get(pk=plan.pk)
    for value in (tx_db.amount, tx_db.fee, plan_db.price_amount):
        assert type(value) is int
        assert value == 2**256 - 1
    # Filters compare exactly too: one less is a different amount.
    assert PaymentTransaction.objects.filter(amount=UINT256_MAX).count() == 1
    assert PaymentTransaction.objects.filter(amount=UINT256_MAX - 1).count() == 0
    # full_clean accepts the largest uint256.
    tx_db.full_clean()
    plan_db.full_clean()


class _AmountSerializer(serializers.ModelSerializer):
    class Meta:
        model = PaymentTransaction
        fields = ["amount"]


def test_uint256_max_round_trips_through_json_strings():
    tx = f.PaymentTransactionFactory(amount=UINT256_MAX)
    tx = PaymentTransaction.objects.get(pk=tx.pk)

    # DRF's ModelSerializer maps the field to a decimal rendered as a string (COERCE_DECIMAL_TO_STRING).
    data = _AmountSerializer(tx).data
    assert data["amount"] == str(UINT256_MAX)
    wire = json.dumps(data)
    assert (
        json.loads(wire)["amount"] == "115792089237316195423570985008687907853269984665640564039457584007913129639935"
    )
    back = _AmountSerializer(data=json.loads(wire))
    assert back.is_valid(), back.errors
    assert int(back.validated_data["amount"]) == UINT256_MAX

    # The plain form: str() out, int() back, never through a float.
    assert int(json.loads(json.dumps(str(tx.amount)))) == UINT256_MAX
    assert float(UINT256_MAX) != UINT256_MAX  # why floats are banned: they cannot hold it


def test_2_pow_256_is_refused_by_full_clean():
    plan = f.PlanFactory()
    tx = f.PaymentTransactionFactory.build(
        plan=plan,
        user=f.UserFactory(),
        provider=plan.provider,
        contract=plan.contract,
        network=plan.contract.network,
        token=plan.price_token,
        amount=2**256,
    )
    with pytest.raises(ValidationError) as exc:
        tx.full_clean()
    assert "amount" in exc.value.message_dict

    plan.price_amount = 2**256
    with pytest.raises(ValidationError) as exc:
        plan.full_clean()
    assert "price_amount" in exc.value.message_dict


def test_numeric_78_0_overflow_is_refused_by_the_database():
    """numeric(78,0) holds 78 digits: 10**78 is the first value the column itself cannot store."""
    tx = f.PaymentTransactionFactory()
    with pytest.raises(DataError, match="numeric field overflow"), transaction.atomic():
        PaymentTransaction.objects.filter(pk=tx.pk).update(amount=10**78)
    with pytest.raises(DataError, match="numeric field overflow"), transaction.atomic():
        tx.amount = 10**78
        tx.save(update_fields=["amount"])


def test_2_pow_256_is_refused_by_the_database_on_save():
    tx = f.PaymentTransactionFactory()
    try:
        with transaction.atomic():
            PaymentTransaction.objects.filter(pk=tx.pk).update(amount=2**256)
    except (IntegrityError, DataError) as exc:
        assert "tx_amount_uint256" in str(exc)
        return
    raise AssertionError("the database stored 2**256 in a uint256 column")


def test_negative_amount_refused_by_the_database():
    tx = f.PaymentTransactionFactory()
    err = _refused(PaymentTransaction.objects.filter(pk=tx.pk).update, amount=-1)
    assert "tx_amount_non_negative" in str(err)


@pytest.mark.parametrize("value", [1.0, 1.5, float(UINT256_MAX)])
def test_floats_are_refused_by_to_python(value):
    field = TokenAmountField()
    with pytest.raises(ValidationError):
        field.to_python(value)
    # Nor does a float slip into the database through save().
    tx = f.PaymentTransactionFactory()
    tx.amount = value
    with pytest.raises(ValidationError), transaction.atomic():
        tx.save()
    assert PaymentTransaction.objects.get(pk=tx.pk).amount == tx.plan.price_amount


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("5", 5), (Decimal("5"), 5), (str(UINT256_MAX), UINT256_MAX), (Decimal("1E+3"), 1000)],
)
def test_to_python_accepts_exact_integers(value, expected):
    result = TokenAmountField().to_python(value)
    assert type(result) is int
    assert result == expected


@pytest.mark.parametrize("value", ["1.5", Decimal("0.1"), "abc", True])
def test_to_python_refuses_fractions_and_garbage(value):
    with pytest.raises(ValidationError):
        TokenAmountField().to_python(value)


# --- statuses and transitions ------------------------------------------------------------------------


def test_status_outside_the_list_refused_by_the_database():
    tx = f.PaymentTransactionFactory()
    err = _refused(PaymentTransaction.objects.filter(pk=tx.pk).update, status="bogus")
    assert "tx_status_valid" in str(err)
    err = _refused(f.TransactionStatusChangeFactory, transaction=tx, to_status="bogus")
    assert "tx_history_status_valid" in str(err)
    # Control: a listed status passes the same raw path.
    PaymentTransaction.objects.filter(pk=tx.pk).update(status=TxStatus.EXPIRED)
    assert PaymentTransaction.objects.get(pk=tx.pk).status == "expired"


def test_confirmed_without_hash_refused_by_the_database():
    tx = f.PaymentTransactionFactory(tx_hash=None)
    err = _refused(PaymentTransaction.objects.filter(pk=tx.pk).update, status=TxStatus.CONFIRMED)
    assert "tx_confirmed_has_hash" in str(err)
    err = _refused(PaymentTransaction.objects.filter(pk=tx.pk).update, status=TxStatus.UNMATCHED)
    assert "tx_unmatched_has_hash" in str(err)


def _tx_in(status: str) -> PaymentTransaction:
    """A ledger row sitting in `status`; it carries a hash so every target status is storable."""
    tx = f.ConfirmedTransactionFactory(status=TxStatus.CONFIRMED)
    PaymentTransaction.objects.filter(pk=tx.pk).update(status=status)
    tx.refresh_from_db()
    return tx


ALL_PAIRS = list(itertools.product(TxStatus.values, TxStatus.values))
ALLOWED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in ALLOWED_TRANSITIONS[a]]
FORBIDDEN_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in ALLOWED_TRANSITIONS[a]]


def test_transition_table_covers_every_status():
    assert set(ALLOWED_TRANSITIONS) == set(TxStatus.values)
    assert all(targets <= set(TxStatus.values) for targets in ALLOWED_TRANSITIONS.values())
    # Both kinds exist, so the parametrized tests below really test something each way.
    assert len(ALLOWED_PAIRS) == 19  # refunded -> needs_review: a refund a reorg removed
    assert len(FORBIDDEN_PAIRS) == 64 - 19


@pytest.mark.parametrize(("old", "new"), ALLOWED_PAIRS, ids=[f"{a}->{b}" for a, b in ALLOWED_PAIRS])
def test_allowed_transition_writes_one_history_row(old, new):
    tx = _tx_in(old)

    transaction_set_status(tx=tx, status=new, actor="user:42", reason="test says so", details={"k": "v"})

    assert PaymentTransaction.objects.get(pk=tx.pk).status == new
    history = list(TransactionStatusChange.objects.filter(transaction=tx))
    assert len(history) == 1
    row = history[0]
    assert (row.from_status, row.to_status, row.actor, row.reason, row.details) == (
        old,
        new,
        "user:42",
        "test says so",
        {"k": "v"},
    )


@pytest.mark.parametrize(
    ("old", "new"), FORBIDDEN_PAIRS + [("pending", "bogus")], ids=[f"{a}->{b}" for a, b in FORBIDDEN_PAIRS] + ["bogus"]
)
def test_forbidden_transition_is_refused_and_writes_nothing(old, new):
    tx = _tx_in(old)
    before = PaymentTransaction.objects.values().get(pk=tx.pk)

    with pytest.raises(TransitionNotAllowed) as exc:
        transaction_set_status(tx=tx, status=new, actor="user:42", reason="should not happen")

    assert (exc.value.old, exc.value.new) == (old, new)
    assert PaymentTransaction.objects.values().get(pk=tx.pk) == before
    assert not TransactionStatusChange.objects.filter(transaction=tx).exists()
    assert tx.status == old


def test_transition_sets_the_matching_timestamp():
    tx = f.PaymentTransactionFactory(tx_hash=f.random_hash(), confirmed_at=None)
    transaction_set_status(tx=tx, status=TxStatus.SUBMITTED, actor="chain")
    transaction_set_status(tx=tx, status=TxStatus.CONFIRMED, actor="chain")
    transaction_set_status(tx=tx, status=TxStatus.REFUNDED, actor="user:1", reason="customer asked")
    tx.refresh_from_db()
    assert tx.submitted_at and tx.confirmed_at and tx.refunded_at
    assert tx.submitted_at <= tx.confirmed_at <= tx.refunded_at
    assert list(tx.status_history.values_list("from_status", "to_status")) == [
        ("pending", "submitted"),
        ("submitted", "confirmed"),
        ("confirmed", "refunded"),
    ]


# --- model validation (full_clean), the error on the right field ----------------------------------------


def _clean_errors(obj) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as exc:
        obj.full_clean()
    return exc.value.message_dict


def _contract(**overrides):
    """An unsaved contract on a saved network: full_clean sees only what the test changes."""
    values = {"network": f.NetworkFactory(), "slug": "c-under-test"}
    values.update(overrides)
    return f.PaymentContractFactory.build(**values)


def test_valid_contract_passes_full_clean():
    _contract().full_clean()


@pytest.mark.parametrize(
    "abi",
    [
        {"type": "function", "name": "pay"},
        "[]",
        [],
        [{"name": "pay", "inputs": []}],
        [{"type": "function", "name": "pay", "inputs": [{"name": "x"}]}],
    ],
    ids=["dict", "string", "empty", "item-without-type", "input-without-type"],
)
def test_invalid_abi_refused_on_abi_field(abi):
    errors = _clean_errors(_contract(abi=abi))
    assert "abi" in errors


@pytest.mark.parametrize("field", ["mint_method", "burn_method", "withdraw_method"])
def test_method_not_in_abi_refused_on_its_field(field):
    errors = _clean_errors(_contract(**{field: "doesNotExist"}))
    assert field in errors
    assert "doesNotExist" in errors[field][0]


def test_method_without_inputs_refused():
    abi = list(f.MINIMAL_ABI) + [{"type": "function", "name": "ping", "inputs": [], "outputs": []}]
    errors = _clean_errors(_contract(abi=abi, mint_method="ping"))
    assert set(errors) == {"mint_method"}
    errors = _clean_errors(_contract(abi=abi, burn_method="ping"))
    assert set(errors) == {"burn_method"}


def test_method_that_is_an_event_is_not_a_function():
    abi = list(f.MINIMAL_ABI) + [{"type": "event", "name": "Paid", "inputs": [{"name": "a", "type": "uint256"}]}]
    assert "mint_method" in _clean_errors(_contract(abi=abi, mint_method="Paid"))


GOOD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.mark.parametrize(
    "address",
    [GOOD.lower(), "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", "0x1234", "not-an-address", GOOD + "00"],
    ids=["lowercase", "wrong-case", "short", "text", "long"],
)
def test_bad_address_refused_on_contract_and_token(address):
    assert "address" in _clean_errors(_contract(address=address))
    token = f.TokenFactory.build(network=f.NetworkFactory(), address=address)
    assert "address" in _clean_errors(token)


def test_checksummed_address_passes_on_contract_and_token():
    _contract(address=GOOD).full_clean()
    f.TokenFactory.build(network=f.NetworkFactory(), address=GOOD).full_clean()
    # A native coin has no address at all.
    f.NativeTokenFactory.build(network=f.NetworkFactory()).full_clean()


def test_plan_token_on_a_network_the_provider_does_not_support():
    plan = f.PlanFactory()
    plan.full_clean()  # control: the factory's plan is valid
    elsewhere = f.TokenFactory()  # on a fresh network the provider does not have

    plan.price_token = elsewhere
    errors = _clean_errors(plan)
    assert "price_token" in errors
    assert "does not support" in errors["price_token"][0]


def test_plan_contract_on_another_network_than_its_token():
    plan = f.PlanFactory()
    other_net = f.NetworkFactory()
    plan.provider.networks.add(other_net)  # the provider supports it, so only the contract is wrong
    plan.price_token = f.TokenFactory(network=other_net)

    errors = _clean_errors(plan)
    assert set(errors) == {"contract"}
    assert "different networks" in errors["contract"][0]


def test_plan_variant_needs_experiment_in_model_and_database():
    plan = f.PlanFactory()
    plan.variant = "a"
    assert "variant" in _clean_errors(plan)
    err = _refused(Plan.objects.filter(pk=plan.pk).update, variant="a", experiment="")
    assert "plan_variant_needs_experiment" in str(err)


# --- PROTECT: ledger rows keep their catalog -----------------------------------------------------------


@pytest.mark.parametrize("target", ["token", "plan", "contract"])
def test_catalog_rows_referenced_by_the_ledger_cannot_be_deleted(target):
    tx = f.ConfirmedTransactionFactory()
    obj = getattr(tx, target)

    with pytest.raises(ProtectedError) as exc, transaction.atomic():
        obj.delete()
    assert tx in exc.value.protected_objects
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert PaymentTransaction.objects.filter(pk=tx.pk).exists()


def test_unreferenced_token_can_be_deleted():
    """Control for the PROTECT test: the refusal comes from the reference, not from deletes in general."""
    token = f.TokenFactory()
    token.delete()
    assert not type(token).objects.filter(pk=token.pk).exists()


def test_subscription_period_must_move_forward():
    now = timezone.now()
    err = _refused(f.SubscriptionFactory, current_period_start=now, current_period_end=now - timedelta(seconds=1))
    assert "subscription_period_order" in str(err)
