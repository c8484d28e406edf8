"""Members and API keys in an organization's own admin (/orgs/<slug>/admin/).

Both live in the public schema; every queryset here is filtered to the request's organization, and
every write goes through tenants/services.py with the caller's role, exactly as the REST API does
(members: viewers read, admins manage, only owners touch the owner role; keys: admins only, a key
no higher than its creator, the secret shown once on the page that created it and never stored).

A service refuses with ApplicationError: the forms call it while validating, so its message lands
beside the field it names and nothing is saved. The admin's change view runs in one transaction.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from cadence_site.errors import ApplicationError
from tenants import selectors, services
from tenants.models import ApiKey, Membership
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import TenantModelAdmin, request_role, tenant_admin_site


def _place_error(form: forms.Form, exc: ApplicationError, default_field: str | None) -> None:
    field = exc.extra.get("field") if isinstance(exc.extra, dict) else None
    if field not in form.fields:
        field = default_field if exc.code in ("owner_required", "role_too_high") else None
    form.add_error(field, exc.message)


class _ServiceForm(forms.ModelForm):
    """A form whose validation is the service call; `request` is bound by the admin's get_form."""

    request = None
    result = None

    def call_service(self) -> object:
        raise NotImplementedError

    def _post_clean(self):
        if self.errors:
            return
        try:
            self.result = self.call_service()
        except ApplicationError as exc:
            _place_error(self, exc, "role")


class MemberAddForm(_ServiceForm):
    email = forms.EmailField(
        max_length=254, help_text="An existing user is added; a new one is created."
    )
    username = forms.CharField(
        max_length=150, required=False, help_text="Optional, for a new user."
    )

    class Meta:
        model = Membership
        fields = ("role",)

    def call_service(self):
        org = selectors.organization_get(org_id=self.request.org.id)
        return services.membership_add(
            org=org,
            email=self.cleaned_data["email"],
            role=self.cleaned_data["role"],
            username=self.cleaned_data.get("username") or None,
            actor_role=request_role(self.request),
            actor=self.request.user,
        )


class MemberRoleForm(_ServiceForm):
    class Meta:
        model = Membership
        fields = ("role",)

    def call_service(self):
        membership = selectors.membership_get(
            org_id=self.request.org.id, membership_id=self.instance.pk
        )
        return services.membership_update(
            membership=membership,
            role=self.cleaned_data["role"],
            actor_role=request_role(self.request),
            actor=self.request.user,
        )


@admin.register(Membership, site=tenant_admin_site)
class MembershipTenantAdmin(TenantModelAdmin):
    list_display = ("username", "email", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__username", "user__email")
    actions = None

    def get_queryset(self, request):
        return selectors.membership_list(org_id=request.org.id)

    @admin.display(description="user", ordering="user__username")
    def username(self, obj):
        return obj.user.get_username()

    @admin.display(description="email", ordering="user__email")
    def email(self, obj):
        return obj.user.email

    def get_fields(self, request, obj=None):
        return (
            ("email", "username", "role")
            if obj is None
            else ("username", "email", "role", "created_at")
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("username", "email", "created_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        base = MemberRoleForm if obj is not None else MemberAddForm
        kwargs["form"] = type(base.__name__, (base,), {"request": request})
        kwargs["fields"] = ("role",) if obj is not None else ("email", "username", "role")
        return super().get_form(request, obj, change, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            saved = form.result
        else:
            saved, password = form.result
            if password:
                self.message_user(
                    request,
                    f"Created the user {saved.user.get_username()} with the initial password "
                    f"{password} (shown once: pass it on, they change it after logging in).",
                    messages.WARNING,
                )
        obj.pk = saved.pk
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})

    def save_related(self, request, form, formsets, change):
        pass  # the service wrote everything

    def has_delete_permission(self, request, obj=None) -> bool:
        # Owners' rows only for owners: the service says so too, this keeps the button away.
        if obj is not None and obj.role == Role.OWNER and request_role(request) != Role.OWNER:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.path.rsplit("/delete/", 1)[0] + "/change/")

    def delete_model(self, request, obj):
        services.membership_remove(
            membership=obj, actor_role=request_role(request), actor=request.user
        )


class ApiKeyAddForm(_ServiceForm):
    class Meta:
        model = ApiKey
        fields = ("name", "role", "expires_at")
        help_texts = {
            "role": "No higher than yours.",
            "expires_at": "Optional. After this moment the key is refused.",
        }

    def call_service(self):
        org = selectors.organization_get(org_id=self.request.org.id)
        return services.api_key_create(
            org=org,
            name=self.cleaned_data["name"],
            role=self.cleaned_data["role"],
            creator_role=request_role(self.request),
            created_by=self.request.user,
            expires_at=self.cleaned_data.get("expires_at"),
        )


@admin.register(ApiKey, site=tenant_admin_site)
class ApiKeyTenantAdmin(TenantModelAdmin):
    list_display = (
        "name",
        "prefix_shown",
        "role",
        "state",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("role",)
    search_fields = ("name", "prefix")
    actions = ("revoke_selected",)
    readonly_fields = (
        "name",
        "prefix_shown",
        "role",
        "state",
        "created_by",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )

    def get_queryset(self, request):
        return selectors.api_key_list(org_id=request.org.id)

    # Keys are an admin's business, as in REST (read_role = admin).
    def has_module_permission(self, request) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_view_permission(self, request, obj=None) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_revoke_permission(self, request) -> bool:
        return role_at_least(request_role(request), Role.ADMIN)

    @admin.display(description="key")
    def prefix_shown(self, obj):
        return format_html("<code>{}…</code>", obj.prefix)

    @admin.display(description="state")
    def state(self, obj):
        if obj.revoked_at:
            return format_html('<span class="status-failed">revoked</span>')
        if obj.expires_at and obj.expires_at <= timezone.now():
            return format_html('<span class="status-failed">expired</span>')
        return format_html('<span class="status-active">active</span>')

    def get_fields(self, request, obj=None):
        return ("name", "role", "expires_at") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = type("ApiKeyAddForm", (ApiKeyAddForm,), {"request": request})
        return super().get_form(request, obj, change, **kwargs)

    def save_model(self, request, obj, form, change):
        key, secret = form.result
        obj.pk = key.pk
        obj.__dict__.update({k: v for k, v in key.__dict__.items() if not k.startswith("_")})
        request._cadence_new_secret = secret

    def save_related(self, request, form, formsets, change):
        pass  # the service wrote everything

    def response_add(self, request, obj, post_url_continue=None):
        # The secret goes into this response only: never a message (kept in the session), never
        # a redirect (it would have to travel in the address).
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "key": obj,
            "secret": request._cadence_new_secret,
            "opts": self.opts,
            "changelist_url": "../",
        }
        response = TemplateResponse(request, "tenant_admin/api_key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        revoked, refused = 0, []
        for key in queryset.filter(revoked_at__isnull=True):
            try:
                services.api_key_revoke(
                    key=key, actor_role=request_role(request), actor=request.user
                )
            except ApplicationError as exc:
                refused.append(f"{key.name}: {exc.message}")
            else:
                revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).")
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)
