"""Conversations in each organization's admin: read-only (they belong to their owners)."""

from __future__ import annotations

from django.contrib import admin

from chat.models import Conversation, Message
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import (
    TenantModelAdmin,
    TenantReadOnlyInline,
    request_role,
    tenant_admin_site,
)


class MessageInline(TenantReadOnlyInline):
    model = Message
    fields = ("seq", "role", "status", "content", "usage", "error", "run")
    readonly_fields = fields


@admin.register(Conversation, site=tenant_admin_site)
class ConversationAdmin(TenantModelAdmin):
    list_display = (
        "updated_at",
        "title",
        "orchestrator",
        "owner_user_id",
        "owner_api_key_id",
        "last_seq",
    )
    search_fields = ("title",)
    readonly_fields = (
        "id",
        "orchestrator",
        "owner_user_id",
        "owner_api_key_id",
        "title",
        "metadata",
        "last_seq",
        "created_at",
        "updated_at",
    )
    inlines = [MessageInline]

    # Conversations are private to their owners: only admins see them here.
    def has_module_permission(self, request) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_view_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
