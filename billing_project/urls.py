from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from billing_project import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("v1/auth/", include("billing_project.api_urls")),
    path("v1/billing/overview/", include("overview.api.urls")),
    path("v1/billing/", include("billing.api.urls")),
    path("v1/profile/", include("profiles.api.urls")),
    path("v1/notifications", include("notifications.urls")),
]

handler500 = "billing_project.error_views.handler500"
handler404 = "billing_project.error_views.handler404"
