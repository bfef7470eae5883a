from django.contrib import admin


class ConsoleAdminSite(admin.AdminSite):
    site_header = "Billing console"
    site_title = "Billing console"
    index_title = "Operations"
