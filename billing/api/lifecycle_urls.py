"""Checkout and contract webhooks (payment lifecycle)."""

urlpatterns: list = []
