"""Every factory builds a row that passes model validation and the database constraints."""

import pytest

from tests import factories as f

ALL = [
    f.UserFactory,
    f.NetworkFactory,
    f.RpcEndpointFactory,
    f.TokenFactory,
    f.NativeTokenFactory,
    f.CryptoConfigFactory,
    f.NetworkFallbackFactory,
    f.PaymentContractFactory,
    f.PaymentProviderFactory,
    f.PlanFactory,
    f.PaymentTransactionFactory,
    f.ConfirmedTransactionFactory,
    f.TransactionStatusChangeFactory,
    f.IdempotencyKeyFactory,
    f.SubscriptionFactory,
    f.InboundEventFactory,
    f.ChainCursorFactory,
    f.ChainBlockFactory,
    f.ChainEventFactory,
    f.OutboxEventFactory,
    f.OutboxDeliveryFactory,
    f.DeliveryAttemptFactory,
    f.WalletFactory,
    f.SiweNonceFactory,
    f.QuotaGrantFactory,
    f.ProcessedQuotaEventFactory,
    f.NotificationFactory,
    f.OperatorTransactionFactory,
]


@pytest.mark.django_db
@pytest.mark.parametrize("factory_cls", ALL, ids=lambda c: c.__name__)
def test_factory_creates_valid_row(factory_cls):
    obj = factory_cls()
    obj.full_clean(validate_constraints=False)
    assert type(obj).objects.filter(pk=obj.pk).exists()
