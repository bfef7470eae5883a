"""/v1/auth/... : API token issue."""

from django.urls import path

from billing_project.auth_views import ObtainTokenView

urlpatterns = [
    path("token", ObtainTokenView.as_view(), name="auth-token"),
]
