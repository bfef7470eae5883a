"""/v1/profile/... : wallets linked by SIWE."""

urlpatterns: list = []
