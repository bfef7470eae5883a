"""Admin for profiles: wallets, SIWE nonces and quota grants are read-only (written by sign-in and by the
plan.changed.v1 consumer); API tokens are listed without their keys for view-only staff."""

from __future__ import annotations

import json

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy
from unfold.admin import ModelAdmin
from unfold.views import ChangeList

from billing_project.admin_site import ReadOnlyAdminMixin
from profiles.models import ProcessedQuotaEvent, QuotaGrant, SiweNonce, Wallet


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("address", "user", "chain_id", "is_primary", "verified_at")
    list_filter = ("is_primary", "chain_id")
    list_select_related = ("user",)
    search_fields = ("address", "user__username", "user__email")
    date_hierarchy = "verified_at"
    raw_id_fields = ("user",)


@admin.register(SiweNonce)
class SiweNonceAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("nonce", "user", "created_at", "expires_at", "used_at")
    list_select_related = ("user",)
    search_fields = ("=nonce", "user__username")
    date_hierarchy = "created_at"
    show_full_result_count = False
    raw_id_fields = ("user",)


@admin.register(QuotaGrant)
class QuotaGrantAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("user", "plan_slug", "period_end", "last_event_at", "updated_at")
    list_filter = ("plan_slug",)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email", "plan_slug")
    raw_id_fields = ("user",)
    fields = ("user", "plan_slug", "limits_json", "period_end", "last_event_id", "last_event_at", "updated_at")

    @admin.display(description="Limits")
    def limits_json(self, obj: QuotaGrant) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.limits, indent=2, sort_keys=True))


@admin.register(ProcessedQuotaEvent)
class ProcessedQuotaEventAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("event_id", "user", "applied_at")
    list_select_related = ("user",)
    search_fields = ("=event_id", "user__username")
    date_hierarchy = "applied_at"
    show_full_result_count = False
    raw_id_fields = ("user",)


# DRF's TokenAdmin lists every key: anyone with view permission (the support role) could act as any user,
# a billing admin included. Only users who may change tokens see the key.
admin.site.unregister(TokenProxy)


class TokenChangeList(ChangeList):
    """Rows link by the user's id (as DRF's TokenChangeList does), never by the key that is the token's pk."""

    def url_for_result(self, result):
        opts = self.opts
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=(quote(result.user.pk),),
            current_app=self.model_admin.admin_site.name,
        )


@admin.register(TokenProxy)
class MaskedTokenAdmin(ModelAdmin, TokenAdmin):
    list_select_related = ("user",)

    def get_changelist(self, request, **kwargs):
        return TokenChangeList

    def get_list_display(self, request):
        key = "key" if self.has_change_permission(request) else "masked_key"
        return (key, "user", "created")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user",)
        return ("user", "key" if self.has_change_permission(request, obj) else "masked_key", "created")

    def get_readonly_fields(self, request, obj=None):
        return ("user", "key", "masked_key", "created") if obj is not None else ()

    def has_view_permission(self, request, obj=None):
        # A token's str() is its key and titles the change and history pages: view-only staff get the list only.
        if obj is not None and not self.has_change_permission(request, obj):
            return False
        return super().has_view_permission(request, obj)

    def get_list_display_links(self, request, list_display):
        return super().get_list_display_links(request, list_display) if self.has_change_permission(request) else None

    @admin.display(description="Key")
    def masked_key(self, obj) -> str:
        return f"{obj.key[:4]}…" if obj.key else "-"
