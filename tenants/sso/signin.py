"""A verified assertion becomes a signed-in member: the account found or created, the role and
teams of the claim mapping applied. Run inside one transaction, after every protocol check.

Which account an assertion signs in as:
1. the one this organization's provider linked to the same subject before (email changes at the
   provider do not matter then);
2. else the account with the same address, only when the provider says the address is verified
   and the account is already a member of this organization, or belongs to no organization and
   is not platform staff. An organization's admin controls its provider and could assert any
   address in its allowed domains: linking an account that is also someone else's member or an
   operator would let them take it over, so that account signs in with its password first (or
   is invited) instead;
3. else a new account, with no usable password.
"""

from __future__ import annotations

import hashlib
import re

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from tenants.limits.quotas import quota_enforce
from tenants.models import Membership, Organization
from tenants.roles import RANK, Role
from tenants.services import audit_record, membership_update
from tenants.sso.models import SsoIdentity, SsoProvider
from tenants.sso.oidc import Assertion, SsoError
from tenants.teams.models import Team, TeamMembership, TeamRole

User = get_user_model()


def _claim_values(claims: dict, claim: str) -> set[str]:
    if not claim:
        return set()
    value = claims.get(claim)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


def mapped_access(provider: SsoProvider, claims: dict) -> tuple[str, set[str], set[str]]:
    """(role, teams granted, teams the mapping manages) for these claims."""
    values = _claim_values(claims, provider.claim)
    role = provider.default_role
    granted: set[str] = set()
    managed: set[str] = set()
    for value, entry in provider.mapping.items():
        team = entry.get("team")
        if team:
            managed.add(team)
        if value in values:
            if RANK[Role(entry["role"])] > RANK[Role(role)]:
                role = entry["role"]
            if team:
                granted.add(team)
    return role, granted, managed


def _domain_allowed(provider: SsoProvider, email: str) -> bool:
    domain = email.rsplit("@", 1)[1]
    return domain in provider.allowed_domains


def _username_for(email: str) -> str:
    base = re.sub(r"[^\w.@+-]", "", email)[:140] or "sso-user"
    candidate, n = base, 1
    while User.objects.filter(username=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _account_for(*, org: Organization, assertion: Assertion) -> tuple[object, str]:
    identity = (
        SsoIdentity.objects.select_related("user")
        .filter(organization=org, issuer=assertion.issuer, subject=assertion.subject)
        .first()
    )
    if identity is not None:
        if not identity.user.is_active:
            raise SsoError("This account is deactivated.", "account_inactive", status=403)
        return identity.user, "returning"
    existing = User.objects.filter(email__iexact=assertion.email).order_by("id").first()
    if existing is not None:
        member_here = Membership.objects.filter(organization=org, user=existing).exists()
        elsewhere = Membership.objects.filter(user=existing).exclude(organization=org).exists()
        if not existing.is_active:
            raise SsoError("This account is deactivated.", "account_inactive", status=403)
        if not member_here and (elsewhere or existing.is_staff or existing.is_superuser):
            raise SsoError(
                "An account with this address already exists and belongs to other "
                "organizations. Sign in with its password, or ask an admin of this "
                "organization to invite it, then use single sign-on.",
                "sso_account_exists",
                status=409,
            )
        return existing, "linked"
    user = User.objects.create_user(username=_username_for(assertion.email), email=assertion.email)
    user.set_unusable_password()
    user.save(update_fields=["password"])
    return user, "created"


def _teams_apply(*, org: Organization, user, granted: set[str], managed: set[str]) -> dict:
    added, removed = [], []
    with schema_context(org.schema_name):
        teams = {str(t.id): t for t in Team.objects.filter(id__in=managed)}
        for team_id in sorted(granted):
            team = teams.get(team_id)
            if team is None:
                continue  # deleted since the mapping was saved
            _, created = TeamMembership.objects.get_or_create(
                team=team, user_id=user.pk, defaults={"role": TeamRole.MEMBER}
            )
            if created:
                added.append(team.slug)
        # A team the mapping manages follows the claim: no matching value, no membership.
        gone = TeamMembership.objects.filter(
            user_id=user.pk, team_id__in=[t for t in managed - granted if t in teams]
        ).select_related("team")
        removed = sorted(row.team.slug for row in gone)
        gone.delete()
    return {"teams_added": added, "teams_removed": removed}


def _lock_subject(*, org: Organization, assertion: Assertion) -> None:
    """Two first sign-ins of one subject at once would each create an account: the second waits
    here for the first to commit, then finds its link."""
    digest = hashlib.sha256(f"{org.pk}|{assertion.issuer}|{assertion.subject}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
        )


@transaction.atomic
def sso_sign_in(*, org: Organization, provider: SsoProvider, assertion: Assertion):
    """The user to log in, member of `org` with the mapped role and teams."""
    if not org.is_active:
        raise SsoError("This organization is suspended.", "org_suspended", status=403)
    if not assertion.email_verified:
        raise SsoError(
            "The provider has not verified this email address, so it cannot sign in here.",
            "sso_email_unverified",
            status=403,
        )
    if not _domain_allowed(provider, assertion.email):
        raise SsoError(
            f"Addresses at {assertion.email.rsplit('@', 1)[1]} may not sign in to "
            f"{org.name}: its single sign-on accepts "
            f"{', '.join('@' + d for d in provider.allowed_domains)}.",
            "sso_email_domain",
            status=403,
        )
    _lock_subject(org=org, assertion=assertion)
    user, how = _account_for(org=org, assertion=assertion)
    role, granted, managed = mapped_access(provider, assertion.claims)
    actor = f"sso:{assertion.issuer}"[:200]
    membership = Membership.objects.select_for_update().filter(organization=org, user=user).first()
    if membership is None:
        # Not membership_add: it finds the account by email again, and this one is decided.
        quota_enforce(
            org_id=org.pk,
            quota="max_members",
            count=lambda: Membership.objects.filter(organization=org).count(),
        )
        membership = Membership.objects.create(organization=org, user=user, role=role)
        audit_record(
            org=org,
            action="member.added",
            actor=actor,
            target=user.get_username(),
            details={"role": role},
        )
    elif membership.role != role and membership.role != Role.OWNER:
        # The provider is the source of truth for roles it can grant; owners are left alone.
        membership_update(membership=membership, role=role, actor_role=Role.OWNER, actor=user)
    teams = _teams_apply(org=org, user=user, granted=granted, managed=managed)
    now = timezone.now()
    SsoIdentity.objects.update_or_create(
        organization=org,
        issuer=assertion.issuer,
        subject=assertion.subject,
        defaults={"user": user, "email": assertion.email, "last_login_at": now},
    )
    audit_record(
        org=org,
        action="sso.signed_in",
        actor=actor,
        target=user.get_username(),
        details={"account": how, "role": membership.role, **teams},
    )
    return user, membership
