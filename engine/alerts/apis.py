"""Alert rules over REST: `/api/v1/orgs/<slug>/alert-rules/…`.

A rule belongs to the organization (`team` null) or to one team (tenants/teams/scoping.py):
members and viewers read the organization's rules, their teams' and those shared with their
teams, and their history (a member sees the firings about runs they may read); another team's
rule is the same 404 as none. Owners and admins create, change and delete every rule; a team's
maintainers those of their team (and those shared with it to manage), and they share them
(`…/alert-rules/<id>/shares/`). A webhook's signing secret is in the answer that created it (or
rotated it, `rotate_secret`) and never again; its whole URL is shown to those who manage the
rule.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.openapi import results_of
from engine.alerts import selectors, services
from engine.alerts.evaluate import MAX_PATTERN_CHARS
from engine.alerts.models import AlertEvent, AlertRule
from orchestrators.share_apis import ShareInput, ShareOutput, _SharesApi
from tenants.roles import Role, role_at_least
from tenants.teams.scoping import team_resolve

MAX_EMAILS = 20
MAX_WINDOW_SECONDS = 31 * 24 * 3600


def _url_shown(url: str, role: str | None, manages: bool = False) -> str:
    """Those who manage the rule see the whole webhook URL; other members and viewers its scheme
    and host only (a chat service's incoming-webhook URL is itself a credential)."""
    if not url or manages or role_at_least(role, Role.ADMIN):
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def rule_output(
    rule: AlertRule, secret: str | None = None, *, role: str | None = None, manages: bool = False
) -> dict:
    out = {
        "id": str(rule.id),
        "name": rule.name,
        "kind": rule.kind,
        "enabled": rule.enabled,
        "orchestrator": rule.orchestrator,
        "error_code": rule.error_code,
        "pattern": rule.pattern,
        "threshold_ms": rule.threshold_ms,
        "window_seconds": rule.window_seconds,
        "min_runs": rule.min_runs,
        "failure_rate": rule.failure_rate,
        "tokens": rule.tokens,
        "webhook_url": _url_shown(rule.webhook_url, role, manages),
        "emails": list(rule.emails),
        "has_webhook_secret": bool(rule.webhook_secret),
        "team": str(rule.team_id) if rule.team_id else None,
        "created_by": rule.created_by,
        "created_at": rule.created_at.isoformat(),
        "updated_at": rule.updated_at.isoformat(),
    }
    if secret is not None:
        out["webhook_secret"] = secret
    return out


def event_output(event: AlertEvent) -> dict:
    return {
        "id": str(event.id),
        "rule": str(event.rule_id),
        "run": str(event.run_id) if event.run_id else None,
        "key": event.key,
        "reason": event.reason,
        "details": event.details,
        "created_at": event.created_at.isoformat(),
        "webhook": {
            "status": event.webhook_status,
            "attempts": event.webhook_attempts,
            "error": event.webhook_error,
        },
        "email": {
            "status": event.email_status,
            "attempts": event.email_attempts,
            "error": event.email_error,
        },
        "delivered_at": event.delivered_at.isoformat() if event.delivered_at else None,
    }


class AlertRuleOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=AlertRule.Kind.choices)
    enabled = serializers.BooleanField()
    orchestrator = serializers.CharField(allow_blank=True)
    error_code = serializers.CharField(allow_blank=True)
    pattern = serializers.CharField(allow_blank=True)
    threshold_ms = serializers.IntegerField(allow_null=True)
    window_seconds = serializers.IntegerField(allow_null=True)
    min_runs = serializers.IntegerField(allow_null=True)
    failure_rate = serializers.FloatField(allow_null=True)
    tokens = serializers.IntegerField(allow_null=True)
    webhook_url = serializers.CharField(
        allow_blank=True, help_text="Members and viewers see its scheme and host only."
    )
    emails = serializers.ListField(child=serializers.EmailField())
    has_webhook_secret = serializers.BooleanField()
    team = serializers.UUIDField(allow_null=True, help_text="Its team; null: organization-wide.")
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class AlertRuleCreatedOutput(AlertRuleOutput):
    webhook_secret = serializers.CharField(
        required=False,
        help_text="HMAC-SHA256 key of the webhook's X-Cadence-Signature; shown only here.",
    )


class AlertEventOutput(serializers.Serializer):
    class DeliveryOutput(serializers.Serializer):
        status = serializers.ChoiceField(choices=AlertEvent.Delivery.choices)
        attempts = serializers.IntegerField()
        error = serializers.CharField(allow_blank=True)

    id = serializers.UUIDField()
    rule = serializers.UUIDField()
    run = serializers.UUIDField(allow_null=True)
    key = serializers.CharField()
    reason = serializers.CharField()
    details = serializers.JSONField()
    created_at = serializers.DateTimeField()
    webhook = DeliveryOutput()
    email = DeliveryOutput()
    delivered_at = serializers.DateTimeField(allow_null=True)


