from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import ApplicationError, ForbiddenError, NotFoundError
from cadence_site.openapi import results_of
from tenants import selectors, services, tickets
from tenants.models import ApiKey, Membership, Organization, Plan
from tenants.rights import api_key_effective_role, api_key_rights_for_org, api_keys_vouched_by
from tenants.roles import Role


def organization_output(org: Organization, role: str | None = None) -> dict:
    data = {
        "id": str(org.public_id),
        "slug": org.slug,
        "name": org.name,
        "status": org.status,
        "plan": org.plan.slug if org.plan_id else None,
        "created_at": org.created_at.isoformat(),
        "updated_at": org.updated_at.isoformat(),
    }
    if role is not None:
        data["role"] = role
    return data


def membership_output(m: Membership) -> dict:
    return {
        "id": str(m.id),
        "user": {"id": m.user.pk, "username": m.user.get_username(), "email": m.user.email},
        "role": m.role,
        "created_at": m.created_at.isoformat(),
    }


def api_key_output(key: ApiKey, effective_role: str | None = ...) -> dict:
    if effective_role is ...:
        effective_role = api_key_effective_role(key)
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role,
        # What the key may do now: the lower of its role and its creator's current role.
        "effective_role": effective_role,
        "created_by": key.created_by.get_username() if key.created_by_id else None,
        "created_by_key": str(key.created_by_key_id) if key.created_by_key_id else None,
        "team": str(key.team_id) if key.team_id else None,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
    }


# --- response bodies (the schema; the functions above are what the views send) ----------------


class OrganizationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Organization.Status.choices)
    plan = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    role = serializers.ChoiceField(
        choices=Role.choices, required=False, help_text="The caller's role in it."
    )


class OrganizationCreatedOutput(OrganizationOutput):
    class OwnerOutput(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(help_text="Shown once.")

    owner = OwnerOutput()
    api_key = serializers.CharField(help_text="The owner's first API key, shown once.")


class UserRefOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField(allow_blank=True)


class MembershipOutput(serializers.Serializer):
    id = serializers.UUIDField()
    user = UserRefOutput()
    role = serializers.ChoiceField(choices=Role.choices)
    created_at = serializers.DateTimeField()


class ApiKeySummaryOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)


class MemberDetailOutput(MembershipOutput):
    api_keys_stopping_on_removal = ApiKeySummaryOutput(
        many=True, help_text="The API keys that stop working when this member leaves."
    )


class MembershipCreatedOutput(MembershipOutput):
    initial_password = serializers.CharField(
        required=False, help_text="Only when the user was created by this call; shown once."
    )


class ApiKeyOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)
    effective_role = serializers.ChoiceField(
        choices=Role.choices,
        allow_null=True,
        help_text="What the key may do now: the lower of its role and its creator's current role.",
    )
    created_by = serializers.CharField(allow_null=True)
    created_by_key = serializers.UUIDField(
        allow_null=True, help_text="The key that created this one, when a key did."
    )
    team = serializers.UUIDField(
        allow_null=True,
        help_text="The team it is limited to (that team's and organization-wide resources only).",
    )
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class ApiKeyCreatedOutput(ApiKeyOutput):
    key = serializers.CharField(help_text="The secret (`ck_…`), shown once.")


class MeOutput(serializers.Serializer):
    class KeyOutput(ApiKeyOutput):
        org = serializers.CharField()

    class UserOutput(UserRefOutput):
        is_staff = serializers.BooleanField()

    class MembershipRefOutput(serializers.Serializer):
        org = serializers.CharField()
        role = serializers.ChoiceField(choices=Role.choices)
        name = serializers.CharField(required=False)
        status = serializers.ChoiceField(choices=Organization.Status.choices, required=False)

    api_key = KeyOutput(required=False, help_text="When an API key calls.")
    user = UserOutput(required=False, help_text="When a signed-in user calls.")
    memberships = MembershipRefOutput(many=True)


class WsTicketOutput(serializers.Serializer):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField(help_text="Seconds.")


def api_key_summary(key: ApiKey) -> dict:
    return {"id": str(key.id), "name": key.name, "prefix": key.prefix, "role": key.role}


class MeApi(APIView):
    @extend_schema(summary="The caller and its memberships", responses={200: MeOutput})
    def get(self, request):
        key = getattr(request.user, "api_key", None)
        if key is not None:
            return Response(
                {
                    "api_key": api_key_output(key, request.user.role)
                    | {"org": key.organization.slug},
                    "memberships": [{"org": key.organization.slug, "role": request.user.role}],
                }
            )
        user = request.user
        memberships = [
            {
                "org": m.organization.slug,
                "name": m.organization.name,
                "role": m.role,
                "status": m.organization.status,
            }
            for m in selectors.memberships_for_user(user=user)
        ]
        return Response(
            {
                "user": {
                    "id": user.pk,
                    "username": user.get_username(),
                    "email": user.email,
                    "is_staff": user.is_staff,
                },
                "memberships": memberships,
            }
        )


