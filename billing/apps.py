from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_migrate, post_save

        from billing import audit, checks  # noqa: F401  (registers audit models and system checks)
        from billing.roles import sync_role_permissions

        post_migrate.connect(sync_role_permissions, dispatch_uid="billing_sync_roles")

        # The webhook request caches its contract per process (a short TTL); a save here drops it at once.
        from billing.models import Network, PaymentContract
        from billing.services.webhooks import webhook_contracts_forget

        for model in (PaymentContract, Network):
            for signal in (post_save, post_delete):
                signal.connect(webhook_contracts_forget, sender=model, dispatch_uid=f"webhook_cache_{model.__name__}")
