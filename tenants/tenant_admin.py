"""The admin each organization gets at /orgs/<slug>/admin/.

Access comes from the user's role in that organization, not from Django's is_staff or model
permissions: owners and admins edit, members and viewers read. Later apps register their tenant
models on `tenant_admin_site` with `TenantModelAdmin`.
"""

from __future__ import annotations

from functools import update_wrapper
from urllib.parse import quote

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponseForbidden, HttpResponseRedirect
from django.utils.html import escape, format_html

from tenants.access import caller_role
from tenants.audit.models import AuditEvent
from tenants.roles import Role, role_at_least


def request_role(request) -> str | None:
    if not hasattr(request, "_cadence_role"):
        org = getattr(request, "org", None)
        request._cadence_role = caller_role(request.user, org) if org is not None else None
    return request._cadence_role


def request_team_scope(request):
    """The admin user's team scope (tenants/teams/scoping.py), read once per request."""
    if not hasattr(request, "_cadence_team_scope"):
        from tenants.teams.scoping import team_scope

        request._cadence_team_scope = team_scope(request.user, request_role(request))
    return request._cadence_team_scope


class TenantAdminSite(admin.AdminSite):
    site_header = "Cadence — organization admin"
    site_title = "Cadence"
    index_title = "Dashboard"
    index_template = "tenant_admin/index.html"
    # "View site": the landing page, which links every organization the user belongs to.
    site_url = "/"

    def has_permission(self, request) -> bool:
        org = getattr(request, "org", None)
        return org is not None and org.is_active and request_role(request) is not None

    def each_context(self, request):
        context = super().each_context(request)
        org = getattr(request, "org", None)
        context["org"] = org
        context["org_role"] = request_role(request)
        context["site_header"] = f"{org.name} — Cadence admin" if org else self.site_header
        context["site_title"] = f"{org.name} · Cadence" if org else self.site_title
        context["can_write"] = role_at_least(context["org_role"], Role.ADMIN)
        return context

    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        def gate(request, *args, **kwargs):
            if not request.user.is_authenticated:
                # Straight to the shared login page, as for an organization that does not exist.
                return redirect_to_login(request.get_full_path())
            if request.user.is_authenticated:
                if request_role(request) is None:
                    # Same answer as an organization that does not exist.
                    raise Http404("No such organization.")
                if not request.org.is_active:
                    return HttpResponseForbidden(
                        f"The organization {escape(request.org.slug)} is suspended."
                    )
            return inner(request, *args, **kwargs)

        return update_wrapper(gate, view)

    def login(self, request, extra_context=None):
        from django.conf import settings

        return HttpResponseRedirect(f"{settings.LOGIN_URL}?next={quote(request.get_full_path())}")

    def index(self, request, extra_context=None):
        from cadence_site.dashboards import organization_dashboard

        extra = {
            "dashboard": organization_dashboard(
                org=request.org, role=request_role(request), scope=request_team_scope(request)
            ),
            # The audit trail names members and keys: admins and owners only, as on its socket.
            "recent_events": (
                list(AuditEvent.objects.all()[:10])
                if role_at_least(request_role(request), Role.ADMIN)
                else []
            ),
        }
        extra.update(extra_context or {})
        return super().index(request, extra)


tenant_admin_site = TenantAdminSite(name="tenant_admin")


class TenantModelAdmin(admin.ModelAdmin):
    """Role-based permissions for models in an organization's schema."""

    write_role = Role.ADMIN

    def has_module_permission(self, request) -> bool:
        return request_role(request) is not None

    def has_view_permission(self, request, obj=None) -> bool:
        return request_role(request) is not None

    def has_add_permission(self, request) -> bool:
        return role_at_least(request_role(request), self.write_role)

    def has_change_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), self.write_role)

    def has_delete_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), self.write_role)


class TenantReadOnlyInline(admin.TabularInline):
    """A read-only inline shown to whoever may view its parent. Django's default asks the user's
    model permissions, which members never have, and silently hides the inline."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None) -> bool:
        return self.admin_site._registry[self.parent_model].has_view_permission(request, obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ActorKindFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor_kind"

    def lookups(self, request, model_admin):
        return (("user", "People"), ("key", "API keys"), ("system", "System and commands"))

    def queryset(self, request, queryset):
        if self.value() in ("user", "key"):
            return queryset.filter(actor__startswith=f"{self.value()}:")
        if self.value() == "system":
            return queryset.exclude(actor__startswith="user:").exclude(actor__startswith="key:")
        return queryset


@admin.register(AuditEvent, site=tenant_admin_site)
class AuditEventAdmin(TenantModelAdmin):
    list_display = ("created_at", "action", "actor", "target", "changed")
    list_filter = ("action", ActorKindFilter, "created_at")
    search_fields = ("action", "actor", "target")
    date_hierarchy = "created_at"
    fields = ("created_at", "action", "actor", "target", "before_after", "details")
    readonly_fields = fields

    @admin.display(description="changed")
    def changed(self, obj):
        return ", ".join(obj.details.get("changed", [])) if isinstance(obj.details, dict) else ""

    @admin.display(description="before → after")
    def before_after(self, obj):
        from django.utils.html import format_html_join

        details = obj.details if isinstance(obj.details, dict) else {}
        before, after = details.get("before") or {}, details.get("after") or {}
        keys = details.get("changed") or sorted(set(before) | set(after))
        if not keys:
            return "-"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td><code>{}</code></td><td><code>{}</code></td></tr>",
            ((k, _short(before.get(k, "")), _short(after.get(k, ""))) for k in keys),
        )
        return format_html(
            '<table class="cadence-diff"><thead><tr><th>field</th><th>before</th>'
            "<th>after</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # Readable by the same rule as /ws/orgs/<slug>/audit/: admins and owners.
    def has_module_permission(self, request) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_view_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _short(value, limit: int = 400) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def login_page(request):
    """Login for members (who are not platform staff), then back to where they were going."""
    from django.contrib.auth.views import LoginView

    from tenants.sso.enforcement import SsoAwareAuthenticationForm, sso_org_for_next

    next_path = request.POST.get("next") or request.GET.get("next") or ""
    view = LoginView.as_view(
        # Refuses password login to members of organizations that require single sign-on.
        authentication_form=SsoAwareAuthenticationForm,
        template_name="sso/password_login.html",
        extra_context={
            "site_header": "Cadence",
            "site_title": "Cadence",
            "title": "Log in",
            "app_path": request.get_full_path(),
            # On the way to an organization that has single sign-on: its link, first.
            "sso_org": sso_org_for_next(next_path),
            "sso_next": next_path,
        },
        redirect_authenticated_user=False,
        # Without a ?next=, the landing page (which lists the user's organizations).
        next_page="/",
    )
    return view(request)
