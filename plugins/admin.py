"""Plugins in each organization's admin (/orgs/<slug>/admin/): its own versions and MCP servers."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from cadence_site.errors import ApplicationError
from plugins import mcp
from plugins.admin_forms import PluginVersionAdminMixin
from plugins.models import McpServer, PluginVersion
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import TenantModelAdmin, request_role, tenant_admin_site


@admin.register(PluginVersion, site=tenant_admin_site)
class PluginVersionAdmin(PluginVersionAdminMixin, TenantModelAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        # The changelist's actions need "change"; the version itself stays read-only.
        return obj is None and role_at_least(request_role(request), Role.ADMIN)


class McpServerRegisterForm(forms.ModelForm):
    """Registration talks to the server under the egress policy: the same service as REST, its
    refusals (a private address, an unreachable server, an unknown tool) shown on the form."""

    name = forms.RegexField(
        regex=r"^[a-z][a-z0-9_]{0,47}$",
        max_length=48,
        help_text="Lowercase letters, digits and _; tools are named mcp:<name>.<tool>.",
    )
    url = forms.URLField(max_length=500, assume_scheme="https")
    mode = forms.ChoiceField(choices=McpServer.Mode.choices, initial=McpServer.Mode.AUTO)
    allowed_tools = forms.CharField(
        max_length=4000, help_text="The server's tools orchestrators may call, comma-separated."
    )
    credential = forms.CharField(
        required=False,
        max_length=4000,
        widget=forms.PasswordInput,
        help_text="Sent as a bearer token; stored encrypted and never shown again.",
    )

    class Meta:
        model = McpServer
        fields: tuple = ()

    def _post_clean(self):
        """No model validation of an empty instance: the service validated and created the row."""

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        tools = [t.strip() for t in cleaned["allowed_tools"].split(",") if t.strip()]
        if not tools or len(tools) > 64 or any(len(t) > 64 for t in tools):
            self.add_error("allowed_tools", "Name between 1 and 64 tools of at most 64 characters.")
            return cleaned
        try:
            self.registered = mcp.mcp_server_register(
                name=cleaned["name"],
                url=cleaned["url"],
                allowed_tools=tools,
                credential=cleaned.get("credential") or "",
                mode=cleaned["mode"],
            )
        except ApplicationError as exc:
            field = exc.extra.get("field") if isinstance(exc.extra, dict) else None
            code_fields = {"unknown_mcp_tool": "allowed_tools", "egress_denied": "url"}
            field = field if field in self.fields else code_fields.get(exc.code, "url")
            self.add_error(field, exc.message)
        return cleaned


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
    actions = ("refresh", "approve")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            return McpServerRegisterForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "url", "mode", "allowed_tools", "credential")
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # a server changes through its actions (refresh, approve)
        row = form.registered
        obj.__dict__.update({k: v for k, v in row.__dict__.items() if not k.startswith("_")})

    def delete_model(self, request, obj):
        mcp.mcp_server_delete(server=obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.path.rsplit("/delete/", 1)[0] + "/change/")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time: the service refuses one in use
        if not role_at_least(request_role(request), Role.ADMIN):
            return {}
        return actions

    def has_change_permission(self, request, obj=None) -> bool:
        # The changelist's actions need "change"; a registered server itself stays read-only.
        return obj is None and role_at_least(request_role(request), Role.ADMIN)

    def _each(self, request, queryset, act, done: str) -> None:
        count = 0
        for server in queryset:
            try:
                act(server)
                count += 1
            except ApplicationError as exc:
                self.message_user(request, f"{server.name}: {exc.message}", messages.ERROR)
        if count:
            self.message_user(request, f"{count} MCP server(s) {done}.")

    @admin.action(description="Read the selected servers' tool lists again")
    def refresh(self, request, queryset):
        self._each(request, queryset, lambda s: mcp.mcp_server_refresh(server=s), "refreshed")

    @admin.action(description="Approve the selected servers' changed tool lists")
    def approve(self, request, queryset):
        self._each(request, queryset, lambda s: mcp.mcp_server_approve(server=s), "approved")
