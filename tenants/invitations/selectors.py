from __future__ import annotations

from django.db.models import QuerySet

from tenants.invitations.models import Invitation
from tenants.models import Organization


def invitation_list(*, org: Organization, status: str | None = None) -> QuerySet[Invitation]:
    rows = Invitation.objects.filter(organization_id=org.id).select_related("invited_by")
    if status == "accepted":
        rows = rows.filter(accepted_at__isnull=False)
    elif status == "revoked":
        rows = rows.filter(revoked_at__isnull=False)
    elif status == "open":
        rows = rows.filter(accepted_at=None, revoked_at=None)
    return rows


def invitation_get(*, org: Organization, invitation_id) -> Invitation | None:
    return Invitation.objects.filter(organization_id=org.id, id=invitation_id).first()
