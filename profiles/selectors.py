"""Reads of profile data (billing imports these; profiles imports no other project app)."""

from __future__ import annotations

from django.db.models import QuerySet

from profiles.models import Wallet


def wallets_for_user(*, user) -> QuerySet[Wallet]:
    return Wallet.objects.filter(user=user).order_by("-is_primary", "-verified_at", "-id")


def wallet_primary_for_user(*, user) -> Wallet | None:
    """The confirmed wallet shown in me/settings: the primary one (the last linked)."""
    return Wallet.objects.filter(user=user, is_primary=True).first()
