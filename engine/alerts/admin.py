"""Alert rules and their history in each organization's admin.

Owners and admins create, change and delete rules through the same services as REST (checked,
audited; a new webhook secret is shown once, in the message after saving); members and viewers
read rules and history. The history is read-only. The team rule applies as over REST
(tenants/teams/scoping.py): another team's rules, and their firings, are not listed.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from cadence_site.errors import ApplicationError
from engine.alerts import services
from engine.alerts.models import AlertEvent, AlertRule
from tenants.tenant_admin import TenantModelAdmin, tenant_admin_site


class AlertRuleForm(forms.ModelForm):
    emails = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One address per line.",
    )
    rotate_secret = forms.BooleanField(
        required=False, help_text="Make a new webhook signing secret (shown once after saving)."
    )

    class Meta:
        model = AlertRule
        fields = [*services.EDITABLE, "team"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["emails"] = "\n".join(self.instance.emails)

    def clean_emails(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["emails"].splitlines()]
        addresses = [line for line in lines if line]
        for address in addresses:
            forms.EmailField().clean(address)
        return addresses

    def _post_clean(self) -> None:
        # The services judge the whole rule (its kind's parameters, the pattern, the egress
        # policy): a refusal is shown on the field it names.
        super()._post_clean()
        if self.errors:
            return
        rule = AlertRule(**{name: self.cleaned_data.get(name) for name in services.EDITABLE})
        for name in ("error_code", "pattern", "orchestrator", "webhook_url"):
            setattr(rule, name, getattr(rule, name) or "")
        try:
            services._check_rule(rule)
        except ApplicationError as exc:
            field = exc.extra.get("field")
            self.add_error(field if field in self.fields else None, ValidationError(exc.message))


@admin.register(AlertRule, site=tenant_admin_site)
class AlertRuleAdmin(TenantModelAdmin):
    form = AlertRuleForm
    list_display = ("name", "kind", "enabled", "orchestrator", "team", "webhook_url", "history")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "orchestrator", "pattern")
    fieldsets = (
        (None, {"fields": ("name", "kind", "enabled", "orchestrator", "team")}),
        (
            "Condition (what the kind uses)",
            {
                "fields": (
                    "error_code",
                    "pattern",
                    "threshold_ms",
                    "window_seconds",
                    "min_runs",
                    "failure_rate",
                    "tokens",
                )
            },
        ),
        ("Notify", {"fields": ("webhook_url", "rotate_secret", "emails")}),
    )

    def get_queryset(self, request):
        # The team rule (tenants/teams/scoping.py): another team's rules are not listed.
        from tenants.teams.scoping import scoped
        from tenants.tenant_admin import request_team_scope

        return scoped(super().get_queryset(request), request_team_scope(request), kind="alert_rule")

    def _admin(self, request) -> bool:
        from tenants.roles import Role, role_at_least
        from tenants.tenant_admin import request_role

        return role_at_least(request_role(request), Role.ADMIN)

    def get_list_display(self, request):
        # A chat service's incoming-webhook URL is a credential: admins only, as over REST.
        shown = super().get_list_display(request)
        return shown if self._admin(request) else [f for f in shown if f != "webhook_url"]

    def get_fieldsets(self, request, obj=None):
        if self._admin(request):
            return super().get_fieldsets(request, obj)
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f != "webhook_url"]})
            for name, options in super().get_fieldsets(request, obj)
        ]

    @admin.display(description="History")
    def history(self, obj: AlertRule):
        from django.urls import reverse
        from django.utils.html import format_html

        url = reverse("tenant_admin:alerts_alertevent_changelist")
        return format_html('<a href="{}?rule__id__exact={}">firings</a>', url, obj.pk)

    def save_model(self, request, obj, form, change) -> None:
        data = {name: form.cleaned_data.get(name) for name in services.EDITABLE}
        for name in ("error_code", "pattern", "orchestrator", "webhook_url"):
            data[name] = data[name] or ""
        data["team"] = form.cleaned_data.get("team")
        try:
            if change:
                rule, secret = services.alert_rule_update(
                    rule=obj,
                    actor=request.user,
                    rotate_secret=form.cleaned_data.get("rotate_secret", False),
                    **data,
                )
            else:
                rule, secret = services.alert_rule_create(actor=request.user, **data)
        except ApplicationError as exc:  # checked in the form already; a race at most
            self.message_user(request, exc.message, messages.ERROR)
            return
        form.instance = rule
        obj.pk = rule.pk
        if secret:
            self.message_user(
                request,
                f"Webhook signing secret (shown only now): {secret}",
                messages.WARNING,
            )

    def delete_model(self, request, obj) -> None:
        services.alert_rule_delete(rule=obj, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for rule in queryset:
            services.alert_rule_delete(rule=rule, actor=request.user)


@admin.register(AlertEvent, site=tenant_admin_site)
class AlertEventAdmin(TenantModelAdmin):
    list_display = ("created_at", "rule", "run", "reason", "delivery")
    list_filter = ("rule", "webhook_status", "email_status")
    search_fields = ("reason", "run_id")
    readonly_fields = [f.name for f in AlertEvent._meta.fields]
    list_select_related = ("rule",)

    @admin.display(description="Run", ordering="run_id")
    def run(self, obj: AlertEvent):
        from django.urls import reverse
        from django.utils.html import format_html

        if obj.run_id is None:
            return "—"
        url = reverse("tenant_admin:engine_run_change", args=[obj.run_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.run_id)[:8])

    @admin.display(description="Delivery")
    def delivery(self, obj: AlertEvent) -> str:
        parts = [
            f"{target}: {status} ({attempts})"
            for target, status, attempts in (
                ("webhook", obj.webhook_status, obj.webhook_attempts),
                ("email", obj.email_status, obj.email_attempts),
            )
            if status != AlertEvent.Delivery.NONE
        ]
        return " · ".join(parts) or "—"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        # The firings of the rules the caller sees (tenants/teams/scoping.py); members and
        # viewers, of those, the firings about runs they may read, as over REST.
        from django.db.models import Q

        from engine.runs.selectors import runs_visible
        from tenants.roles import Role, role_at_least
        from tenants.teams.scoping import scoped
        from tenants.tenant_admin import request_role, request_team_scope

        events = super().get_queryset(request)
        scope, role = request_team_scope(request), request_role(request)
        if not scope.everything:
            rules = scoped(AlertRule.objects.all(), scope, kind="alert_rule")
            events = events.filter(rule__in=rules.values("pk"))
        if role_at_least(role, Role.ADMIN):
            return events
        visible = runs_visible(principal=request.user, role=role, org=request.org).values("id")
        return events.filter(Q(run_id__isnull=True) | Q(run_id__in=visible))
