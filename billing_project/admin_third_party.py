"""Django's auth and django-auditlog admins, re-registered on Unfold's ModelAdmin (same behaviour, the
console's theme). Imported by ConsoleAdminConfig.ready() after every app's admin.py has run."""

from __future__ import annotations

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from unfold.admin import ModelAdmin
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm

for model in (User, Group, LogEntry):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(User)
class ConsoleUserAdmin(UserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm


@admin.register(Group)
class ConsoleGroupAdmin(GroupAdmin, ModelAdmin):
    pass


@admin.register(LogEntry)
class ConsoleLogEntryAdmin(LogEntryAdmin, ModelAdmin):
    """Read-only audit timeline. Secret fields are never logged (billing/audit.py excludes them)."""
