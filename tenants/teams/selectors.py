"""Reads of an organization's teams. Call inside the organization's schema (the API views are).

A team membership counts only while its user is still a member of the organization: removing
someone from the organization ends their team rights at once, whatever rows remain.
"""

from __future__ import annotations

from django.db.models import QuerySet

from tenants.models import Membership, Organization
from tenants.roles import Role, role_at_least
from tenants.teams.models import Team, TeamMembership, TeamRole


def team_list(*, org: Organization) -> QuerySet[Team]:
    return Team.objects.all()


def team_get(*, team_id) -> Team | None:
    return Team.objects.filter(id=team_id).first()


def _org_member_ids(*, org: Organization, user_ids: list[int]) -> set[int]:
    return set(
        Membership.objects.filter(organization_id=org.id, user_id__in=user_ids).values_list(
            "user_id", flat=True
        )
    )


def team_membership_list(*, org: Organization, team: Team) -> list[TeamMembership]:
    rows = list(TeamMembership.objects.filter(team=team))
    current = _org_member_ids(org=org, user_ids=[row.user_id for row in rows])
    return [row for row in rows if row.user_id in current]


def team_role(*, org: Organization, team: Team, user_id: int | None) -> str | None:
    """The user's role in the team, or None (also when they have left the organization)."""
    if user_id is None:
        return None
    row = TeamMembership.objects.filter(team=team, user_id=user_id).first()
    if row is None or not _org_member_ids(org=org, user_ids=[user_id]):
        return None
    return row.role


def team_manageable_by(
    *, org: Organization, team: Team, org_role: str, user_id: int | None
) -> bool:
    """Organization owners and admins manage every team; a team's maintainers manage theirs."""
    if role_at_least(org_role, Role.ADMIN):
        return True
    return team_role(org=org, team=team, user_id=user_id) == TeamRole.MAINTAINER


def team_ids_for_user(*, org: Organization, user_id: int) -> set:
    if not _org_member_ids(org=org, user_ids=[user_id]):
        return set()
    return set(TeamMembership.objects.filter(user_id=user_id).values_list("team_id", flat=True))
