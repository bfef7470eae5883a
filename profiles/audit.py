"""django-auditlog registration of the user's wallets and quota grants (who linked which wallet, what the
user may do and since when). Nothing here is secret."""

from auditlog.registry import auditlog

from profiles.models import QuotaGrant, Wallet

auditlog.register(Wallet)
auditlog.register(QuotaGrant, exclude_fields=["updated_at"])
