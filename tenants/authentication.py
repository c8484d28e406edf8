"""Who is calling: a session (with CSRF) or `Authorization: Bearer ck_…`."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from cadence_site.requestlog import principal_var
from tenants import services
from tenants.models import ApiKey
from tenants.selectors import api_key_by_secret


class ApiKeyPrincipal:
    """request.user for API-key calls: authenticated, never staff, scoped to one organization."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    is_active = True
    pk = None
    id = None

    def __init__(self, key: ApiKey):
        self.api_key = key

    def get_username(self) -> str:
        return f"key:{self.api_key.prefix}"

    def __str__(self) -> str:
        return self.get_username()


def api_key_authenticate(secret: str) -> ApiKey:
    """The live key for `secret`, or AuthenticationFailed with a code saying why."""
    key = api_key_by_secret(secret=secret, cached=True)
    if key is None:
        raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed(
            "This API key has been revoked.", code="api_key_revoked"
        )
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise exceptions.AuthenticationFailed("This API key has expired.", code="api_key_expired")
    services.api_key_touch(key=key)
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        token = token.strip()
        if not token:
            raise exceptions.AuthenticationFailed(
                "The Authorization header carries no key.", code="invalid_api_key"
            )
        key = api_key_authenticate(token)
        principal_var.set(f"key:{key.prefix}")
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="cadence"'


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            principal_var.set(f"user:{result[0].pk}")
        return result

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when no credentials came: the Bearer scheme is offered.
        return 'Bearer realm="cadence"'
