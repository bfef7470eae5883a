# The ledger's single-column foreign-key indexes on user, provider, contract, network and token go: each of
# those columns leads a `<fk>, -created_at, -id` index (tx_user_created_idx, tx_provider_created_idx,
# tx_contract_created_idx, tx_network_created_idx, tx_token_created_idx) that serves every look-up by it,
# the PROTECT checks included, while every index costs a write per ledger INSERT and status UPDATE (the
# follower's bulk path updates thousands of rows per batch). Only the indexes are dropped, concurrently: the
# foreign-key constraints stay as they are (Django's AlterField would drop and re-validate them).

from django.conf import settings
from django.db import migrations, models

FK_INDEXES = {
    "user": ("billing_paymenttransaction_user_id_1afe135f", "user_id", settings.AUTH_USER_MODEL, True),
    "provider": ("billing_paymenttransaction_provider_id_5719b40e", "provider_id", "billing.paymentprovider", True),
    "contract": ("billing_paymenttransaction_contract_id_81ab6638", "contract_id", "billing.paymentcontract", False),
    "network": ("billing_paymenttransaction_network_id_c03e4105", "network_id", "billing.network", False),
    "token": ("billing_paymenttransaction_token_id_95ad5093", "token_id", "billing.token", False),
}
RELATED_NAME = {"user": "payment_transactions"}


def _field(name: str, to: str, nullable: bool) -> models.ForeignKey:
    return models.ForeignKey(
        to=to,
        on_delete=models.deletion.PROTECT,
        related_name=RELATED_NAME.get(name, "transactions"),
        db_index=False,
        **({"null": True, "blank": True} if nullable else {}),
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0019_revenue_rollup_early_exit"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="paymenttransaction", name=name, field=_field(name, to, nullable))
                for name, (_index, _column, to, nullable) in FK_INDEXES.items()
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{index}" '
                    f'ON "billing_paymenttransaction" ("{column}")',
                )
                for index, column, _to, _nullable in FK_INDEXES.values()
            ],
        ),
    ]
