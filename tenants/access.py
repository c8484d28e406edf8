"""A caller's role in an organization: one answer for every surface (REST, admin, WebSocket)."""

from __future__ import annotations

from tenants.resolution import OrgRef
from tenants.selectors import membership_role


def caller_role(user, org: OrgRef) -> str | None:
    """The role of a user or API key in `org`, or None when it does not belong there."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    key = getattr(user, "api_key", None)
    if key is not None:
        # The effective role (the lower of the key's and its creator's), not the key's own.
        return user.role if key.organization_id == org.id else None
    if not user.is_active:
        return None
    return membership_role(user_id=user.pk, org_id=org.id)
