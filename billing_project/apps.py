from django.contrib.admin.apps import AdminConfig


class ConsoleAdminConfig(AdminConfig):
    default_site = "billing_project.admin_site.ConsoleAdminSite"
