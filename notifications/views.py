"""GET /v1/notifications: the caller's own notifications, newest first."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated

from notifications.models import Notification
from notifications.serializers import NotificationSerializer


class NotificationCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 200


@extend_schema(tags=["me"], summary="Own notifications, newest first (cursor-paginated)")
class NotificationListView(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = NotificationSerializer
    pagination_class = NotificationCursorPagination
    filter_backends: list = []

    def get_queryset(self):
        return Notification.objects.filter(user=self.request.user, audience=Notification.Audience.USER)
