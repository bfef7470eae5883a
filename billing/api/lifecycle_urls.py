"""Checkout and contract webhooks (payment lifecycle)."""

from django.urls import path

from billing.api.checkout import CheckoutCreateView, CheckoutDetailView, CheckoutTxView
from billing.api.webhooks import ContractWebhookView

urlpatterns = [
    path("checkout", CheckoutCreateView.as_view(), name="checkout-create"),
    path("checkout/<uuid:public_id>", CheckoutDetailView.as_view(), name="checkout-detail"),
    path("checkout/<uuid:public_id>/tx", CheckoutTxView.as_view(), name="checkout-tx"),
    path("webhooks/contracts/<slug:contract_slug>", ContractWebhookView.as_view(), name="contract-webhook"),
]
