"""Limits and usage in both admins: overrides and key limits for operators, usage charts for
operators (every organization) and for each organization's admins (its own)."""

from __future__ import annotations

from django.contrib import admin

from tenants.limits import plans, services, usage
from tenants.limits.models import ORG_FIELDS, ApiKeyLimits, OrganizationLimits, UsageDay
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import TenantModelAdmin, request_role, tenant_admin_site

CHART_DAYS = 30


def chart_context(*, org_id: int | None) -> dict:
    """Bars for tokens and requests per day, and the top orchestrators and keys by tokens."""
    series = usage.usage_by_day(org_id=org_id, days=CHART_DAYS)
    top_tokens = max((d["total_tokens"] for d in series), default=0) or 1
    top_requests = max((d["requests"] for d in series), default=0) or 1
    for day in series:
        day["tokens_pct"] = round(100 * day["total_tokens"] / top_tokens, 1)
        day["requests_pct"] = round(100 * day["requests"] / top_requests, 1)
    return {
        "usage_series": series,
        "usage_max_tokens": top_tokens,
        "usage_max_requests": top_requests,
        "usage_top_orchestrators": usage.usage_top(org_id=org_id, dimension="orchestrator"),
        "usage_top_keys": usage.usage_top(org_id=org_id, dimension="key"),
        "usage_days": CHART_DAYS,
    }


@admin.register(OrganizationLimits)
class OrganizationLimitsAdmin(admin.ModelAdmin):
    list_display = ("organization", "requests_per_minute", "tokens_per_day", "note", "updated_at")
    search_fields = ("organization__slug", "note")
    autocomplete_fields = ("organization",)
    fields = ("organization", *ORG_FIELDS, "note")

    def save_model(self, request, obj, form, change):
        if change:
            values = {name: form.cleaned_data.get(name) for name in ORG_FIELDS}
            services.organization_limits_set(org=obj.organization, actor=request.user, **values)
            OrganizationLimits.objects.filter(pk=obj.pk).update(note=obj.note)
            return
        super().save_model(request, obj, form, change)
        plans.limits_forget(org_id=obj.organization_id)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        plans.limits_forget(org_id=obj.organization_id)


@admin.register(ApiKeyLimits)
class ApiKeyLimitsAdmin(admin.ModelAdmin):
    list_display = ("api_key", "requests_per_minute", "tokens_per_day", "updated_at")
    search_fields = ("api_key__prefix", "api_key__organization__slug")
    raw_id_fields = ("api_key",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        plans.limits_forget(key_id=obj.api_key_id)


class _UsageChartMixin:
    change_list_template = "limits/usage_change_list.html"
    list_display = (
        "day",
        "principal",
        "orchestrator",
        "model",
        "requests",
        "total_tokens",
        "estimated_tokens",
    )
    list_filter = ("day",)
    search_fields = ("principal", "orchestrator", "model")
    date_hierarchy = "day"

    def chart_org_id(self, request) -> int | None:
        return None

    def changelist_view(self, request, extra_context=None):
        extra = chart_context(org_id=self.chart_org_id(request))
        extra.update(extra_context or {})
        return super().changelist_view(request, extra_context=extra)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageDay)
class UsageDayAdmin(_UsageChartMixin, admin.ModelAdmin):
    list_display = ("organization", *_UsageChartMixin.list_display)
    list_filter = ("day", "organization")


@admin.register(UsageDay, site=tenant_admin_site)
class TenantUsageDayAdmin(_UsageChartMixin, TenantModelAdmin):
    """The organization's own usage: admins and owners only, as the usage API."""

    def chart_org_id(self, request) -> int | None:
        return request.org.id

    def get_queryset(self, request):
        return super().get_queryset(request).filter(organization_id=request.org.id)

    def has_module_permission(self, request) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_view_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)
