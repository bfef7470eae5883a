"""Permission classes for the billing API. Roles are Django groups (billing/roles.py).

Every view names its permission classes explicitly, so the access policy is readable from the code and
matches docs/reference/api/access-policy.md, which a test checks against the live URL patterns.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from billing.roles import is_billing_admin, is_support


class IsBillingAdmin(BasePermission):
    """Writes to the catalog and operator actions."""

    message = "This needs the billing_admin role."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_billing_admin(request.user))


class IsSupport(BasePermission):
    """Support or billing_admin: reads of overview, transactions, audit, outbox."""

    message = "This needs the support or billing_admin role."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and is_support(request.user))


class IsBillingAdminOrSupportReadOnly(BasePermission):
    """billing_admin may do everything; support may only read (403 on every write)."""

    message = "Support may read but not change billing data; writes need the billing_admin role."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return is_support(user)
        return is_billing_admin(user)


class IsOwner(BasePermission):
    """Object-level: the row belongs to the caller (querysets are already scoped; this is the backstop)."""

    def has_object_permission(self, request, view, obj) -> bool:
        return getattr(obj, "user_id", None) == request.user.pk