class OrgListCreateApi(APIView):
    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=200)
        slug = serializers.CharField(max_length=40)
        owner_email = serializers.EmailField(max_length=254)
        plan = serializers.SlugField(required=False, max_length=50)

    @extend_schema(
        summary="Organizations the caller belongs to",
        responses={200: results_of(OrganizationOutput)},
    )
    def get(self, request):
        key = getattr(request.user, "api_key", None)
        if key is not None:
            org = selectors.organization_get(org_id=key.organization_id)
            return Response({"results": [organization_output(org, request.user.role)]})
        roles = {
            m.organization_id: m.role for m in selectors.memberships_for_user(user=request.user)
        }
        orgs = selectors.organization_list_for_user(user=request.user)
        return Response({"results": [organization_output(o, roles.get(o.id)) for o in orgs]})

    @extend_schema(
        summary="Create an organization (platform staff only)",
        request=InputSerializer,
        responses={201: OrganizationCreatedOutput},
    )
    def post(self, request):
        if not request.user.is_staff:
            raise ForbiddenError("Only platform staff can create organizations.", "staff_required")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        plan = None
        if data.get("plan"):
            plan = Plan.objects.filter(slug=data["plan"]).first()
            if plan is None:
                raise ApplicationError(
                    f"Unknown plan {data['plan']!r}.", "unknown_plan", {"field": "plan"}
                )
        created = services.organization_create(
            name=data["name"],
            slug=data["slug"],
            owner_email=data["owner_email"],
            plan=plan,
            actor=request.user,
        )
        body = organization_output(created.organization, Role.OWNER) | {
            "owner": {"username": created.owner.get_username(), "password": created.owner_password},
            "api_key": created.api_key_secret,
        }
        return Response(body, status=201)


class OrgDetailApi(OrgMemberApi):
    required_role = Role.ADMIN

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=200)

    @extend_schema(summary="One organization", responses={200: OrganizationOutput})
    def get(self, request, org_slug):
        return Response(
            organization_output(selectors.organization_get(org_id=request.org.id), request.role)
        )

    @extend_schema(
        summary="Rename an organization",
        request=InputSerializer,
        responses={200: OrganizationOutput},
    )
    def patch(self, request, org_slug):
        data = self.validated(self.InputSerializer, request.data, partial=True)
        org = services.organization_update(
            org=selectors.organization_get(org_id=request.org.id), actor=self.actor(request), **data
        )
        return Response(organization_output(org, request.role))


class MemberListApi(OrgMemberApi):
    required_role = Role.ADMIN

    class InputSerializer(StrictSerializer):
        email = serializers.EmailField(max_length=254)
        role = serializers.ChoiceField(choices=Role.choices)
        username = serializers.CharField(max_length=150, required=False)

    @extend_schema(summary="List members", responses={200: results_of(MembershipOutput)})
    def get(self, request, org_slug):
        return Response(
            {
                "results": [
                    membership_output(m) for m in selectors.membership_list(org_id=request.org.id)
                ]
            }
        )

    @extend_schema(
        summary="Add a member",
        description="An unknown email creates the user; its initial password is in this "
        "response only.",
        request=InputSerializer,
        responses={201: MembershipCreatedOutput},
    )
    def post(self, request, org_slug):
        data = self.validated(self.InputSerializer, request.data)
        org = selectors.organization_get(org_id=request.org.id)
        membership, password = services.membership_add(
            org=org, actor_role=request.role, actor=self.actor(request), **data
        )
        body = membership_output(membership)
        if password:
            body["initial_password"] = password
        return Response(body, status=201)


class MemberDetailApi(OrgMemberApi):
    required_role = Role.ADMIN

    class InputSerializer(StrictSerializer):
        role = serializers.ChoiceField(choices=Role.choices)

    def _membership(self, request, member_id) -> Membership:
        membership = selectors.membership_get(org_id=request.org.id, membership_id=member_id)
        if membership is None:
            raise NotFoundError("No such member.")
        return membership

    @extend_schema(summary="One member", responses={200: MemberDetailOutput})
    def get(self, request, org_slug, member_id):
        membership = self._membership(request, member_id)
        stopping = api_keys_vouched_by(org_id=request.org.id, user_id=membership.user_id)
        # Shown before a removal: these keys stop working when the member leaves.
        return Response(
            membership_output(membership)
            | {"api_keys_stopping_on_removal": [api_key_summary(k) for k in stopping]}
        )

    @extend_schema(
        summary="Change a member's role", request=InputSerializer, responses={200: MembershipOutput}
    )
    def patch(self, request, org_slug, member_id):
        data = self.validated(self.InputSerializer, request.data, partial=True)
        membership = self._membership(request, member_id)
        if "role" not in data:  # PATCH semantics: nothing to change
            return Response(membership_output(membership))
        membership = services.membership_update(
            membership=membership,
            role=data["role"],
            actor_role=request.role,
            actor=self.actor(request),
        )
        return Response(membership_output(membership))

    @extend_schema(summary="Remove a member", responses={204: None})
    def delete(self, request, org_slug, member_id):
        services.membership_remove(
            membership=self._membership(request, member_id),
            actor_role=request.role,
            actor=self.actor(request),
        )
        return Response(status=204)


