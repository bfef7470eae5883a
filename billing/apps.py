from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_migrate, post_save

        # audit and checks register the audited models and the system checks; tasks registers the Celery
        # tasks that billing.dispatch sends by name.
        from billing import audit, checks, tasks  # noqa: F401
        from billing.roles import sync_role_permissions

        post_migrate.connect(sync_role_permissions, dispatch_uid="billing_sync_roles")

        # The chain client tells ops about endpoints going down and failovers through these hooks.
        from billing.chain import rpc
        from billing.services.notices import rpc_endpoint_down_notice, rpc_failover_notice

        rpc.endpoint_down_hook = rpc_endpoint_down_notice
        rpc.failover_hook = rpc_failover_notice

        # The webhook request caches its contract per process (a short TTL); a save here drops it at once.
        from billing.models import Network, PaymentContract
        from billing.services.webhooks import webhook_contracts_forget

        for model in (PaymentContract, Network):
            for signal in (post_save, post_delete):
                signal.connect(webhook_contracts_forget, sender=model, dispatch_uid=f"webhook_cache_{model.__name__}")

        # Checkout caches plans with their payment options and the networks' health per process (short TTLs);
        # a save of any row they are made of drops them at once in this process.
        from django.db.models.signals import m2m_changed

        from billing.models import CryptoConfig, NetworkFallback, PaymentProvider, Plan, RpcEndpoint, Token
        from billing.services.checkout import checkout_caches_forget

        for model in (
            Plan,
            PaymentContract,
            PaymentProvider,
            Network,
            Token,
            RpcEndpoint,
            CryptoConfig,
            NetworkFallback,
        ):
            for signal in (post_save, post_delete):
                signal.connect(checkout_caches_forget, sender=model, dispatch_uid=f"checkout_cache_{model.__name__}")
        for through in (PaymentProvider.networks.through, PaymentProvider.supported_tokens.through):
            m2m_changed.connect(
                checkout_caches_forget, sender=through, dispatch_uid=f"checkout_cache_{through.__name__}"
            )
