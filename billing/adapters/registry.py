"""Provider registry: slug -> adapter class, listed in settings.BILLING_PROVIDERS, loaded by import_string."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from billing.adapters.base import PaymentProviderAdapter


class UnknownProvider(LookupError):
    pass


@cache
def _load(path: str) -> type[PaymentProviderAdapter]:
    cls = import_string(path)
    if not issubclass(cls, PaymentProviderAdapter):
        raise TypeError(f"{path} is not a PaymentProviderAdapter")
    return cls


def get_adapter(provider_type: str) -> PaymentProviderAdapter:
    try:
        path = settings.BILLING_PROVIDERS[provider_type]
    except KeyError as exc:
        raise UnknownProvider(f"No adapter registered for provider type '{provider_type}'.") from exc
    return _load(path)()


def provider_types() -> list[str]:
    return sorted(settings.BILLING_PROVIDERS)
