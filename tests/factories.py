"""factory_boy factories for every model. Addresses are EIP-55, amounts are ints (smallest unit)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from eth_utils import to_checksum_address

from billing import models as m
from billing.demo.seed import MINIMAL_PASS_ABI
from notifications.models import Notification
from profiles.models import ProcessedQuotaEvent, QuotaGrant, SiweNonce, Wallet

# The same function signatures as contracts/SubscriptionPass.sol (pay, refund, withdraw).
MINIMAL_ABI = MINIMAL_PASS_ABI


def random_address() -> str:
    return to_checksum_address("0x" + secrets.token_hex(20))


def random_hash() -> str:
    return "0x" + secrets.token_hex(32)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.test")
    password = factory.django.Password("password")


class NetworkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.Network

    slug = factory.Sequence(lambda n: f"net-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    chain_id = factory.Sequence(lambda n: 900000 + n)
    is_testnet = True
    confirmation_depth = 2
    explorer_tx_url = "https://explorer.test/tx/{tx_hash}"
    explorer_address_url = "https://explorer.test/address/{address}"
    explorer_block_url = "https://explorer.test/block/{block}"


class RpcEndpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.RpcEndpoint

    network = factory.SubFactory(NetworkFactory)
    position = factory.Sequence(lambda n: n)
    url = "http://127.0.0.1:8545"
    timeout_seconds = Decimal("2")


class TokenFactory(factory.django.DjangoModelFactory):
    """An ERC-20 (USDC-like, 6 decimals). Use NativeTokenFactory for the coin."""

    class Meta:
        model = m.Token

    network = factory.SubFactory(NetworkFactory)
    symbol = factory.Sequence(lambda n: f"TK{n}")
    name = "Test token"
    address = factory.LazyFunction(random_address)
    decimals = 6
    usd_estimate = Decimal("1.00000000")


class NativeTokenFactory(TokenFactory):
    symbol = "ETH"
    name = "Ether"
    address = ""
    decimals = 18
    usd_estimate = Decimal("3000.00000000")


class CryptoConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.CryptoConfig
        django_get_or_create = ("id",)

    id = 1


class NetworkFallbackFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.NetworkFallback

    config = factory.SubFactory(CryptoConfigFactory)
    network = factory.SubFactory(NetworkFactory)
    position = factory.Sequence(lambda n: n)


class PaymentContractFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.PaymentContract

    slug = factory.Sequence(lambda n: f"contract-{n}")
    title = factory.LazyAttribute(lambda o: o.slug)
    network = factory.SubFactory(NetworkFactory)
    address = factory.LazyFunction(random_address)
    abi = factory.LazyFunction(lambda: list(MINIMAL_ABI))
    mint_method = "pay"
    burn_method = "refund"
    withdraw_method = "withdraw"
    webhook_secret = factory.LazyFunction(lambda: "whsec_" + secrets.token_hex(16))


class PaymentProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.PaymentProvider
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"provider-{n}")
    title = factory.LazyAttribute(lambda o: o.slug)
    type = "evm"
    contract = factory.SubFactory(PaymentContractFactory)
    default_network = factory.LazyAttribute(lambda o: o.contract.network)

    @factory.post_generation
    def networks(self, create, extracted, **kwargs):
        if not create:
            return
        self.networks.set(extracted if extracted is not None else [self.contract.network])

    @factory.post_generation
    def supported_tokens(self, create, extracted, **kwargs):
        if create and extracted:
            self.supported_tokens.set(extracted)
        if create:
            self.config = self.build_config()
            self.save(update_fields=["config"])


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.Plan

    slug = factory.Sequence(lambda n: f"plan-{n}")
    title = factory.LazyAttribute(lambda o: o.slug.replace("-", " ").title())
    interval = m.Interval.MONTH
    provider = factory.SubFactory(PaymentProviderFactory)
    contract = factory.LazyAttribute(lambda o: o.provider.contract)
    price_token = factory.LazyAttribute(lambda o: TokenFactory(network=o.contract.network))
    price_amount = 10_000_000
    price_usd_estimate = Decimal("10.00")
    limits = factory.LazyFunction(lambda: {"api_calls": 1000, "seats": 3})
    features = factory.LazyFunction(lambda: ["dashboard", "exports"])
    tier = 1


class PaymentTransactionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.PaymentTransaction

    user = factory.SubFactory(UserFactory)
    plan = factory.SubFactory(PlanFactory)
    product_type = m.ProductType.PLAN
    product_id = factory.LazyAttribute(lambda o: o.plan.pk)
    provider = factory.LazyAttribute(lambda o: o.plan.provider)
    contract = factory.LazyAttribute(lambda o: o.plan.contract)
    network = factory.LazyAttribute(lambda o: o.contract.network)
    chain_id = factory.LazyAttribute(lambda o: o.network.chain_id)
    token = factory.LazyAttribute(lambda o: o.plan.price_token)
    amount = factory.LazyAttribute(lambda o: o.plan.price_amount)
    status = m.TxStatus.PENDING
    order_id = factory.LazyFunction(random_hash)
    payer_address = factory.LazyFunction(random_address)
    usd_rate_at_checkout = Decimal("1.00000000")
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=30))


class ConfirmedTransactionFactory(PaymentTransactionFactory):
    status = m.TxStatus.CONFIRMED
    tx_hash = factory.LazyFunction(random_hash)
    block_number = factory.Sequence(lambda n: 1000 + n)
    block_hash = factory.LazyFunction(random_hash)
    log_index = 0
    gas_used = 120_000
    effective_gas_price = 2_000_000_000
    fee = factory.LazyAttribute(lambda o: o.gas_used * o.effective_gas_price)
    confirmed_at = factory.LazyFunction(timezone.now)
    usd_rate_at_confirmation = Decimal("1.00000000")


class TransactionStatusChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.TransactionStatusChange

    transaction = factory.SubFactory(PaymentTransactionFactory)
    from_status = ""
    to_status = m.TxStatus.PENDING
    actor = "system:test"


class IdempotencyKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.IdempotencyKey

    user = factory.SubFactory(UserFactory)
    key = factory.Sequence(lambda n: f"idem-{n}")
    fingerprint = factory.LazyFunction(lambda: secrets.token_hex(32))
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=72))


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.Subscription

    user = factory.SubFactory(UserFactory)
    plan = factory.SubFactory(PlanFactory)
    status = m.SubscriptionStatus.ACTIVE
    current_period_start = factory.LazyFunction(timezone.now)
    current_period_end = factory.LazyAttribute(lambda o: o.current_period_start + timedelta(days=30))


class SubscriptionPeriodFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.SubscriptionPeriod

    subscription = factory.SubFactory(SubscriptionFactory)
    plan = factory.LazyAttribute(lambda o: o.subscription.plan)
    starts_at = factory.LazyAttribute(lambda o: o.subscription.current_period_start)
    ends_at = factory.LazyAttribute(lambda o: o.subscription.current_period_end)
    kind = m.PeriodKind.ADMIN


class InboundEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.InboundEvent

    contract = factory.SubFactory(PaymentContractFactory)
    delivery_id = factory.Sequence(lambda n: f"dlv-{n}")
    event_type = "payment.confirmed"
    chain_id = factory.LazyAttribute(lambda o: o.contract.network.chain_id)
    tx_hash = factory.LazyFunction(random_hash)
    log_index = 0
    raw_body = "{}"
    payload = factory.LazyFunction(dict)


class ChainCursorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.ChainCursor

    contract = factory.SubFactory(PaymentContractFactory)
    last_block = 0


class ChainBlockFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.ChainBlock

    contract = factory.SubFactory(PaymentContractFactory)
    number = factory.Sequence(lambda n: n)
    hash = factory.LazyFunction(random_hash)


class ChainEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.ChainEvent

    contract = factory.SubFactory(PaymentContractFactory)
    chain_id = factory.LazyAttribute(lambda o: o.contract.network.chain_id)
    name = "PaymentReceived"
    block_number = factory.Sequence(lambda n: 100 + n)
    block_hash = factory.LazyFunction(random_hash)
    tx_hash = factory.LazyFunction(random_hash)
    log_index = 0
    args = factory.LazyFunction(dict)


class OutboxEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.OutboxEvent

    topic = "plan.changed.v1"
    aggregate_type = "subscription"
    aggregate_id = "1"
    payload = factory.LazyFunction(lambda: {"reason": "payment_confirmed"})


class OutboxDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.OutboxDelivery

    event = factory.SubFactory(OutboxEventFactory)
    subscriber = "quota"


class DeliveryAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.DeliveryAttempt

    delivery = factory.SubFactory(OutboxDeliveryFactory)
    ok = False
    status_code = 500
    error = "HTTP 500"


class WalletFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Wallet

    user = factory.SubFactory(UserFactory)
    address = factory.LazyFunction(random_address)
    chain_id = 31337
    verified_at = factory.LazyFunction(timezone.now)


class SiweNonceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SiweNonce

    user = factory.SubFactory(UserFactory)
    nonce = factory.LazyFunction(lambda: secrets.token_hex(8))
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=10))


class QuotaGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QuotaGrant

    user = factory.SubFactory(UserFactory)
    plan_slug = "pro"
    limits = factory.LazyFunction(lambda: {"api_calls": 1000})


class ProcessedQuotaEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProcessedQuotaEvent

    event_id = factory.Faker("uuid4")
    user = factory.SubFactory(UserFactory)


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    user = factory.SubFactory(UserFactory)
    kind = "payment_confirmed"
    title = "Payment confirmed"
    dedupe_key = factory.Sequence(lambda n: f"notif-{n}")


class OperatorTransactionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = m.OperatorTransaction

    kind = m.OperatorTransaction.Kind.REFUND
    status = m.OperatorTransaction.Status.PENDING
    network = factory.SubFactory(NetworkFactory)
    chain_id = factory.LazyAttribute(lambda o: o.network.chain_id)
    sender = factory.LazyFunction(random_address)
    to = factory.LazyFunction(random_address)
    nonce = factory.Sequence(lambda n: n)
    max_fee_per_gas = 2_000_000_000
    max_priority_fee_per_gas = 1_000_000_000
    tx_hashes = factory.LazyFunction(lambda: [random_hash()])
    requested_by = "user:1"
