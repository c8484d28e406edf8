"""The single sign-on provider in an organization's own admin (/orgs/<slug>/admin/sso/…).

Owners and admins only (members and viewers do not see it, as on REST). The form's validation is
the service call (tenants/sso/services.py), so its checks, the secret's encryption and the audit
record are the REST API's; the secret field is write-only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from cadence_site.errors import ApplicationError
from orchestrators.admin import JsonTextField
from tenants.roles import Role, role_at_least
from tenants.sso import selectors, services
from tenants.sso.models import MAPPABLE_ROLES, SsoProvider
from tenants.tenant_admin import TenantModelAdmin, request_role, tenant_admin_site


class SsoProviderForm(forms.ModelForm):
    request = None
    result = None

    client_secret = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: stored encrypted and never shown again. Leave blank to keep it.",
    )
    clear_client_secret = forms.BooleanField(
        required=False, help_text="Remove the stored secret (a public client, PKCE only)."
    )
    allowed_domains = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One email domain per line; addresses elsewhere are refused.",
    )
    mapping = JsonTextField(
        required=False,
        initial=dict,
        help_text='{"claim value": {"role": "admin|member|viewer", "team": "a team\'s id, slug '
        'or name, or null"}}',
    )
    default_role = forms.ChoiceField(
        choices=[(r.value, r.label) for r in MAPPABLE_ROLES],
        initial=Role.MEMBER,
        help_text="The role of someone no mapping entry matches.",
    )

    class Meta:
        model = SsoProvider
        fields = ("issuer", "client_id", "scopes", "claim", "default_role", "sso_required")
        help_texts = {
            "claim": "The ID token or userinfo claim the mapping reads, e.g. groups.",
            "sso_required": "Refuse password login to this organization's members "
            "(platform staff keep theirs, recorded in the audit trail).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_domains"] = "\n".join(self.instance.allowed_domains)
            self.initial["mapping"] = self.instance.mapping

    def _post_clean(self):
        if self.errors:
            return
        data = self.cleaned_data
        secret = data.get("client_secret") or None
        if data.get("clear_client_secret"):
            secret = ""
        try:
            self.result = services.sso_provider_set(
                org=self.request.org,
                actor=self.request.user,
                actor_role=request_role(self.request),
                issuer=data["issuer"],
                client_id=data["client_id"],
                client_secret=secret,
                scopes=data["scopes"],
                allowed_domains=[
                    d.strip() for d in data["allowed_domains"].splitlines() if d.strip()
                ],
                claim=data.get("claim") or "",
                mapping=data.get("mapping") or {},
                default_role=data["default_role"],
                sso_required=data.get("sso_required", False),
            )
        except ApplicationError as exc:
            field = exc.extra.get("field") if isinstance(exc.extra, dict) else None
            field = (field or "").split(".")[0]
            self.add_error(field if field in self.fields else None, exc.message)


@admin.register(SsoProvider, site=tenant_admin_site)
class SsoProviderAdmin(TenantModelAdmin):
    list_display = ("issuer", "client_id", "sso_required", "updated_at")
    readonly_fields = ("client_secret_hint",)
    actions = None

    def get_queryset(self, request):
        return SsoProvider.objects.filter(organization_id=request.org.id)

    def get_fields(self, request, obj=None):
        fields = ["issuer", "client_id", "client_secret", "scopes", "allowed_domains"]
        if obj is not None:
            fields[3:3] = ["client_secret_hint", "clear_client_secret"]
        return [*fields, "claim", "mapping", "default_role", "sso_required"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        org = request.org
        base = type("SsoProviderForm", (SsoProviderForm,), {"request": request})
        kwargs["form"] = base
        kwargs["fields"] = None
        form = super().get_form(request, obj, change, **kwargs)
        callback = request.build_absolute_uri(selectors.sso_callback_path(org))
        login = request.build_absolute_uri(selectors.sso_login_path(org))
        form.base_fields["issuer"].help_text = (
            f"The provider's issuer URL (https). Register this redirect URI there: {callback} — "
            f"members sign in at {login}"
        )
        return form

    def save_model(self, request, obj, form, change):
        saved = form.result
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})
        for warning in getattr(saved, "save_warnings", []):
            messages.warning(request, warning)

    def delete_model(self, request, obj):
        services.sso_provider_delete(
            org=request.org, actor=request.user, actor_role=request_role(request)
        )

    def has_module_permission(self, request) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_view_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_add_permission(self, request) -> bool:
        return (
            role_at_least(request_role(request), Role.ADMIN)
            and selectors.sso_provider_get(org=request.org) is None
        )
