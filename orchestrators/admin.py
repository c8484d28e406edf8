"""LLM configurations and orchestrators in each organization's admin (/orgs/<slug>/admin/)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from cadence_site.errors import ApplicationError
from orchestrators import services
from orchestrators.models import LLMConfig, OrchestratorInstance
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import TenantModelAdmin, request_role, tenant_admin_site


def _apply_application_error(form: forms.ModelForm, exc: ApplicationError) -> None:
    field = exc.extra.get("field") if isinstance(exc.extra, dict) else None
    form.add_error(field if field in form.fields else None, exc.message)


class LLMConfigForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: stored encrypted and never shown again. Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = LLMConfig
        fields = (
            "name",
            "provider",
            "base_url",
            "model",
            "temperature",
            "max_tokens",
            "timeout_seconds",
            "max_retries",
        )
        help_texts = {
            "provider": "“Offline” is a deterministic demo provider: no network, no real model."
        }

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        try:
            services.validate_llm(self.instance)
        except ApplicationError as exc:
            _apply_application_error(self, exc)


@admin.register(LLMConfig, site=tenant_admin_site)
class LLMConfigAdmin(TenantModelAdmin):
    form = LLMConfigForm
    list_display = ("name", "provider_label", "model", "base_url", "api_key_hint", "updated_at")
    readonly_fields = ("api_key_hint",)

    def provider_label(self, obj):
        if obj.provider == LLMConfig.Provider.OFFLINE:
            return format_html("{} <strong>(demo)</strong>", obj.provider)
        return obj.provider

    provider_label.short_description = "provider"

    def get_fields(self, request, obj=None):
        fields = [
            "name",
            "provider",
            "base_url",
            "model",
            "api_key",
            "temperature",
            "max_tokens",
            "timeout_seconds",
            "max_retries",
        ]
        if obj is not None:
            fields[5:5] = ["api_key_hint", "clear_api_key"]
        return fields

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data.get(name) for name in LLMConfigForm.Meta.fields}
        key = form.cleaned_data.get("api_key") or None
        if form.cleaned_data.get("clear_api_key"):
            key = ""
        if change:
            saved = services.llm_config_update(
                config=LLMConfig.objects.get(pk=obj.pk),
                api_key=key,
                **{
                    k: v
                    for k, v in data.items()
                    if v is not None or k in ("temperature", "max_tokens")
                },
            )
        else:
            saved = services.llm_config_create(
                api_key=key or "", **{k: v for k, v in data.items() if v is not None}
            )
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})
        for warning in getattr(saved, "save_warnings", []):
            messages.warning(request, warning)

    def delete_model(self, request, obj):
        services.llm_config_delete(config=obj)


class InstanceForm(forms.ModelForm):
    class Meta:
        model = OrchestratorInstance
        fields = (
            "slug",
            "name",
            "description",
            "framework",
            "llm_config",
            "system_prompt",
            "tools",
            "max_steps",
            "tier",
            "flow",
        )
        help_texts = {
            "flow": "The engine's JSON flow (cadence framework only); empty uses the default single-agent flow.",
            "tools": 'A JSON list of tool names, e.g. ["clock", "calculator"].',
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "framework" not in self.fields:  # read-only for this viewer
            return
        from orchestrators.adapters import INSTALL_HINT, framework_catalog

        catalog = framework_catalog()
        missing = [f["label"] for f in catalog if not f["available"]]
        self.fields["framework"].choices = [
            (f["name"], f["label"] if f["available"] else f"{f['label']} (not installed)")
            for f in catalog
        ]
        self.fields["framework"].help_text = (
            f"Not installed on this server: {', '.join(missing)}. {INSTALL_HINT}"
            if missing
            else "Every framework is installed on this server."
        )

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        try:
            services.instance_validate(self.instance)
        except ApplicationError as exc:
            _apply_application_error(self, exc)


@admin.register(OrchestratorInstance, site=tenant_admin_site)
class OrchestratorInstanceAdmin(TenantModelAdmin):
    form = InstanceForm
    list_display = ("slug", "name", "framework", "tier", "status", "version", "updated_at")
    list_filter = ("framework", "status", "tier")
    search_fields = ("slug", "name")
    readonly_fields = ("status", "status_message", "config_hash", "version", "diagram")
    change_form_template = "orchestrators/admin_change_form.html"
    actions = ("activate_selected", "suspend_selected")

    def diagram(self, obj):
        from orchestrators.diagrams import instance_mermaid

        return (
            format_html(
                '<pre class="mermaid" style="white-space:pre">{}</pre>', instance_mermaid(obj)
            )
            if obj.pk
            else "-"
        )

    def save_model(self, request, obj, form, change):
        fields = {
            name: form.cleaned_data[name]
            for name in InstanceForm.Meta.fields
            if name in form.cleaned_data
        }
        if change:
            saved = services.orchestrator_update(
                instance=OrchestratorInstance.objects.get(pk=obj.pk), **fields
            )
        else:
            saved = services.orchestrator_create(**fields)
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})
        for warning in getattr(saved, "save_warnings", []):
            messages.warning(request, warning)

    def delete_model(self, request, obj):
        services.orchestrator_delete(instance=obj)

    @staticmethod
    def _each(request, queryset, action, label):
        for instance in queryset:
            action(instance=instance)
        messages.success(request, f"{label} {queryset.count()} orchestrator(s).")

    def activate_selected(self, request, queryset):
        self._each(request, queryset, services.orchestrator_activate, "Rebuilding")

    def suspend_selected(self, request, queryset):
        self._each(request, queryset, services.orchestrator_suspend, "Suspended")

    def get_urls(self):
        return [
            path(
                "<uuid:object_id>/try/",
                self.admin_site.admin_view(self.try_view),
                name="orchestrators_orchestratorinstance_try",
            ),
            *super().get_urls(),
        ]

    def try_view(self, request, object_id):
        """The admin's "try it" box: one turn through the real runtime, the reply shown on the page."""
        from orchestrators.invoke import invoke

        instance = get_object_or_404(OrchestratorInstance, pk=object_id)
        back = reverse(
            "tenant_admin:orchestrators_orchestratorinstance_change",
            args=[instance.pk],
            current_app=self.admin_site.name,
        )
        if request.method != "POST" or not role_at_least(request_role(request), Role.MEMBER):
            return HttpResponseRedirect(back)
        text = (request.POST.get("message") or "").strip()[:4000]
        if not text:
            messages.error(request, "Type a message to try the orchestrator.")
            return HttpResponseRedirect(back)
        try:
            result = async_to_sync(invoke)(
                org=request.org,
                ref=str(instance.pk),
                history=[],
                message=text,
                user=request.user.get_username(),
            )
        except ApplicationError as exc:
            messages.error(request, f"{exc.code}: {exc.message}")
        else:
            tools = ", ".join(f"{c['name']}({c['arguments']})" for c in result["tool_calls"])
            messages.success(
                request,
                f"Reply: {result['message']['content']}"
                + (f" — tools: {tools}" if tools else "")
                + f" — tokens: {result['usage']['total_tokens']}",
            )
        return HttpResponseRedirect(back)
