"""Plugins in each organization's admin (/orgs/<slug>/admin/): its own versions and MCP servers."""

from __future__ import annotations

from django.contrib import admin

from plugins.admin_forms import PluginVersionAdminMixin
from plugins.models import McpServer, PluginVersion
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import TenantModelAdmin, request_role, tenant_admin_site


@admin.register(PluginVersion, site=tenant_admin_site)
class PluginVersionAdmin(PluginVersionAdminMixin, TenantModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        # The changelist's actions need "change"; the version itself stays read-only.
        return obj is None and role_at_least(request_role(request), Role.ADMIN)


@admin.register(McpServer, site=tenant_admin_site)
class McpServerAdmin(TenantModelAdmin):
    list_display = ("name", "url", "status", "protocol_version", "credential_hint", "updated_at")
    readonly_fields = (
        "name",
        "url",
        "mode",
        "allowed_tools",
        "credential_hint",
        "protocol_version",
        "tools",
        "tools_hash",
        "status",
        "pending_tools",
        "pending_hash",
    )

    # Registration talks to the server under the egress policy: through the REST API's service.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
