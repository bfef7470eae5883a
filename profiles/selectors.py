"""Reads of profile data (billing imports these; profiles imports no other project app)."""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet

from profiles.models import QuotaGrant, Wallet


def wallets_for_user(*, user) -> QuerySet[Wallet]:
    return Wallet.objects.filter(user=user).order_by("-is_primary", "-verified_at", "-id")


def wallet_primary_for_user(*, user) -> Wallet | None:
    """The confirmed wallet shown in me/settings: the primary one (the last linked)."""
    return Wallet.objects.filter(user=user, is_primary=True).first()


def quota_grant_for_user(*, user_id: int) -> QuotaGrant | None:
    """The quota the user's subscription granted (written by the billing.subscription.* receiver), if any."""
    return QuotaGrant.objects.filter(user_id=user_id).first()


def wallet_is_verified_sql(*, user_id: int, address: str) -> tuple[str, list]:
    """`wallet_is_verified_for_user` as one SQL boolean expression and its parameters, for a caller that reads it
    inside a statement it sends anyway (a checkout's idempotency-key lookup), saving a round trip."""
    table = connection.ops.quote_name(Wallet._meta.db_table)
    sql = (
        f"EXISTS (SELECT 1 FROM {table} w WHERE w.user_id = %s AND UPPER(w.address::text) = UPPER(%s)"  # noqa: S608
        " AND w.verified_at IS NOT NULL)"
    )
    return sql, [user_id, address]


def wallet_is_verified_for_user(*, user, address: str) -> bool:
    """Whether `address` is one of the user's SIWE-verified wallets (any chain: an EVM account is the same
    key everywhere). Addresses are compared case-insensitively (stored EIP-55)."""
    if not address:
        return False
    sql, params = wallet_is_verified_sql(user_id=user.pk, address=address)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)  # noqa: S608 - constants of this module; values are parameters
        return bool(cursor.fetchone()[0])
