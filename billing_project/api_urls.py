"""/v1/auth/... : API token issue."""

urlpatterns: list = []
