"""System plugins in the operators' admin (/admin/): upload, enable, disable, deprecate, approve."""

from __future__ import annotations

from django.contrib import admin

from plugins.admin_forms import PluginVersionAdminMixin
from plugins.system.models import SystemPluginVersion


@admin.register(SystemPluginVersion)
class SystemPluginVersionAdmin(PluginVersionAdminMixin, admin.ModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return (
            obj is None
            and request.user.is_staff
            and request.user.has_perm("system_plugins.change_systempluginversion")
        )
