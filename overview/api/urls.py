"""/v1/billing/overview/... (paths fixed by the API contract; no trailing slashes)."""

from django.urls import path

from overview.api import views

urlpatterns = [
    path("dashboard", views.DashboardView.as_view(), name="overview-dashboard"),
    path("revenue", views.RevenueView.as_view(), name="overview-revenue"),
    path("networks", views.NetworksView.as_view(), name="overview-networks"),
    path("payouts", views.PayoutsView.as_view(), name="overview-payouts"),
    path("incidents", views.IncidentsView.as_view(), name="overview-incidents"),
    path("experiments", views.ExperimentsView.as_view(), name="overview-experiments"),
]
