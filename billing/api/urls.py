"""/v1/billing/... : the payment lifecycle (checkout, webhooks) and the rest of the billing API."""

from django.urls import include, path

urlpatterns = [
    path("", include("billing.api.lifecycle_urls")),
    path("", include("billing.api.resource_urls")),
]
