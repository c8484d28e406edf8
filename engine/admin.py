"""Runs in each organization's admin: read-only, with their steps."""

from __future__ import annotations

from django.contrib import admin

from engine.models import Run, RunEvent
from tenants.tenant_admin import (
    TenantModelAdmin,
    TenantReadOnlyInline,
    request_role,
    tenant_admin_site,
)


class RunEventInline(TenantReadOnlyInline):
    model = RunEvent
    fields = ("seq", "kind", "name", "outcome", "duration_ms", "error", "data")
    readonly_fields = fields


@admin.register(Run, site=tenant_admin_site)
class RunAdmin(TenantModelAdmin):
    list_display = (
        "started_at",
        "orchestrator_slug",
        "trigger",
        "status",
        "duration_ms",
        "principal",
    )
    list_filter = ("status", "trigger", "orchestrator_slug")
    search_fields = ("orchestrator_slug", "principal", "id")
    readonly_fields = (
        "id",
        "orchestrator",
        "orchestrator_slug",
        "config_hash",
        "conversation_id",
        "trigger",
        "principal",
        "status",
        "input",
        "output",
        "usage",
        "error",
        "started_at",
        "finished_at",
        "duration_ms",
    )
    inlines = [RunEventInline]

    def get_queryset(self, request):
        # The runs' privacy rule (engine/runs/selectors.py): members see their own runs only.
        from engine.runs.selectors import runs_visible

        return runs_visible(
            principal=request.user, role=request_role(request), org=getattr(request, "org", None)
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
