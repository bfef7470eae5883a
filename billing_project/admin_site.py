"""The console's AdminSite (django-unfold's) and the admin building blocks shared by the project apps.

Kept here (not in an app) because `profiles` must not import `billing`, yet both need the same rules:
ledger-style rows are read-only, and secret-bearing values are write-only.

Console pages (the Payments workspace, later Overview and Tariffs) are plain views mounted under the
admin: each app hands its URL patterns to `site.register_console_urls()` from its `admin.py`, so this
module imports no app and `billing` never learns about `overview`.
"""

from __future__ import annotations

import re
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.core.paginator import Paginator
from django.urls import include, path
from django.utils.functional import cached_property
from unfold.admin import TabularInline
from unfold.sites import UnfoldAdminSite

from billing_project.logging import mask_url


class ConsoleAdminSite(UnfoldAdminSite):
    site_header = "Billing console"
    site_title = "Billing console"
    index_title = "Overview"

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        self._console_urls: list = []
        self._index_view = None

    def register_index(self, view) -> None:
        """The page the admin index shows to the console's staff (overview's Overview, registered from
        overview/admin.py). The view returns None for a user it is not for: they get Unfold's app list."""
        self._index_view = view

    def index(self, request, extra_context=None):
        if self._index_view is not None:
            response = self._index_view(request)
            if response is not None:
                return response
        return super().index(request, extra_context)

    def register_console_urls(self, prefix: str, patterns: list) -> None:
        """Mount an app's console pages at /admin/<prefix>; every view is wrapped by `admin_view`
        (staff login, CSRF, never cached), and checks its role itself (billing_project.console)."""
        wrapped = []
        for pattern in patterns:
            pattern.callback = self.admin_view(pattern.callback)
            wrapped.append(pattern)
        self._console_urls.append(path(prefix, include(wrapped)))

    def extra_urls(self) -> list:
        # Called by UnfoldAdminSite.get_urls before the model admins' patterns, so a console prefix wins.
        return list(self._console_urls)


def mask_secret_url(url: str | None) -> str:
    """One stored URL (an RPC endpoint, a fallback RPC) for a page: `mask_url`'s scheme://host[:port][/****];
    a value that is not one URL shows as **** (it may be a key pasted in the wrong field)."""
    if not url:
        return ""
    masked = mask_url(url.strip())
    return masked if re.fullmatch(r"[a-z][a-z0-9+.-]*://[^\s/]+(/\*{4})?", masked, re.I) else "****"


def format_amount(value: Decimal | None, symbol: str = "") -> str:
    """Exact decimal without trailing zeros: Decimal('10.000000') -> '10'. Never goes through float."""
    if value is None:
        return "-"
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol}".strip()


class WriteOnlyInput(forms.TextInput):
    """A text input that never renders a value back, not even after a failed POST."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


def write_only_field(label: str, *, max_length: int = 500, password: bool = False, **kwargs) -> forms.CharField:
    widget = forms.PasswordInput(render_value=False) if password else WriteOnlyInput(attrs={"autocomplete": "off"})
    return forms.CharField(label=label, required=False, max_length=max_length, widget=widget, **kwargs)


class WriteOnlyFieldsMixin:
    """Hide the write-only form fields from users who may only view: there is nothing to write."""

    write_only_fields: tuple[str, ...] = ()

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if isinstance(self, admin.options.InlineModelAdmin):
            can_write = self.has_change_permission(request, obj) or self.has_add_permission(request, obj)
        elif obj is not None:
            can_write = self.has_change_permission(request, obj)
        else:
            can_write = self.has_add_permission(request)
        if can_write:
            return fieldsets
        return [(name, {**opts, "fields": self._drop_write_only(opts["fields"])}) for name, opts in fieldsets]

    def _drop_write_only(self, fields):
        kept = []
        for field in fields:
            if isinstance(field, (list, tuple)):
                row = tuple(f for f in field if f not in self.write_only_fields)
                if row:
                    kept.append(row)
            elif field not in self.write_only_fields:
                kept.append(field)
        return kept


class ReadOnlyAdminMixin:
    """Rows written only by services (ledger, chain mirror, outbox): viewable, never added, edited or deleted here.

    View permission still decides who sees them, so support users keep read access.
    """

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        if self.fieldsets:
            return flatten_fieldsets(self.fieldsets)
        if self.fields:
            return list(self.fields)
        opts = self.model._meta
        names = [f.name for f in opts.concrete_fields] + [f.name for f in opts.many_to_many]
        return names + [f for f in self.readonly_fields if f not in names]


class ReadOnlyTabularInline(ReadOnlyAdminMixin, TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows: on a ledger of millions, an exact COUNT(*) per page view costs more than the
    page itself. Past the cap the changelist shows CAP rows' worth of pages; filters narrow the rest."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP].count()
