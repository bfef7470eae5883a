"""Roles are Django groups. `billing_admin` may change everything in billing; `support` may read it."""

from __future__ import annotations

BILLING_ADMIN = "billing_admin"
SUPPORT = "support"
ROLE_APPS = ("billing", "profiles", "notifications", "auditlog", "authtoken")


def sync_role_permissions(**kwargs) -> None:
    """Give each role its model permissions; run after every migrate so new models are covered."""
    from django.contrib.auth.models import Group, Permission

    admin_group, _ = Group.objects.get_or_create(name=BILLING_ADMIN)
    support_group, _ = Group.objects.get_or_create(name=SUPPORT)
    perms = Permission.objects.filter(content_type__app_label__in=ROLE_APPS)
    admin_group.permissions.set(perms)
    support_group.permissions.set(perms.filter(codename__startswith="view_"))


def user_has_role(user, role: str) -> bool:
    if not user or not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    cache = getattr(user, "_role_cache", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        user._role_cache = cache
    return role in cache


def is_billing_admin(user) -> bool:
    return user_has_role(user, BILLING_ADMIN)


def is_support(user) -> bool:
    """Support or above: may read overview, transactions, subscriptions."""
    return user_has_role(user, SUPPORT) or user_has_role(user, BILLING_ADMIN)
