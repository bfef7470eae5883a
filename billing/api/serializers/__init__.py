"""Serializers of the billing API, one module per audience: `public` (anonymous plans catalog), `me` (the
customer's own view), `admin` (catalog, ledger, operations) and `fields` (what they share). Field names follow
docs/reference/api/contract.md. The names are re-exported here for the views."""

from billing.api.serializers.admin import (  # noqa: F401
    SECRET_FIELDS,
    AuditEntrySerializer,
    ChainEventSerializer,
    ContractSerializer,
    CryptoConfigSerializer,
    FallbackNetworksField,
    NetworkSerializer,
    OperatorActionResultSerializer,
    OperatorActionSerializer,
    OperatorTransactionSerializer,
    OutboxDeliverySerializer,
    PlanSerializer,
    PriceTokenField,
    ProbeResultSerializer,
    ProviderSerializer,
    RpcEndpointSerializer,
    TestConnectionResultSerializer,
    TokenSerializer,
    TransactionDetailSerializer,
    TransactionSerializer,
    TransactionStatusChangeSerializer,
    WithdrawResultSerializer,
    WithdrawSerializer,
    mask_changes,
)
from billing.api.serializers.fields import (  # noqa: F401
    AMOUNT_SCHEMA,
    DISPLAY_SCHEMA,
    MASK,
    AbiField,
    CatalogWriteMixin,
    LimitsField,
    MaskedUrlField,
    ObjectField,
    SafeJSONField,
    SlugRelatedField,
    TokenAmountField,
    TokenKeyField,
    is_masked_echo,
    raise_as_api_errors,
)
from billing.api.serializers.me import (  # noqa: F401
    DebtSerializer,
    HistoryItemSerializer,
    LastPaymentSerializer,
    MeSettingsSerializer,
    PlanBriefSerializer,
    QueuedPeriodSerializer,
    SubscriptionSerializer,
    WalletBriefSerializer,
    debt_of,
)
from billing.api.serializers.public import (  # noqa: F401
    PaymentOptionSerializer,
    PaymentOptionTokenSerializer,
    PublicPlanSerializer,
)
