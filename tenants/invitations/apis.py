"""Invitations: `/api/v1/orgs/<slug>/invitations/…` for the inviters, `/api/v1/invitations/accept/`
for the invitee (who may not have an account yet)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import ApplicationError, NotFoundError
from cadence_site.openapi import results_of
from tenants.invitations import selectors, services
from tenants.invitations.models import Invitation
from tenants.roles import Role
from tenants.teams.models import TeamRole
from tenants.teams.selectors import team_get

STATUSES = ("open", "accepted", "revoked")


def invitation_output(invitation: Invitation) -> dict:
    return {
        "id": str(invitation.id),
        "email": invitation.email,
        "role": invitation.role,
        "team": str(invitation.team_id) if invitation.team_id else None,
        "team_role": invitation.team_role or None,
        "status": invitation.status,
        "invited_by": invitation.invited_by.get_username() if invitation.invited_by_id else None,
        "expires_at": invitation.expires_at.isoformat(),
        "sent_at": invitation.sent_at.isoformat() if invitation.sent_at else None,
        "send_count": invitation.send_count,
        "accepted_at": invitation.accepted_at.isoformat() if invitation.accepted_at else None,
        "created_at": invitation.created_at.isoformat(),
    }


class InvitationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    team = serializers.UUIDField(allow_null=True)
    team_role = serializers.ChoiceField(choices=TeamRole.choices, allow_null=True)
    status = serializers.ChoiceField(choices=["pending", "expired", "accepted", "revoked"])
    invited_by = serializers.CharField(allow_null=True)
    expires_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    send_count = serializers.IntegerField()
    accepted_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


def accept_base(request) -> str:
    return request.build_absolute_uri("/invitations/")


class InvitationListApi(OrgMemberApi):
    # Team maintainers (organization members) invite to their teams: the service decides.
    read_role = Role.MEMBER
    required_role = Role.MEMBER

    class InvitationCreateInput(StrictSerializer):
        email = serializers.EmailField(max_length=254)
        role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
        team = serializers.UUIDField(required=False, help_text="Invite into this team too.")
        team_role = serializers.ChoiceField(choices=TeamRole.choices, default=TeamRole.MEMBER)

    @extend_schema(
        summary="The organization's invitations",
        parameters=[OpenApiParameter("status", str, enum=list(STATUSES), required=False)],
        responses={200: results_of(InvitationOutput)},
    )
    def get(self, request, org_slug):
        status = request.query_params.get("status")
        if status is not None and status not in STATUSES:
            raise ApplicationError(
                f"status must be one of {', '.join(STATUSES)}.", "invalid", {"field": "status"}
            )
        rows = selectors.invitation_list(org=request.org, status=status)
        return Response({"results": [invitation_output(i) for i in rows]})

    @extend_schema(
        summary="Invite someone by email",
        request=InvitationCreateInput,
        responses={201: InvitationOutput},
    )
    def post(self, request, org_slug):
        data = self.validated(self.InvitationCreateInput, request.data)
        team = None
        if "team" in data:
            team = team_get(team_id=data["team"])
            if team is None:
                raise ApplicationError("No such team.", "unknown_team", {"field": "team"})
        invitation = services.invitation_create(
            org=request.org,
            email=data["email"],
            role=data["role"],
            team=team,
            team_role=data["team_role"],
            actor=self.actor(request),
            actor_role=request.role,
            accept_url=accept_base(request),
        )
        return Response(invitation_output(invitation), status=201)


class _InvitationApi(OrgMemberApi):
    read_role = Role.MEMBER
    required_role = Role.MEMBER

    def invitation(self, request, invitation_id) -> Invitation:
        invitation = selectors.invitation_get(org=request.org, invitation_id=invitation_id)
        if invitation is None:
            raise NotFoundError("No such invitation.")
        return invitation


class InvitationDetailApi(_InvitationApi):
    @extend_schema(summary="Revoke an invitation", responses={200: InvitationOutput})
    def delete(self, request, org_slug, invitation_id):
        invitation = services.invitation_revoke(
            invitation=self.invitation(request, invitation_id),
            actor=self.actor(request),
            actor_role=request.role,
        )
        return Response(invitation_output(invitation))


class InvitationResendApi(_InvitationApi):
    @extend_schema(
        summary="Resend an invitation (a new link; the old one stops working)",
        request=None,
        responses={200: InvitationOutput},
    )
    def post(self, request, org_slug, invitation_id):
        invitation = services.invitation_resend(
            invitation=self.invitation(request, invitation_id),
            actor=self.actor(request),
            actor_role=request.role,
            accept_url=accept_base(request),
        )
        return Response(invitation_output(invitation))


class InvitationAcceptApi(APIView):
    """Anyone holding the token: a signed-in user with the invited address, or a new account."""

    permission_classes = [AllowAny]

    class AcceptInput(StrictSerializer):
        token = serializers.CharField(max_length=100)
        username = serializers.CharField(max_length=150, required=False, allow_blank=True)
        password = serializers.CharField(
            max_length=128, required=False, allow_blank=True, style={"input_type": "password"}
        )

    class AcceptedOutput(serializers.Serializer):
        org = serializers.CharField()
        role = serializers.ChoiceField(choices=Role.choices)
        team = serializers.UUIDField(allow_null=True)
        username = serializers.CharField()

    @extend_schema(
        summary="Accept an invitation",
        request=AcceptInput,
        responses={200: AcceptedOutput},
    )
    def post(self, request):
        serializer = self.AcceptInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        invitation, user = services.invitation_accept(
            token=data["token"],
            user=request.user,
            username=data.get("username", ""),
            password=data.get("password", ""),
        )
        return Response(
            {
                "org": invitation.organization.slug,
                "role": invitation.role,
                "team": str(invitation.team_id) if invitation.team_id else None,
                "username": user.get_username(),
            }
        )