class ApiKeyListApi(OrgMemberApi):
    read_role = Role.ADMIN
    required_role = Role.ADMIN

    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=100)
        role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
        expires_at = serializers.DateTimeField(required=False, allow_null=True)
        team = serializers.UUIDField(
            required=False,
            allow_null=True,
            help_text="Limit the key to this team's resources and the organization-wide ones.",
        )

    @extend_schema(summary="List API keys", responses={200: results_of(ApiKeyOutput)})
    def get(self, request, org_slug):
        keys = list(selectors.api_key_list(org_id=request.org.id))
        rights = api_key_rights_for_org(org_id=request.org.id, keys=keys)
        return Response({"results": [api_key_output(k, rights[k.pk]) for k in keys]})

    @extend_schema(
        request=InputSerializer,
        summary="Create an API key; its secret is in this response only",
        responses={201: ApiKeyCreatedOutput},
    )
    def post(self, request, org_slug):
        from tenants.teams.scoping import team_resolve

        data = dict(self.validated(self.InputSerializer, request.data))
        # Resolved in the organization's schema, where its teams are.
        team = team_resolve(data.pop("team", None))
        org = selectors.organization_get(org_id=request.org.id)
        key, secret = services.api_key_create(
            org=org,
            creator_role=request.role,
            created_by=self.actor(request),
            team_id=team.pk if team is not None else None,
            **data,
        )
        return Response(api_key_output(key) | {"key": secret}, status=201)


class ApiKeyDetailApi(OrgMemberApi):
    read_role = Role.ADMIN
    required_role = Role.ADMIN

    @extend_schema(summary="Revoke an API key", responses={200: ApiKeyOutput})
    def delete(self, request, org_slug, key_id):
        key = selectors.api_key_get(org_id=request.org.id, key_id=key_id)
        if key is None:
            raise NotFoundError("No such API key.")
        key = services.api_key_revoke(key=key, actor_role=request.role, actor=self.actor(request))
        return Response(api_key_output(key))


class ApiKeyReassignApi(OrgMemberApi):
    """Owners hand a key to a current member, so it outlives its creator's departure."""

    required_role = Role.OWNER

    class InputSerializer(StrictSerializer):
        member_id = serializers.UUIDField()

    def _target(self, request, member_id) -> Membership:
        target = selectors.membership_get(org_id=request.org.id, membership_id=member_id)
        if target is None:
            raise ApplicationError("No such member.", "unknown_member", {"field": "member_id"})
        return target

    @extend_schema(
        request=InputSerializer,
        summary="Make a current member this key's creator",
        responses={200: ApiKeyOutput},
    )
    def post(self, request, org_slug, key_id):
        data = self.validated(self.InputSerializer, request.data)
        key = selectors.api_key_get(org_id=request.org.id, key_id=key_id)
        if key is None:
            raise NotFoundError("No such API key.")
        (key,) = services.api_keys_reassign(
            org=selectors.organization_get(org_id=request.org.id),
            keys=[key],
            to=self._target(request, data["member_id"]),
            actor_role=request.role,
            actor=self.actor(request),
        )
        return Response(api_key_output(key))


class MemberKeysReassignApi(ApiKeyReassignApi):
    """Every key that would stop when this member leaves, handed to another member."""

    @extend_schema(
        request=ApiKeyReassignApi.InputSerializer,
        summary="Reassign the keys a member vouches for to another member",
        responses={200: results_of(ApiKeyOutput)},
    )
    def post(self, request, org_slug, member_id):
        data = self.validated(self.InputSerializer, request.data)
        leaving = selectors.membership_get(org_id=request.org.id, membership_id=member_id)
        if leaving is None:
            raise NotFoundError("No such member.")
        target = self._target(request, data["member_id"])
        # Only the keys the member created directly: keys minted from them follow their parent.
        direct = [
            k
            for k in api_keys_vouched_by(org_id=request.org.id, user_id=leaving.user_id)
            if k.created_by_id == leaving.user_id and k.created_by_key_id is None
        ]
        keys = services.api_keys_reassign(
            org=selectors.organization_get(org_id=request.org.id),
            keys=direct,
            to=target,
            actor_role=request.role,
            actor=self.actor(request),
        )
        return Response({"results": [api_key_output(k) for k in keys]})


class WsTicketApi(OrgMemberApi):
    required_role = Role.VIEWER
    rate_scope = "tickets"

    @extend_schema(
        request=None,
        summary="A single-use ticket for a WebSocket connection (?ticket=)",
        responses={201: WsTicketOutput},
    )
    def post(self, request, org_slug):
        ticket = tickets.ticket_issue(org=request.org, user=request.user)
        return Response({"ticket": ticket, "expires_in": tickets.ticket_ttl()}, status=201)
