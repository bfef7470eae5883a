"""/v1/profile/... : wallets linked by SIWE."""

from django.urls import path

from profiles.api import views

urlpatterns = [
    path("wallets", views.WalletListView.as_view(), name="profile-wallets"),
    path("wallets/siwe/nonce", views.SiweNonceView.as_view(), name="profile-siwe-nonce"),
    path("wallets/siwe/verify", views.SiweVerifyView.as_view(), name="profile-siwe-verify"),
]
