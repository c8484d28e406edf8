"""The operators' admin at /admin/: organizations, domains, users, memberships, API keys, plans."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from cadence_site.errors import ApplicationError
from tenants import services
from tenants.models import ApiKey, Domain, Membership, Organization, Plan
from tenants.roles import Role


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "requests_per_minute",
        "request_burst",
        "tokens_per_day",
        "tokens_per_month",
        "max_members",
        "max_api_keys",
        "max_orchestrators",
        "max_plugins",
    )
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug")}),
        ("Request rate", {"fields": ("requests_per_minute", "request_burst")}),
        (
            "Token budgets (empty: none)",
            {
                "fields": (
                    "tokens_per_minute",
                    "tokens_per_day",
                    "tokens_per_month",
                    "concurrent_streams",
                )
            },
        ),
        (
            "Quotas",
            {
                "fields": (
                    "max_orchestrators",
                    "max_members",
                    "max_api_keys",
                    "max_plugins",
                    "max_storage_bytes",
                    "run_retention_days",
                )
            },
        ),
    )

    def save_model(self, request, obj, form, change):
        from tenants.limits.plans import limits_forget

        super().save_model(request, obj, form, change)
        limits_forget()


class OrganizationCreateForm(forms.ModelForm):
    owner_email = forms.EmailField(
        help_text="The owner's login; created with a generated password if new."
    )

    class Meta:
        model = Organization
        fields = ("name", "slug", "plan")

    def clean_slug(self):
        slug = self.cleaned_data["slug"].strip().lower()
        if slug in services.RESERVED_SLUGS:
            raise forms.ValidationError("This slug is reserved.")
        return slug


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ("domain", "is_primary")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "name",
        "status",
        "plan",
        "schema_name",
        "created_at",
        "tenant_admin_link",
    )
    list_filter = ("status", "plan")
    search_fields = ("slug", "name")
    actions = ("suspend_selected", "resume_selected")
    readonly_fields = ("schema_name", "public_id", "status", "created_at", "updated_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = OrganizationCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "slug", "plan", "owner_email")
        return (
            "name",
            "slug",
            "plan",
            "status",
            "schema_name",
            "public_id",
            "created_at",
            "updated_at",
        )

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (("slug",) if obj else ())

    def get_inlines(self, request, obj):
        return [DomainInline] if obj else []

    def get_queryset(self, request):
        # An organization's admin opens for its members only (operators hold no role in it), so
        # the link is offered where the operator is one.
        from django.db.models import Exists, OuterRef

        mine = Membership.objects.filter(organization=OuterRef("pk"), user=request.user)
        return super().get_queryset(request).annotate(operator_is_member=Exists(mine))

    @admin.display(description="Organization admin")
    def tenant_admin_link(self, obj):
        if getattr(obj, "operator_is_member", False):
            return format_html('<a href="/orgs/{}/admin/">open</a>', obj.slug)
        return mark_safe('<span title="Only its members open it">members only</span>')

    def save_model(self, request, obj, form, change):
        if change:
            services.organization_update(org=obj, actor=request.user, name=obj.name, plan=obj.plan)
            return
        try:
            created = services.organization_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                owner_email=form.cleaned_data["owner_email"],
                plan=form.cleaned_data.get("plan"),
                actor=request.user,
            )
        except ApplicationError as exc:
            # The form validated the slug; only a concurrent create can land here.
            self.message_user(request, exc.message, messages.ERROR)
            raise
        obj.pk = created.organization.pk
        obj.__dict__.update(
            {k: v for k, v in created.organization.__dict__.items() if not k.startswith("_")}
        )
        password = f" Owner password: {created.owner_password}." if created.owner_password else ""
        self.message_user(
            request,
            f"Created {obj.slug}. Owner login: {created.owner.get_username()}.{password} Owner API key (shown once): {created.api_key_secret}",
            messages.SUCCESS,
        )

    def save_formset(self, request, form, formset, change):
        instances = formset.save()
        for domain in instances:
            services.domain_cache_invalidate(domain.domain)
        for domain in formset.deleted_objects:
            services.domain_cache_invalidate(domain.domain)

    def delete_model(self, request, obj):
        services.organization_delete(org=obj)

    def delete_queryset(self, request, queryset):
        for org in queryset:
            services.organization_delete(org=org)

    @admin.action(description="Suspend selected organizations")
    def suspend_selected(self, request, queryset):
        for org in queryset:
            services.organization_suspend(org=org, actor=request.user)
        self.message_user(request, f"Suspended {queryset.count()} organization(s).")

    @admin.action(description="Resume selected organizations")
    def resume_selected(self, request, queryset):
        for org in queryset:
            services.organization_resume(org=org, actor=request.user)
        self.message_user(request, f"Resumed {queryset.count()} organization(s).")


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ("domain", "tenant", "is_primary")
    search_fields = ("domain", "tenant__slug")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        services.domain_cache_invalidate(obj.domain)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        services.domain_cache_invalidate(obj.domain)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", "organization")
    search_fields = ("user__username", "user__email", "organization__slug")
    autocomplete_fields = ("user",)


class ApiKeyCreateForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("organization", "name", "role", "expires_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "organization",
        "role",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_filter = ("role", "organization")
    search_fields = ("name", "prefix", "organization__slug")
    actions = ("revoke_selected",)
    # The secret is never stored, only its hash; nothing here can show it again.
    exclude = ("secret_hash",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "organization",
            "name",
            "prefix",
            "role",
            "created_by",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        )

    def save_model(self, request, obj, form, change):
        if change:
            return
        key, secret = services.api_key_create(
            org=form.cleaned_data["organization"],
            name=form.cleaned_data["name"],
            role=form.cleaned_data["role"],
            creator_role=Role.OWNER,
            created_by=request.user,
            expires_at=form.cleaned_data.get("expires_at"),
        )
        obj.pk = key.pk
        obj.__dict__.update({k: v for k, v in key.__dict__.items() if not k.startswith("_")})
        self.message_user(
            request,
            f"API key created. Copy it now, it will not be shown again: {secret}",
            messages.SUCCESS,
        )

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key, actor_role=Role.OWNER, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


# Members and API keys in each organization's own admin.
import tenants.org_admin  # noqa: E402, F401
