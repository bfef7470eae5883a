from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from notifications.models import Notification


@extend_schema_field({"type": "object", "additionalProperties": True})
class _Data(serializers.JSONField):
    pass


class NotificationSerializer(serializers.ModelSerializer):
    data = _Data(read_only=True)

    class Meta:
        model = Notification
        fields = ["id", "kind", "title", "body", "data", "status", "read_at", "sent_at", "created_at"]
        read_only_fields = fields
