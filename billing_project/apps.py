from django.contrib.admin.apps import AdminConfig


class ConsoleAdminConfig(AdminConfig):
    default_site = "billing_project.admin_site.ConsoleAdminSite"

    def ready(self):
        super().ready()  # autodiscover: every app's admin.py has run
        # Third-party admins (auth, auditlog) re-registered on Unfold's ModelAdmin, so every page has the theme.
        # The component gallery shows billing's and overview's parts together, so it is mounted here.
        from django.contrib import admin
        from django.urls import path

        from billing_project import (
            admin_third_party,  # noqa: F401
            gallery,
        )

        admin.site.register_console_urls("gallery/", [path("", gallery.gallery_page, name="console-gallery")])
