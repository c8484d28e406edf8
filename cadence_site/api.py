"""The base of every organization-scoped API view: membership, suspension and role, in one place."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from cadence_site.errors import ApplicationError, ForbiddenError, NotFoundError
from tenants.access import caller_role
from tenants.limits.http import rate_headers_add, request_limit_enforce
from tenants.roles import Role, role_at_least

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not declare: a typo in a field name is an error, not a silent no-op."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class OrgMemberApi(APIView):
    """Resolves the caller's role in the path's organization before any handler runs.

    Another organization's key and a non-member get the same 404 as an unknown organization, so
    an outsider cannot learn which organizations exist. A suspended organization is 403
    `org_suspended` for its members. `read_role` guards safe methods, `required_role` the rest.
    """

    read_role: str = Role.VIEWER
    required_role: str = Role.ADMIN
    # A surface bucket for writes, on top of the organization's (tenants/limits/enforce.py).
    rate_scope: str | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        org = getattr(request._request, "org", None)
        if org is None or org.slug != kwargs.get("org_slug", org.slug):
            raise NotFoundError()
        role = caller_role(request.user, org)
        if role is None:
            raise NotFoundError()
        if not org.is_active:
            raise ForbiddenError("This organization is suspended.", "org_suspended")
        needed = self.read_role if request.method in SAFE_METHODS else self.required_role
        if not role_at_least(role, needed):
            raise ForbiddenError(
                f"This action needs the {needed} role or higher; yours is {role}.", "role_required"
            )
        request.org = org
        request.role = role
        # Counted once the caller is known to belong here: outsiders spend nothing of the org's.
        scope = self.rate_scope if request.method not in SAFE_METHODS else None
        request_limit_enforce(request, org=org, scope=scope)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        return rate_headers_add(request, response)

    def validated(
        self, serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any
    ) -> dict:
        serializer = serializer_class(data=data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def api_key(self, request: Request):
        return getattr(request.user, "api_key", None)

    def actor(self, request: Request):
        return self.api_key(request) or request.user

    def scope(self, request: Request):
        """The caller's team scope (tenants/teams/scoping.py), read once per request."""
        if getattr(request, "team_scope", None) is None:
            from tenants.teams.scoping import team_scope

            request.team_scope = team_scope(request.user, request.role)
        return request.team_scope


def require(condition: bool, message: str, code: str = "invalid", **details: Any) -> None:
    if not condition:
        raise ApplicationError(message, code, details)
