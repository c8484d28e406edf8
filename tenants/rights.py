"""Effective rights of an API key: never more than whoever vouches for it holds right now.

A key's effective role is the lower of its own role and its creator's current role. The creator
is a user (their membership in the key's organization, read at every use) or, for a key minted
with a key, that key (its own effective role, recursively). A key stops working when its creator
leaves the organization, is deactivated, or (for a minted key) is revoked or expires. Platform
staff creating a key in the operators' admin vouch for it as an owner would, while they are
active staff. A key with no recorded creator has nobody vouching for it: it works for no one.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.utils import timezone

from tenants.models import ApiKey, Membership
from tenants.roles import RANK, Role

# A chain of keys minting keys deeper than this is refused rather than walked.
MAX_CHAIN = 8


def lower_role(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    return a if RANK[Role(a)] <= RANK[Role(b)] else b


def key_is_live(key: ApiKey, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def _user_role(*, user_id: int, org_id: int) -> str | None:
    """The active user's role in the organization; owner for active staff who are not members.
    One statement (it runs on every request with a key)."""
    from django.db import connection

    users = get_user_model()._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT m.role FROM {Membership._meta.db_table} m"
            "         WHERE m.user_id = u.id AND m.organization_id = %s), u.is_staff"
            f" FROM {users} u WHERE u.id = %s AND u.is_active",
            [org_id, user_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    role, staff = row
    if role is not None:
        return role
    return Role.OWNER if staff else None


def api_key_effective_role(key: ApiKey) -> str | None:
    """The role `key` may act with now, or None when it may not act at all."""
    return api_key_effective_rights(key)[0]


def api_key_effective_rights(key: ApiKey) -> tuple[str | None, datetime | None]:
    """(`api_key_effective_role`, the earliest expiry among the keys that vouch for it: the
    role holds until then unless a row changes; tenants/access_watch.py keeps it that long)."""
    now = timezone.now()
    role: str | None = key.role
    current = key
    seen = {key.pk}
    until: datetime | None = None
    for _ in range(MAX_CHAIN):
        if not key_is_live(current, now):
            return None, None
        if current.expires_at is not None and (until is None or current.expires_at < until):
            until = current.expires_at
        if current.created_by_key_id is not None:
            if current.created_by_key_id in seen:
                return None, None
            seen.add(current.created_by_key_id)
            parent = (
                ApiKey.objects.filter(
                    pk=current.created_by_key_id, organization_id=key.organization_id
                )
                .only(
                    "id", "role", "created_by_id", "created_by_key_id", "revoked_at", "expires_at"
                )
                .first()
            )
            if parent is None:
                return None, None
            role = lower_role(role, parent.role)
            current = parent
            continue
        if current.created_by_id is not None:
            role = lower_role(
                role, _user_role(user_id=current.created_by_id, org_id=key.organization_id)
            )
            return (role, until) if role is not None else (None, None)
        return None, None
    return None, None


def api_key_rights_for_org(*, org_id: int, keys: list[ApiKey]) -> dict:
    """Effective roles of many keys of one organization in two queries (for listings)."""
    members = dict(
        Membership.objects.filter(organization_id=org_id, user__is_active=True).values_list(
            "user_id", "role"
        )
    )
    all_keys = {
        k.pk: k
        for k in ApiKey.objects.filter(organization_id=org_id).only(
            "id", "role", "created_by_id", "created_by_key_id", "revoked_at", "expires_at"
        )
    }
    staff_ids = set(
        get_user_model()
        .objects.filter(
            pk__in={k.created_by_id for k in all_keys.values() if k.created_by_id} - set(members),
            is_active=True,
            is_staff=True,
        )
        .values_list("pk", flat=True)
    )
    now = timezone.now()

    def effective(key: ApiKey) -> str | None:
        role: str | None = key.role
        current, seen = key, {key.pk}
        for _ in range(MAX_CHAIN):
            if not key_is_live(current, now):
                return None
            if current.created_by_key_id is not None:
                parent = all_keys.get(current.created_by_key_id)
                if parent is None or parent.pk in seen:
                    return None
                seen.add(parent.pk)
                role, current = lower_role(role, parent.role), parent
                continue
            if current.created_by_id is not None:
                creator = members.get(current.created_by_id)
                if creator is None and current.created_by_id in staff_ids:
                    creator = Role.OWNER
                return lower_role(role, creator)
            return None
        return None

    return {k.pk: effective(k) for k in keys}


def api_keys_vouched_by(*, org_id: int, user_id: int) -> list[ApiKey]:
    """Live keys that stop working if `user_id` leaves: created by them, or minted down a chain
    that starts with one of their keys."""
    found: list[ApiKey] = []
    frontier = list(
        ApiKey.objects.filter(organization_id=org_id, created_by_id=user_id, created_by_key=None)
    )
    seen: set = set()
    for _ in range(MAX_CHAIN):
        frontier = [k for k in frontier if k.pk not in seen]
        if not frontier:
            break
        seen.update(k.pk for k in frontier)
        # A key already revoked or expired has stopped; so have the keys it minted.
        frontier = [k for k in frontier if key_is_live(k)]
        found.extend(frontier)
        frontier = list(
            ApiKey.objects.filter(
                organization_id=org_id, created_by_key_id__in=[k.pk for k in frontier]
            )
        )
    return found
