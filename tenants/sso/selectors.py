"""Reads of single sign-on configuration (public schema)."""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import Organization
from tenants.resolution import OrgRef
from tenants.sso.models import SsoProvider


def sso_provider_get(*, org: Organization | OrgRef) -> SsoProvider | None:
    return SsoProvider.objects.filter(organization_id=org.id).first()


def sso_required_orgs_for_user(*, user_id: int) -> QuerySet[Organization]:
    """The organizations of this user that turned password login off for their members."""
    return Organization.objects.filter(
        memberships__user_id=user_id, sso_provider__sso_required=True
    ).order_by("slug")


def sso_login_path(org: Organization | OrgRef) -> str:
    return f"/orgs/{org.slug}/sso/login/"


def sso_callback_path(org: Organization | OrgRef) -> str:
    return f"/orgs/{org.slug}/sso/callback/"
