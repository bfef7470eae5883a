"""Settings mistakes fail loudly at start-up, not at the first payment."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string


@register()
def billing_settings_check(app_configs, **kwargs):
    problems = []
    providers = getattr(settings, "BILLING_PROVIDERS", None)
    if not providers:
        problems.append(Error("BILLING_PROVIDERS is empty.", id="billing.E001"))
    for slug, path in (providers or {}).items():
        try:
            import_string(path)
        except ImportError as exc:
            problems.append(
                Error(f"BILLING_PROVIDERS['{slug}'] = {path!r} cannot be imported: {exc}", id="billing.E002")
            )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        problems.append(Error("SQLite cannot hold uint256 amounts exactly; use PostgreSQL.", id="billing.E003"))
    if settings.BILLING_IDEMPOTENCY_TTL.total_seconds() < 72 * 3600:
        problems.append(Error("BILLING_IDEMPOTENCY_TTL must be at least 72 hours.", id="billing.E004"))
    if not (settings.BILLING_QUOTE_SIGNER_KEY or settings.BILLING_QUOTE_SIGNER_KEY_FILE):
        problems.append(
            Warning(
                "No quote signer key (BILLING_QUOTE_SIGNER_KEY or _FILE): checkout cannot sign quotes.",
                id="billing.W001",
            )
        )
    return problems
