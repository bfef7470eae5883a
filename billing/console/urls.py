"""/admin/payments/...: names are `admin:console-payments-*` (the admin site's namespace)."""

from django.urls import path

from billing.console import tariffs, views

PREFIX = "console-payments"

urlpatterns = [
    path("", views.payments_index, name=PREFIX),
    path("providers/", views.providers_tab, name=f"{PREFIX}-providers"),
    path("providers/new/", views.provider_form, name=f"{PREFIX}-provider-new"),
    path("providers/create/", views.provider_save, name=f"{PREFIX}-provider-create"),
    path("providers/preview/", views.provider_preview, name=f"{PREFIX}-provider-preview"),
    path("providers/<slug:slug>/", views.provider_drawer, name=f"{PREFIX}-provider"),
    path("providers/<slug:slug>/edit/", views.provider_form, name=f"{PREFIX}-provider-edit"),
    path("providers/<slug:slug>/save/", views.provider_save, name=f"{PREFIX}-provider-save"),
    path("contracts/", views.contracts_tab, name=f"{PREFIX}-contracts"),
    path("contracts/<slug:slug>/chain/", views.contract_chain, name=f"{PREFIX}-contract-chain"),
    path("contracts/<slug:slug>/events/", views.contract_events, name=f"{PREFIX}-contract-events"),
    path("contracts/<slug:slug>/withdraw/", views.contract_withdraw, name=f"{PREFIX}-contract-withdraw"),
    path("transactions/", views.transactions_tab, name=f"{PREFIX}-transactions"),
    path("transactions/<uuid:public_id>/", views.transaction_drawer, name=f"{PREFIX}-transaction"),
    path("transactions/<uuid:public_id>/row/", views.transaction_row, name=f"{PREFIX}-transaction-row"),
    path("transactions/<uuid:public_id>/refund/", views.transaction_refund, name=f"{PREFIX}-transaction-refund"),
    path(
        "transactions/<uuid:public_id>/reprocess/",
        views.transaction_reprocess,
        name=f"{PREFIX}-transaction-reprocess",
    ),
    path(
        "transactions/<uuid:public_id>/retry-refund/",
        views.transaction_retry_refund,
        name=f"{PREFIX}-transaction-retry-refund",
    ),
    path("crypto/", views.crypto_tab, name=f"{PREFIX}-crypto"),
    path("crypto/config/", views.crypto_config_save, name=f"{PREFIX}-crypto-config"),
    path("crypto/networks/<slug:slug>/", views.network_save, name=f"{PREFIX}-network-save"),
    path("crypto/test-connection/", views.test_connection, name=f"{PREFIX}-test-connection"),
    path("crypto/changelog/", views.crypto_changelog, name=f"{PREFIX}-crypto-changelog"),
    path("operations/", views.operations_tab, name=f"{PREFIX}-operations"),
    path("operations/outbox/<int:pk>/replay/", views.outbox_replay, name=f"{PREFIX}-outbox-replay"),
    path("operations/inbound/<int:pk>/reprocess/", views.inbound_reprocess, name=f"{PREFIX}-inbound-reprocess"),
]

TARIFFS = "console-tariffs"

# /admin/tariffs/...: names `admin:console-tariffs-*`.
tariffs_urlpatterns = [
    path("", tariffs.tariffs_page, name=TARIFFS),
    path("matrix/", tariffs.limits_matrix, name=f"{TARIFFS}-matrix"),
    path("plans/<slug:slug>/", tariffs.plan_editor, name=f"{TARIFFS}-plan"),
]
