"""Settings mistakes fail loudly at start-up, not at the first payment."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string


def _import_problem(setting: str, path, error_id: str) -> Error | None:
    """An Error naming the setting and the dotted path when it does not import to a callable, else None.
    Any exception counts: a module that raises while importing breaks at the first use just the same."""
    if not isinstance(path, str) or "." not in path:
        return Error(f"{setting} = {path!r} is not a dotted path.", id=error_id)
    try:
        target = import_string(path)
    except Exception as exc:
        return Error(f"{setting} = {path!r} cannot be imported: {type(exc).__name__}: {exc}", id=error_id)
    if not callable(target):
        return Error(f"{setting} = {path!r} is not callable.", id=error_id)
    return None


@register()
def billing_settings_check(app_configs, **kwargs):
    problems = []
    providers = getattr(settings, "BILLING_PROVIDERS", None)
    if not providers:
        problems.append(Error("BILLING_PROVIDERS is empty.", id="billing.E001"))
    for slug, path in (providers or {}).items():
        if problem := _import_problem(f"BILLING_PROVIDERS['{slug}']", path, "billing.E002"):
            problems.append(problem)
    problems += _subscriber_problems()
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
    problems += _ecc_backend_check()
    return problems


def _subscriber_problems() -> list[Error]:
    """Every in-project outbox subscriber (topic -> name -> dotted path) imports to a callable; every external
    subscriber has a name and an http(s) URL. The URL and secret are never put into a message."""
    problems: list[Error] = []
    internal = getattr(settings, "BILLING_OUTBOX_INTERNAL_SUBSCRIBERS", {})
    if not isinstance(internal, dict):
        return [Error("BILLING_OUTBOX_INTERNAL_SUBSCRIBERS must map topic -> {name: dotted path}.", id="billing.E005")]
    for topic, handlers in internal.items():
        if not isinstance(handlers, dict):
            problems.append(
                Error(
                    f"BILLING_OUTBOX_INTERNAL_SUBSCRIBERS['{topic}'] must map name -> dotted path.", id="billing.E005"
                )
            )
            continue
        for name, path in handlers.items():
            setting = f"BILLING_OUTBOX_INTERNAL_SUBSCRIBERS['{topic}']['{name}']"
            if problem := _import_problem(setting, path, "billing.E005"):
                problems.append(problem)
    external = getattr(settings, "BILLING_EXTERNAL_SUBSCRIBERS", [])
    if not isinstance(external, list):
        return [*problems, Error("BILLING_EXTERNAL_SUBSCRIBERS must be a JSON list.", id="billing.E006")]
    for index, entry in enumerate(external):
        if not isinstance(entry, dict) or not entry.get("name"):
            problems.append(Error(f"BILLING_EXTERNAL_SUBSCRIBERS[{index}] has no name.", id="billing.E006"))
            continue
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(
                Error(f"BILLING_EXTERNAL_SUBSCRIBERS '{entry['name']}' needs an http(s) url.", id="billing.E006")
            )
    return problems


def _ecc_backend_check() -> list:
    """Quote signing goes through eth-keys, which uses coincurve (libsecp256k1) when it imports and falls back
    to pure Python otherwise: the same signatures, ~20x the CPU per checkout."""
    from billing.chain.quote import ecc_backend_name

    backend = ecc_backend_name()
    if backend == "CoinCurveECCBackend":
        return []
    return [
        Warning(
            f"eth-keys signs with {backend} (pure Python): every checkout pays for a slow ECDSA signature.",
            hint="Install coincurve (requirements.txt) and unset ECC_BACKEND_CLASS.",
            id="billing.W002",
        )
    ]
