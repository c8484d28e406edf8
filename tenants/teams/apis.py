"""Teams of an organization: `/api/v1/orgs/<slug>/teams/…`.

Every member reads the organization's teams; owners and admins create, rename and delete them;
they and each team's maintainers manage the team's members.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import NotFoundError
from cadence_site.openapi import results_of
from tenants.roles import Role
from tenants.teams import selectors, services
from tenants.teams.models import Team, TeamMembership, TeamRole

User = get_user_model()


def team_output(team: Team) -> dict:
    return {
        "id": str(team.id),
        "slug": team.slug,
        "name": team.name,
        "description": team.description,
        "created_at": team.created_at.isoformat(),
        "updated_at": team.updated_at.isoformat(),
    }


def team_members_output(rows: list[TeamMembership]) -> list[dict]:
    users = {u.pk: u for u in User.objects.filter(pk__in=[row.user_id for row in rows])}
    return [
        {
            "user": {
                "id": row.user_id,
                "username": users[row.user_id].get_username(),
                "email": users[row.user_id].email,
            },
            "role": row.role,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
        if row.user_id in users
    ]


class TeamOutput(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TeamMemberOutput(serializers.Serializer):
    class UserOutput(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        email = serializers.CharField(allow_blank=True)

    user = UserOutput()
    role = serializers.ChoiceField(choices=TeamRole.choices)
    created_at = serializers.DateTimeField()


class _TeamApi(OrgMemberApi):
    def team(self, team_id) -> Team:
        team = selectors.team_get(team_id=team_id)
        if team is None:
            raise NotFoundError("No such team.")
        return team


class TeamListApi(_TeamApi):
    required_role = Role.ADMIN

    class TeamCreateInput(StrictSerializer):
        name = serializers.CharField(max_length=100)
        slug = serializers.SlugField(max_length=50, required=False)
        description = serializers.CharField(max_length=1000, required=False, allow_blank=True)

    @extend_schema(summary="The organization's teams", responses={200: results_of(TeamOutput)})
    def get(self, request, org_slug):
        teams = selectors.team_list(org=request.org)
        return Response({"results": [team_output(t) for t in teams]})

    @extend_schema(summary="Create a team", request=TeamCreateInput, responses={201: TeamOutput})
    def post(self, request, org_slug):
        data = self.validated(self.TeamCreateInput, request.data)
        team = services.team_create(
            org=request.org, org_role=request.role, actor=self.actor(request), **data
        )
        return Response(team_output(team), status=201)


class TeamDetailApi(_TeamApi):
    required_role = Role.ADMIN

    class TeamUpdateInput(StrictSerializer):
        name = serializers.CharField(max_length=100, required=False)
        slug = serializers.SlugField(max_length=50, required=False)
        description = serializers.CharField(max_length=1000, required=False, allow_blank=True)

    @extend_schema(summary="One team", responses={200: TeamOutput})
    def get(self, request, org_slug, team_id):
        return Response(team_output(self.team(team_id)))

    @extend_schema(
        summary="Rename or describe a team", request=TeamUpdateInput, responses={200: TeamOutput}
    )
    def patch(self, request, org_slug, team_id):
        team = self.team(team_id)
        data = self.validated(self.TeamUpdateInput, request.data)
        team = services.team_update(
            org=request.org, team=team, org_role=request.role, actor=self.actor(request), **data
        )
        return Response(team_output(team))

    @extend_schema(summary="Delete a team", responses={204: None})
    def delete(self, request, org_slug, team_id):
        team = self.team(team_id)
        services.team_delete(
            org=request.org, team=team, org_role=request.role, actor=self.actor(request)
        )
        return Response(status=204)


class TeamMemberListApi(_TeamApi):
    # Members may reach the write handlers: whether they may change this team (as its
    # maintainer) is the service's decision, on the caller's current team role.
    required_role = Role.MEMBER

    class TeamMemberInput(StrictSerializer):
        user = serializers.IntegerField(
            min_value=1, help_text="The user's id (a member of the organization)."
        )
        role = serializers.ChoiceField(choices=TeamRole.choices, default=TeamRole.MEMBER)

    @extend_schema(summary="A team's members", responses={200: results_of(TeamMemberOutput)})
    def get(self, request, org_slug, team_id):
        team = self.team(team_id)
        rows = selectors.team_membership_list(org=request.org, team=team)
        return Response({"results": team_members_output(rows)})

    @extend_schema(
        summary="Add a member to a team or change their team role",
        request=TeamMemberInput,
        responses={200: TeamMemberOutput},
    )
    def post(self, request, org_slug, team_id):
        team = self.team(team_id)
        data = self.validated(self.TeamMemberInput, request.data)
        row = services.team_member_set(
            org=request.org,
            team=team,
            user_id=data["user"],
            role=data["role"],
            org_role=request.role,
            actor=self.actor(request),
        )
        return Response(team_members_output([row])[0])


class TeamMemberDetailApi(_TeamApi):
    required_role = Role.MEMBER

    @extend_schema(summary="Remove a member from a team", responses={204: None})
    def delete(self, request, org_slug, team_id, user_id):
        team = self.team(team_id)
        services.team_member_remove(
            org=request.org,
            team=team,
            user_id=user_id,
            org_role=request.role,
            actor=self.actor(request),
        )
        return Response(status=204)
