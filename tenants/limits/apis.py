"""Limits and usage of an organization: read by its members, key limits set by its admins."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import NotFoundError
from tenants import selectors
from tenants.limits import plans, quotas, services, usage
from tenants.limits.models import KEY_FIELDS, ORG_FIELDS, OrganizationLimits
from tenants.roles import Role

_LIMITS_OUT = inline_serializer(
    "OrgLimits",
    {
        "plan": serializers.CharField(allow_null=True),
        "limits": serializers.DictField(),
        "overrides": serializers.DictField(),
        "quotas": serializers.DictField(),
    },
)
_KEY_LIMITS_OUT = inline_serializer(
    "ApiKeyLimits", {"api_key": serializers.UUIDField(), "limits": serializers.DictField()}
)
_USAGE_OUT = inline_serializer(
    "Usage",
    {
        "from": serializers.DateField(),
        "to": serializers.DateField(),
        "group_by": serializers.ListField(child=serializers.CharField()),
        "results": serializers.ListField(child=serializers.DictField()),
        "totals": serializers.DictField(),
    },
)
_USAGE_PARAMS = [
    OpenApiParameter("from", str, description="First day (YYYY-MM-DD), default 29 days before to"),
    OpenApiParameter("to", str, description="Last day (YYYY-MM-DD), default today (UTC)"),
    OpenApiParameter("group_by", str, description="Comma-separated: day, key, orchestrator, model"),
]


def _org_limits_output(org) -> dict:
    limits = plans.limits_compute(org=org)
    override = OrganizationLimits.objects.filter(organization=org).first()
    used = quotas.quota_usage(org=org)
    return {
        "plan": org.plan.slug if org.plan_id else None,
        "limits": limits.as_dict(),
        "overrides": {
            name: getattr(override, name)
            for name in ORG_FIELDS
            if override is not None and getattr(override, name) is not None
        },
        "quotas": {
            name: {"limit": getattr(limits, name), "used": used.get(name)}
            for name in quotas.QUOTAS
            if name in used
        },
    }


class OrgLimitsApi(OrgMemberApi):
    read_role = Role.VIEWER

    @extend_schema(
        summary="The organization's effective limits and quota use", responses=_LIMITS_OUT
    )
    def get(self, request, org_slug):
        return Response(_org_limits_output(selectors.organization_get(org_id=request.org.id)))


class ApiKeyLimitsApi(OrgMemberApi):
    read_role = Role.ADMIN
    required_role = Role.ADMIN

    class InputSerializer(StrictSerializer):
        requests_per_minute = serializers.IntegerField(
            min_value=1, max_value=10_000_000, allow_null=True, required=False
        )
        request_burst = serializers.IntegerField(
            min_value=1, max_value=10_000_000, allow_null=True, required=False
        )
        tokens_per_minute = serializers.IntegerField(
            min_value=0, max_value=10**15, allow_null=True, required=False
        )
        tokens_per_day = serializers.IntegerField(
            min_value=0, max_value=10**15, allow_null=True, required=False
        )
        tokens_per_month = serializers.IntegerField(
            min_value=0, max_value=10**15, allow_null=True, required=False
        )
        concurrent_streams = serializers.IntegerField(
            min_value=1, max_value=100_000, allow_null=True, required=False
        )

    def _key(self, request, key_id):
        key = selectors.api_key_get(org_id=request.org.id, key_id=key_id)
        if key is None:
            raise NotFoundError("No such API key.")
        return key

    @extend_schema(summary="An API key's own limits", responses=_KEY_LIMITS_OUT)
    def get(self, request, org_slug, key_id):
        key = self._key(request, key_id)
        return Response(
            {"api_key": str(key.pk), "limits": plans.key_limits(key_id=key.pk).as_dict()}
        )

    @extend_schema(
        summary="Set an API key's limits (null: the organization's)",
        request=InputSerializer,
        responses=_KEY_LIMITS_OUT,
    )
    def patch(self, request, org_slug, key_id):
        key = self._key(request, key_id)
        data = self.validated(self.InputSerializer, request.data)
        saved = services.api_key_limits_set(key=key, actor=self.actor(request), **data)
        return Response(
            {"api_key": str(key.pk), "limits": {name: getattr(saved, name) for name in KEY_FIELDS}}
        )


class UsageApi(OrgMemberApi):
    read_role = Role.ADMIN

    def _query(self, request):
        limits = plans.org_limits(org_id=request.org.id)
        return usage.usage_query_parse(
            start=request.query_params.get("from"),
            end=request.query_params.get("to"),
            group_by=request.query_params.get("group_by"),
            retention_days=limits.run_retention_days,
        )

    @extend_schema(
        summary="Requests and tokens by day, key, orchestrator or model",
        parameters=_USAGE_PARAMS,
        responses=_USAGE_OUT,
    )
    def get(self, request, org_slug):
        query = self._query(request)
        return Response(
            {
                "from": query.start.isoformat(),
                "to": query.end.isoformat(),
                "group_by": list(query.group_by),
                "results": usage.usage_rows(org_id=request.org.id, query=query),
                "totals": usage.usage_totals(org_id=request.org.id, query=query),
            }
        )


class UsageExportApi(UsageApi):
    @extend_schema(
        summary="The same figures as CSV",
        parameters=_USAGE_PARAMS,
        responses={(200, "text/csv"): str},
    )
    def get(self, request, org_slug):
        query = self._query(request)
        body = usage.usage_csv(
            rows=usage.usage_rows(org_id=request.org.id, query=query), query=query
        )
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="usage-{request.org.slug}-{query.start}-{query.end}.csv"'
        )
        return response
