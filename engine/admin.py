"""Runs in each organization's admin: read-only, with their steps."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html

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
        "view_link",
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
    change_form_template = "runs/admin_change_form.html"

    def get_urls(self):
        # The run view (engine/runs/pages.py): the diagram, timeline, live steps, lineage, logs.
        from engine.runs.pages import run_view

        view = self.admin_site.admin_view(
            lambda request, object_id: run_view(request, object_id, model_admin=self)
        )
        return [
            path("<str:object_id>/view/", view, name="engine_run_view"),
            *super().get_urls(),
        ]

    @admin.display(description="view")
    def view_link(self, obj):
        url = reverse(f"{self.admin_site.name}:engine_run_view", args=[obj.pk])
        return format_html('<a href="{}">Run view</a>', url)

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
