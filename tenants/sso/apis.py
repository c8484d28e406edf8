"""`/api/v1/orgs/<slug>/sso/`: the organization's OpenID Connect provider, for owners and admins.

The client secret is write-only: a PUT without it keeps the stored one, and reads show whether
one is set and its hint.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import NotFoundError
from tenants.roles import Role
from tenants.sso import selectors, services
from tenants.sso.models import MAPPABLE_ROLE_CHOICES as ROLE_CHOICES
from tenants.sso.models import SsoProvider
from tenants.sso.pages import redirect_uri


def sso_provider_output(request, provider: SsoProvider) -> dict:
    org = provider.organization
    return {
        "id": str(provider.id),
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret_set": bool(provider.client_secret_encrypted),
        "client_secret_hint": provider.client_secret_hint or None,
        "scopes": provider.scopes,
        "allowed_domains": list(provider.allowed_domains),
        "claim": provider.claim,
        "mapping": provider.mapping,
        "default_role": provider.default_role,
        "sso_required": provider.sso_required,
        "login_url": request.build_absolute_uri(selectors.sso_login_path(org)),
        "redirect_uri": redirect_uri(request, org),
        "warnings": list(getattr(provider, "save_warnings", [])),
        "created_at": provider.created_at.isoformat(),
        "updated_at": provider.updated_at.isoformat(),
    }


class MappingEntry(StrictSerializer):
    role = serializers.ChoiceField(choices=ROLE_CHOICES, default=Role.MEMBER)
    team = serializers.CharField(
        max_length=100,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="A team's id, slug or name; stored as its id.",
    )


class SsoProviderOutput(serializers.Serializer):
    class MappingOutput(serializers.Serializer):
        role = serializers.ChoiceField(choices=ROLE_CHOICES)
        team = serializers.UUIDField(allow_null=True)

    id = serializers.UUIDField()
    issuer = serializers.CharField()
    client_id = serializers.CharField()
    client_secret_set = serializers.BooleanField()
    client_secret_hint = serializers.CharField(allow_null=True)
    scopes = serializers.CharField()
    allowed_domains = serializers.ListField(child=serializers.CharField())
    claim = serializers.CharField(allow_blank=True)
    mapping = serializers.DictField(child=MappingOutput())
    default_role = serializers.ChoiceField(choices=ROLE_CHOICES)
    sso_required = serializers.BooleanField()
    login_url = serializers.CharField(help_text="Where members start signing in.")
    redirect_uri = serializers.CharField(help_text="Register this at the provider.")
    warnings = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class SsoProviderApi(OrgMemberApi):
    read_role = Role.ADMIN
    required_role = Role.ADMIN

    class SsoProviderInput(StrictSerializer):
        issuer = serializers.CharField(max_length=500, help_text="https://login.example.com")
        client_id = serializers.CharField(max_length=255)
        client_secret = serializers.CharField(
            max_length=1000,
            required=False,
            allow_blank=True,
            write_only=True,
            style={"input_type": "password"},
            help_text="Write-only. Omit to keep the stored secret; empty for a public client.",
        )
        scopes = serializers.CharField(max_length=300, default="openid email profile")
        allowed_domains = serializers.ListField(
            child=serializers.CharField(max_length=253), min_length=1, max_length=50
        )
        claim = serializers.CharField(
            max_length=100,
            required=False,
            allow_blank=True,
            default="",
            help_text="The ID token or userinfo claim the mapping reads, e.g. groups.",
        )
        mapping = serializers.DictField(child=MappingEntry(), required=False, default=dict)
        default_role = serializers.ChoiceField(choices=ROLE_CHOICES, default=Role.MEMBER)
        sso_required = serializers.BooleanField(default=False)

    def provider(self, request) -> SsoProvider:
        provider = selectors.sso_provider_get(org=request.org)
        if provider is None:
            raise NotFoundError(
                "Single sign-on is not configured for this organization.", "sso_not_configured"
            )
        return provider

    @extend_schema(
        summary="The organization's single sign-on provider",
        responses={200: SsoProviderOutput},
    )
    def get(self, request, org_slug):
        return Response(sso_provider_output(request, self.provider(request)))

    @extend_schema(
        summary="Register or replace the single sign-on provider",
        request=SsoProviderInput,
        responses={200: SsoProviderOutput},
    )
    def put(self, request, org_slug):
        data = dict(self.validated(self.SsoProviderInput, request.data))
        provider = services.sso_provider_set(
            org=request.org, actor=self.actor(request), actor_role=request.role, **data
        )
        return Response(sso_provider_output(request, provider))

    @extend_schema(summary="Remove the single sign-on provider", responses={204: None})
    def delete(self, request, org_slug):
        self.provider(request)
        services.sso_provider_delete(
            org=request.org, actor=self.actor(request), actor_role=request.role
        )
        return Response(status=204)
