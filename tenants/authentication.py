"""Who is calling: a session (with CSRF) or `Authorization: Bearer ck_…`."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from cadence_site.requestlog import principal_var
from tenants import access_watch, services
from tenants.models import ApiKey
from tenants.rights import api_key_effective_rights, api_key_effective_role
from tenants.selectors import API_KEY_FIELDS, api_key_by_secret


class ApiKeyPrincipal:
    """request.user for API-key calls: authenticated, never staff, scoped to one organization."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    is_active = True
    pk = None
    id = None

    def __init__(self, key: ApiKey, role: str | None = None, until=None):
        self.api_key = key
        # The key's effective role (tenants/rights.py), computed once per request or connection.
        self.role = role if role is not None else api_key_effective_role(key)
        # The earliest expiry among the keys vouching for it (None: none expires).
        self.until = until

    def get_username(self) -> str:
        return f"key:{self.api_key.prefix}"

    def __str__(self) -> str:
        return self.get_username()


def api_key_authenticate(secret: str) -> ApiKeyPrincipal:
    """The caller for a live key, or AuthenticationFailed with a code saying why. What a key
    resolved to is kept in this process while no row it was read from changed
    (tenants/access_watch.py): a request with a known key then reads nothing."""
    kept = access_watch.recall("key", secret)
    if kept is not None:
        fields, role, until = kept
        key = ApiKey(**fields)
        key._state.adding = False
        services.api_key_touch(key=key)
        return ApiKeyPrincipal(key, role, until)
    before = access_watch.stamp()
    # Watched, the row is read from the database (what is kept must be what committed last);
    # unwatched, from the prefix cache that a revocation clears.
    key = api_key_by_secret(secret=secret, cached=not access_watch.listening())
    if key is None:
        raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed(
            "This API key has been revoked.", code="api_key_revoked"
        )
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise exceptions.AuthenticationFailed("This API key has expired.", code="api_key_expired")
    role, until = api_key_effective_rights(key)
    if role is None:
        raise exceptions.AuthenticationFailed(
            "This API key no longer works: whoever created it no longer holds a role in the "
            "organization. An owner can reassign the key to a current member.",
            code="api_key_creator_gone",
        )
    services.api_key_touch(key=key)
    access_watch.remember(
        "key",
        secret,
        ({name: getattr(key, name) for name in API_KEY_FIELDS}, role, until),
        org_id=key.organization_id,
        before=before,
        expires=until,
    )
    return ApiKeyPrincipal(key, role, until)


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
        principal = api_key_authenticate(token)
        principal_var.set(f"key:{principal.api_key.prefix}")
        return principal, principal.api_key

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
