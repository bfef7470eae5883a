"""django-auditlog registration. Secrets are never logged: they are excluded and `secret_rotated_at`
is audited instead. Data mirrored from the chain (health, cursors) is not audited."""

from auditlog.registry import auditlog

from billing.models import (
    CryptoConfig,
    Network,
    NetworkFallback,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    Plan,
    RpcEndpoint,
    Subscription,
    SubscriptionPeriod,
    Token,
)

auditlog.register(Network)
auditlog.register(
    RpcEndpoint,
    exclude_fields=[
        "url",
        "healthy",
        "last_checked_at",
        "last_ok_at",
        "last_latency_ms",
        "last_head_block",
        "last_error",
        "consecutive_failures",
    ],
)
auditlog.register(Token)
auditlog.register(CryptoConfig)
auditlog.register(NetworkFallback)
auditlog.register(PaymentContract, exclude_fields=["webhook_secret", "previous_webhook_secret", "fallback_rpc"])
auditlog.register(PaymentProvider, m2m_fields={"networks", "supported_tokens"})
auditlog.register(Plan)
auditlog.register(PaymentTransaction, exclude_fields=["checkout_payload", "updated_at"])
auditlog.register(Subscription)
auditlog.register(SubscriptionPeriod, exclude_fields=["updated_at"])
