"""Reads scoped to the caller."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import ApiKey, Membership, Organization


def organization_list_for_user(*, user) -> QuerySet[Organization]:
    return (
        Organization.objects.filter(memberships__user=user).select_related("plan").order_by("slug")
    )


def organization_get(*, org_id: int) -> Organization:
    return Organization.objects.select_related("plan").get(pk=org_id)


def membership_role(*, user_id: int, org_id: int) -> str | None:
    return (
        Membership.objects.filter(user_id=user_id, organization_id=org_id)
        .values_list("role", flat=True)
        .first()
    )


def membership_list(*, org_id: int) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(organization_id=org_id)
        .select_related("user")
        .order_by("user__username")
    )


def membership_get(*, org_id: int, membership_id) -> Membership | None:
    return (
        Membership.objects.filter(organization_id=org_id, pk=membership_id)
        .select_related("user", "organization")
        .first()
    )


def memberships_for_user(*, user) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user)
        .select_related("organization")
        .order_by("organization__slug")
    )


def api_key_list(*, org_id: int) -> QuerySet[ApiKey]:
    return (
        ApiKey.objects.filter(organization_id=org_id)
        .select_related("created_by")
        .order_by("-created_at")
    )


def api_key_get(*, org_id: int, key_id) -> ApiKey | None:
    return (
        ApiKey.objects.filter(organization_id=org_id, pk=key_id)
        .select_related("organization")
        .first()
    )


API_KEY_CACHE_TTL = 60
# The columns authentication keeps of a key (in Redis by prefix, in-process by secret).
API_KEY_FIELDS = (
    "id",
    "organization_id",
    "name",
    "prefix",
    "secret_hash",
    "role",
    "created_by_id",
    "created_by_key_id",
    "team_id",
    "expires_at",
    "revoked_at",
    "created_at",
)


def api_key_cache_key(prefix: str) -> str:
    return f"apikey:prefix:{prefix}"


def api_key_by_secret(*, secret: str, cached: bool = False) -> ApiKey | None:
    """The key whose secret this is. With `cached` (authentication), rows are kept by prefix (hash
    included, never the secret) for a minute and dropped when a key is revoked, so authenticating
    a request costs no query."""
    from django.core.cache import cache

    from tenants.keys import PREFIX_LENGTH, key_matches, looks_like_key

    if not looks_like_key(secret):
        return None
    prefix = secret[:PREFIX_LENGTH]
    row = cache.get(api_key_cache_key(prefix)) if cached else None
    if row is not None:
        key = ApiKey(**row)
        key._state.adding = False
    else:
        key = ApiKey.objects.filter(prefix=prefix).first()
        if key is None:
            return None
        cache.set(
            api_key_cache_key(prefix),
            {name: getattr(key, name) for name in API_KEY_FIELDS},
            API_KEY_CACHE_TTL,
        )
    if not key_matches(secret, key.secret_hash):
        return None
    return key