class AlertEventPage(serializers.Serializer):
    results = AlertEventOutput(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class _RuleFields(StrictSerializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=AlertRule.Kind.choices)
    enabled = serializers.BooleanField(default=True)
    orchestrator = serializers.SlugField(max_length=63, required=False, allow_blank=True)
    error_code = serializers.CharField(max_length=64, required=False, allow_blank=True)
    pattern = serializers.CharField(
        max_length=MAX_PATTERN_CHARS, required=False, allow_blank=True, trim_whitespace=False
    )
    threshold_ms = serializers.IntegerField(
        min_value=0, max_value=24 * 3600 * 1000, required=False, allow_null=True
    )
    window_seconds = serializers.IntegerField(
        min_value=1, max_value=MAX_WINDOW_SECONDS, required=False, allow_null=True
    )
    min_runs = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, allow_null=True
    )
    failure_rate = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True,
        help_text="A fraction: 0.5 fires when at least half the window's runs failed.",
    )  # fmt: skip
    tokens = serializers.IntegerField(
        min_value=0, max_value=10**15, required=False, allow_null=True
    )
    webhook_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    emails = serializers.ListField(
        child=serializers.EmailField(max_length=254), max_length=MAX_EMAILS, required=False
    )
    team = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The team it belongs to (its maintainers manage it, it judges the runs the "
        "team sees); null: organization-wide.",
    )


def _with_team(data: dict) -> dict:
    data = dict(data)
    if "team" in data:
        data["team"] = team_resolve(data["team"])
    return data


class _RuleApi(OrgMemberApi):
    # Members reach the writes: whether they may create in the team they name, or change this
    # rule (as a maintainer), is the service's decision (tenants/teams/scoping.py).
    required_role = Role.MEMBER

    def rule(self, request, rule_id) -> AlertRule:
        return selectors.alert_rule_get(rule_id=rule_id, scope=self.scope(request))

    def output(self, request, rule: AlertRule, secret: str | None = None) -> dict:
        manages = rule.pk in selectors.alert_rules_managed(scope=self.scope(request), rules=[rule])
        return rule_output(rule, secret, role=request.role, manages=manages)


class AlertRuleListApi(_RuleApi):
    class AlertRuleInput(_RuleFields):
        """A new rule: every field of _RuleFields, under its own schema name."""

    @extend_schema(
        summary="The organization's alert rules", responses={200: results_of(AlertRuleOutput)}
    )
    def get(self, request, org_slug):
        scope = self.scope(request)
        rules = selectors.alert_rule_list(scope=scope)
        managed = selectors.alert_rules_managed(scope=scope, rules=rules)
        return Response(
            {"results": [rule_output(r, role=request.role, manages=r.pk in managed) for r in rules]}
        )

    @extend_schema(
        summary="Create an alert rule",
        request=AlertRuleInput,
        responses={201: AlertRuleCreatedOutput},
    )
    def post(self, request, org_slug):
        data = _with_team(self.validated(self.AlertRuleInput, request.data))
        rule, secret = services.alert_rule_create(
            actor=self.actor(request), scope=self.scope(request), **data
        )
        return Response(self.output(request, rule, secret), status=201)


class AlertRuleDetailApi(_RuleApi):
    class AlertRuleUpdateInput(_RuleFields):
        rotate_secret = serializers.BooleanField(
            required=False, help_text="Make a new webhook secret (shown in this answer only)."
        )

    @extend_schema(summary="One alert rule", responses={200: AlertRuleOutput})
    def get(self, request, org_slug, rule_id):
        return Response(self.output(request, self.rule(request, rule_id)))

    @extend_schema(
        summary="Change an alert rule",
        request=AlertRuleUpdateInput,
        responses={200: AlertRuleCreatedOutput},
    )
    def patch(self, request, org_slug, rule_id):
        rule = self.rule(request, rule_id)
        data = _with_team(self.validated(self.AlertRuleUpdateInput, request.data, partial=True))
        rule, secret = services.alert_rule_update(
            rule=rule, actor=self.actor(request), scope=self.scope(request), **data
        )
        return Response(self.output(request, rule, secret))

    @extend_schema(summary="Delete an alert rule and its history", responses={204: None})
    def delete(self, request, org_slug, rule_id):
        rule = self.rule(request, rule_id)
        services.alert_rule_delete(rule=rule, actor=self.actor(request), scope=self.scope(request))
        return Response(status=204)


class AlertRuleHistoryApi(_RuleApi):
    @extend_schema(
        summary="What an alert rule fired, newest first, with each notification's delivery",
        parameters=[
            OpenApiParameter("limit", int, required=False),
            OpenApiParameter("cursor", str, required=False),
        ],
        responses={200: AlertEventPage},
    )
    def get(self, request, org_slug, rule_id):
        rule = self.rule(request, rule_id)
        events, cursor = selectors.alert_event_list(
            rule=rule,
            principal=request.user,
            role=request.role,
            params=request.query_params.dict(),
            org=request.org,
        )
        return Response({"results": [event_output(e) for e in events], "next_cursor": cursor})


# --- sharing a rule with another team (the same shape as orchestrators' shares) ---------------


class _AlertRuleShares(_SharesApi):
    kind = "alert_rule"

    def _get(self, ref):
        return selectors.alert_rule_get(rule_id=ref, scope=self.scope(self.request))


class AlertRuleSharesApi(_AlertRuleShares):
    @extend_schema(
        summary="The teams an alert rule is shared with", responses={200: results_of(ShareOutput)}
    )
    def get(self, request, org_slug, rule_id):
        return self.list(request, rule_id)

    @extend_schema(
        summary="Share an alert rule with a team, or change the level",
        description="`read` and `use` show the rule and the firings the team's members may "
        "read; `manage` lets them change it. What it judges stays its own team's runs. Needs "
        "manage rights on the rule.",
        request=ShareInput,
        responses={200: ShareOutput},
    )
    def post(self, request, org_slug, rule_id):
        return self.share(request, rule_id)


class AlertRuleShareDetailApi(_AlertRuleShares):
    @extend_schema(summary="Stop sharing an alert rule with a team", responses={204: None})
    def delete(self, request, org_slug, rule_id, team_id):
        return self.unshare(request, rule_id, team_id)
