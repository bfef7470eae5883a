from __future__ import annotations

from rest_framework.permissions import BasePermission

from billing import selectors as billing


class CanReadOverview(BasePermission):
    """support or billing_admin (docs/reference/api/access-policy.md)."""

    message = "This needs the support or billing_admin role."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and billing.user_can_read_overview(request.user))
