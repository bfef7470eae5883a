from billing.models.chain import ChainBlock, ChainCursor, ChainEvent
from billing.models.contract import PaymentContract
from billing.models.idempotency import IdempotencyKey
from billing.models.inbound import InboundEvent
from billing.models.network import ConfirmationPolicy, CryptoConfig, Network, NetworkFallback, RpcEndpoint, Token
from billing.models.operator_tx import OperatorTransaction
from billing.models.outbox import DeliveryAttempt, OutboxDelivery, OutboxEvent
from billing.models.plan import Interval, Plan
from billing.models.provider import PaymentProvider
from billing.models.rollup import RevenueRollup
from billing.models.subscription import (
    LIVE_SUBSCRIPTION_STATUSES,
    PeriodKind,
    PeriodStatus,
    Subscription,
    SubscriptionPeriod,
    SubscriptionStatus,
)
from billing.models.transaction import (
    ALLOWED_TRANSITIONS,
    PaymentTransaction,
    ProductType,
    RefundStatus,
    TransactionStatusChange,
    TxStatus,
    can_transition,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "ChainBlock",
    "ChainCursor",
    "ChainEvent",
    "ConfirmationPolicy",
    "CryptoConfig",
    "DeliveryAttempt",
    "IdempotencyKey",
    "InboundEvent",
    "Interval",
    "LIVE_SUBSCRIPTION_STATUSES",
    "Network",
    "NetworkFallback",
    "OperatorTransaction",
    "OutboxDelivery",
    "OutboxEvent",
    "PaymentContract",
    "PaymentProvider",
    "PaymentTransaction",
    "PeriodKind",
    "PeriodStatus",
    "Plan",
    "ProductType",
    "RefundStatus",
    "RevenueRollup",
    "RpcEndpoint",
    "Subscription",
    "SubscriptionPeriod",
    "SubscriptionStatus",
    "Token",
    "TransactionStatusChange",
    "TxStatus",
    "can_transition",
]
