"""Plans catalog, me/*, admin/* endpoints (paths fixed by docs/reference/api/contract.md; no trailing slashes)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from billing.api import views_admin, views_me, views_public

router = SimpleRouter(trailing_slash=False)
router.register("admin/plans", views_admin.PlanAdminViewSet, basename="admin-plan")
router.register("admin/providers", views_admin.ProviderAdminViewSet, basename="admin-provider")
router.register("admin/contracts", views_admin.ContractAdminViewSet, basename="admin-contract")
router.register("admin/networks", views_admin.NetworkAdminViewSet, basename="admin-network")
router.register("admin/tokens", views_admin.TokenAdminViewSet, basename="admin-token")
router.register("admin/transactions", views_admin.TransactionAdminViewSet, basename="admin-transaction")

urlpatterns = [
    path("plans", views_public.PlanCatalogView.as_view(), name="plans"),
    path("me/settings", views_me.MeSettingsView.as_view(), name="me-settings"),
    path("me/history", views_me.MeHistoryView.as_view(), name="me-history"),
    path("me/subscription", views_me.MeSubscriptionView.as_view(), name="me-subscription"),
    path("me/subscription/cancel", views_me.MeSubscriptionCancelView.as_view(), name="me-subscription-cancel"),
    path("admin/crypto-config", views_admin.CryptoConfigView.as_view(), name="admin-crypto-config"),
    path(
        "admin/crypto-config/test-connection",
        views_admin.TestConnectionView.as_view(),
        name="admin-crypto-config-test-connection",
    ),
    path("admin/audit", views_admin.AuditTimelineView.as_view(), name="admin-audit"),
    path("admin/outbox", views_admin.OutboxListView.as_view(), name="admin-outbox"),
    path("admin/outbox/<int:id>/replay", views_admin.OutboxReplayView.as_view(), name="admin-outbox-replay"),
    *router.urls,
]
