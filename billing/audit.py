"""django-auditlog registration: the catalog, the ledger's operator-visible rows, and users' role grants
(group membership, permissions). Secret fields are audited as changed without their values (`mask_secret`:
a secret becomes "****", an RPC URL keeps only scheme and host). Data mirrored from the chain (health,
cursors) is not audited. Wallets and quota grants are registered by `profiles` (profiles/audit.py).
Operator actions that change no field are audit notes (billing.services.operator.audit_note)."""

from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

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
from billing_project.logging import mask_url

MASK_SECRET = "billing.audit.mask_secret"


def mask_secret(value: str) -> str:
    """auditlog's mask callable for secret fields: whether it is set, never what it is. A URL (an RPC URL
    carries its provider key in path, query or user info) keeps scheme and host only."""
    if value in ("", "None"):
        return ""
    if "://" in value:
        return mask_url(value)
    return "****"


auditlog.register(Network)
auditlog.register(
    RpcEndpoint,
    mask_fields=["url"],
    mask_callable=MASK_SECRET,
    exclude_fields=list(RpcEndpoint.HEALTH_FIELDS),
)
auditlog.register(Token)
auditlog.register(CryptoConfig)
auditlog.register(NetworkFallback)
auditlog.register(
    PaymentContract,
    mask_fields=["webhook_secret", "previous_webhook_secret", "fallback_rpc"],
    mask_callable=MASK_SECRET,
)
auditlog.register(PaymentProvider, m2m_fields={"networks", "supported_tokens"})
auditlog.register(Plan)
auditlog.register(PaymentTransaction, exclude_fields=["checkout_payload", "updated_at"])
auditlog.register(Subscription)
auditlog.register(SubscriptionPeriod, exclude_fields=["updated_at"])

# Role grants: who got which group (billing_admin, support) or permission, and staff/superuser flags.
auditlog.register(
    get_user_model(), exclude_fields=["password", "last_login"], m2m_fields={"groups", "user_permissions"}
)
auditlog.register(Group, m2m_fields={"permissions"})
