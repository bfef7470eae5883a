from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from billing import audit, checks  # noqa: F401  (registers audit models and system checks)
        from billing.roles import sync_role_permissions

        post_migrate.connect(sync_role_permissions, dispatch_uid="billing_sync_roles")
