"""Sharing an orchestrator or an LLM configuration with another team.

`GET/POST …/orchestrators/<id>/shares/`, `DELETE …/orchestrators/<id>/shares/<team id>/`, and the
same under `…/llm-configs/<id>/`. Whoever sees the resource reads its shares; whoever manages it
(tenants/teams/scoping.py) shares and unshares it. Every change is an audit event.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.openapi import results_of
from orchestrators.apis import InstanceMixin, LLMConfigMixin
from tenants.roles import Role
from tenants.teams import services
from tenants.teams.models import ShareLevel, Team
from tenants.teams.scoping import SHARES, team_resolve


class ShareOutput(serializers.Serializer):
    class TeamRefOutput(serializers.Serializer):
        id = serializers.UUIDField()
        slug = serializers.SlugField()
        name = serializers.CharField()

    team = TeamRefOutput()
    level = serializers.ChoiceField(choices=ShareLevel.choices)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ShareInput(StrictSerializer):
    team = serializers.UUIDField(help_text="The team to share with.")
    level = serializers.ChoiceField(choices=ShareLevel.choices, default=ShareLevel.USE)


def share_output(share, team: Team) -> dict:
    return {
        "team": {"id": str(team.id), "slug": team.slug, "name": team.name},
        "level": share.level,
        "created_at": share.created_at.isoformat(),
        "updated_at": share.updated_at.isoformat(),
    }


class _SharesApi(OrgMemberApi):
    # Members may reach the writes: whether they manage the resource is the service's decision.
    required_role = Role.MEMBER
    kind = "orchestrator"

    def resource(self, ref):
        return self._get(str(ref))

    def shares(self, obj) -> list[dict]:
        share_model, share_fk = SHARES[self.kind]
        rows = share_model.objects.filter(**{share_fk: obj.pk}).select_related("team")
        return [share_output(row, row.team) for row in rows.order_by("team__name")]

    def list(self, request, ref):
        return Response({"results": self.shares(self.resource(ref))})

    def share(self, request, ref):
        obj = self.resource(ref)
        data = self.validated(ShareInput, request.data)
        team = team_resolve(data["team"])
        share = services.resource_share_set(
            kind=self.kind,
            obj=obj,
            team=team,
            level=data["level"],
            actor=self.actor(request),
            scope=self.scope(request),
        )
        return Response(share_output(share, team))

    def unshare(self, request, ref, team_id):
        obj = self.resource(ref)
        services.resource_share_remove(
            kind=self.kind,
            obj=obj,
            team=team_resolve(team_id),
            actor=self.actor(request),
            scope=self.scope(request),
        )
        return Response(status=204)


class OrchestratorSharesApi(InstanceMixin, _SharesApi):
    @extend_schema(
        summary="The teams an orchestrator is shared with", responses={200: results_of(ShareOutput)}
    )
    def get(self, request, org_slug, instance_id):
        return self.list(request, instance_id)

    @extend_schema(
        summary="Share an orchestrator with a team, or change the level",
        description="`read` shows it; `use` lets the team's members chat with and run it; "
        "`manage` lets its maintainers change it. Needs manage rights on the orchestrator.",
        request=ShareInput,
        responses={200: ShareOutput},
    )
    def post(self, request, org_slug, instance_id):
        return self.share(request, instance_id)


class OrchestratorShareDetailApi(InstanceMixin, _SharesApi):
    @extend_schema(summary="Stop sharing an orchestrator with a team", responses={204: None})
    def delete(self, request, org_slug, instance_id, team_id):
        return self.unshare(request, instance_id, team_id)


class LLMConfigSharesApi(LLMConfigMixin, _SharesApi):
    kind = "llm_config"

    @extend_schema(
        summary="The teams an LLM configuration is shared with",
        responses={200: results_of(ShareOutput)},
    )
    def get(self, request, org_slug, config_id):
        return self.list(request, config_id)

    @extend_schema(
        summary="Share an LLM configuration with a team, or change the level",
        description="`use` lets the team's orchestrators run on it (its key stays write-only).",
        request=ShareInput,
        responses={200: ShareOutput},
    )
    def post(self, request, org_slug, config_id):
        return self.share(request, config_id)


class LLMConfigShareDetailApi(LLMConfigMixin, _SharesApi):
    kind = "llm_config"

    @extend_schema(summary="Stop sharing an LLM configuration with a team", responses={204: None})
    def delete(self, request, org_slug, config_id, team_id):
        return self.unshare(request, config_id, team_id)
