"""The Overview in the console: the admin index for support and billing_admin, and its lazy parts under
/admin/overview/ (names `admin:console-overview-*`). Registered here so `billing` never imports `overview`."""

from django.contrib import admin
from django.urls import path

from overview import console

PREFIX = "console-overview"

admin.site.register_index(console.overview_index)
admin.site.register_console_urls(
    "overview/",
    [
        path("", console.overview_page, name=PREFIX),
        path("revenue/", console.revenue_part, name=f"{PREFIX}-revenue"),
        path("networks/", console.networks_part, name=f"{PREFIX}-networks"),
        path("payouts/", console.payouts_part, name=f"{PREFIX}-payouts"),
        path("incidents/", console.incidents_part, name=f"{PREFIX}-incidents"),
        path("plans/", console.plans_part, name=f"{PREFIX}-plans"),
    ],
)
