"""Who is calling /v1/: the API key names the organization, its role and its rate limit."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from django.http import HttpRequest, JsonResponse
from rest_framework.exceptions import AuthenticationFailed

from cadence_site.requestlog import org_var, principal_var
from chat.openai.errors import openai_error
from tenants import access_watch, ratelimit, services
from tenants.context import in_public
from tenants.limits import enforce, plans
from tenants.teams.scoping import TeamScope, key_team_scope

logger = logging.getLogger(__name__)

# --- who is calling -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    org_id: int
    org_public_id: str
    org_slug: str
    schema_name: str
    org_active: bool
    limits: plans.Limits
    key_limits: plans.KeyLimits
    key_id: str
    key_prefix: str
    role: str
    # Which orchestrators (models) the key may use (tenants/teams/scoping.py).
    team_scope: TeamScope

    @property
    def requests_per_minute(self) -> int:
        return self.limits.requests_per_minute

    @property
    def principal(self) -> str:
        return f"key:{self.key_prefix}"  # the same string as ApiKeyPrincipal, never the secret


def _caller_for_secret(*, secret: str) -> Caller:
    """Synchronous, in the public schema: the key (AuthenticationFailed if unusable) and its organization."""
    from django.db import connection

    from tenants.authentication import api_key_authenticate
    from tenants.models import Organization

    before = access_watch.stamp()
    principal = api_key_authenticate(secret)
    key = principal.api_key
    # Read (one primary-key statement) so a status change applies at once, then kept with the
    # key while no row changes (_caller_kept); the limits are kept in-process for a few seconds
    # (tenants/limits/plans.py).
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, public_id, slug, schema_name, status FROM {Organization._meta.db_table}"
            " WHERE id = %s",
            [key.organization_id],
        )
        org = cursor.fetchone()
    if org is None:  # deleted while the key's row was still cached
        raise AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    org_id, public_id, slug, schema_name, status = org
    caller = Caller(
        org_id=org_id,
        org_public_id=str(public_id),
        org_slug=slug,
        schema_name=schema_name,
        org_active=status == Organization.Status.ACTIVE,
        limits=plans.org_limits(org_id=org_id),
        key_limits=plans.key_limits(key_id=key.id),
        key_id=str(key.id),
        key_prefix=key.prefix,
        role=principal.role,
        team_scope=key_team_scope(key=key, role=principal.role),
    )
    access_watch.remember(
        "v1", secret, (caller, key.pk), org_id=org_id, before=before, expires=principal.until
    )
    return caller


def _caller_kept(secret: str) -> Caller | None:
    """The caller this process resolved for `secret` while nothing it was read from changed
    (tenants/access_watch.py), with the limits it holds: no thread hop, no statement. None
    when it must be read (not kept, limits not held, or the key's use due to be recorded)."""
    kept = access_watch.recall("v1", secret)
    if kept is None:
        return None
    caller, key_pk = kept
    if services.api_key_touch_due(key_id=key_pk):
        return None
    limits = plans.org_limits_cached(org_id=caller.org_id)
    key_limits = plans.key_limits_cached(key_id=key_pk)
    if limits is None or key_limits is None:
        return None
    return dataclasses.replace(caller, limits=limits, key_limits=key_limits)


async def _authorize(request: HttpRequest) -> Caller | JsonResponse:
    """The caller, or the 401/403/429 response to send instead. Counts the request in the budget."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return openai_error(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="cadence"'},
        )
    try:
        caller = _caller_kept(token) or await in_public(_caller_for_secret, secret=token)
    except AuthenticationFailed as exc:
        return openai_error(
            401,
            str(exc.detail),
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="cadence"'},
        )
    org_var.set(caller.org_slug)
    principal_var.set(caller.principal)
    if not caller.org_active:
        return openai_error(
            403,
            "This organization is suspended.",
            code="org_suspended",
            type="permission_error",
        )
    decision = await ratelimit.adecide(
        enforce.request_buckets(
            limits=caller.limits,
            caller=enforce.Caller(caller.principal, caller.key_id),
            key_limits=caller.key_limits,
        )
    )
    if not decision.allowed:
        return openai_error(
            429,
            enforce.refusal_message(decision),
            code="rate_limit_exceeded",
            type="rate_limit_exceeded",
            headers={
                **decision.headers(),
                "x-ratelimit-limit-requests": str(decision.limit),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{decision.retry_after_seconds}s",
            },
        )
    return caller
