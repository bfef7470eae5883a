"""Admin for notifications: rows are written and delivered by tasks, so the admin only reads them."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html
from unfold.admin import ModelAdmin

from billing_project.admin_site import ReadOnlyAdminMixin
from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("id", "created_at", "audience", "kind", "user", "title", "status", "attempts", "sent_at", "read_at")
    list_filter = ("status", "audience", "kind")
    list_select_related = ("user",)
    search_fields = ("=dedupe_key", "kind", "title", "user__username", "user__email")
    date_hierarchy = "created_at"
    show_full_result_count = False
    raw_id_fields = ("user",)
    fields = (
        "audience",
        "user",
        "kind",
        "title",
        "body",
        "data_json",
        "dedupe_key",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
        "read_at",
    )

    @admin.display(description="Data")
    def data_json(self, obj: Notification) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True, default=str))
