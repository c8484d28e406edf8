"""Teams with resources in alpha, committed once per module (built orchestrators are slow to make).

support: an LLM configuration and an orchestrator; its maintainer and a member.
sales: an LLM configuration and an orchestrator; a member.
The organization at large: an LLM configuration and an orchestrator.
Keys: the support member's, the sales member's, and two limited to sales (created by alpha's
admin with the admin and the member role).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django_tenants.utils import schema_context

SLUGS = {"support": "ts-sup-bot", "sales": "ts-sales-bot", None: "ts-org-bot"}
CONFIGS = {"support": "ts-sup-llm", "sales": "ts-sales-llm", None: "ts-org-llm"}
USERS = ("alpha-ts-supmaint", "alpha-ts-supmember", "alpha-ts-salesmember")


@dataclass
class TeamWorld:
    teams: dict = field(default_factory=dict)  # slug → Team
    users: dict = field(default_factory=dict)  # sup_maint, sup_member, sales_member → User
    keys: dict = field(default_factory=dict)  # name → secret
    key_ids: dict = field(default_factory=dict)
    bots: dict = field(default_factory=dict)  # support, sales, None → OrchestratorInstance
    configs: dict = field(default_factory=dict)  # support, sales, None → LLMConfig


def cleanup() -> None:
    from django.contrib.auth import get_user_model

    from chat.models import Conversation
    from engine.models import Run
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from tenants.models import ApiKey
    from tenants.teams.models import Team

    with schema_context("org_alpha"):
        Conversation.objects.filter(orchestrator__slug__startswith="ts-").delete()
        Run.objects.filter(orchestrator_slug__startswith="ts-").delete()
        OrchestratorInstance.objects.filter(slug__startswith="ts-").delete()
        LLMConfig.objects.filter(name__startswith="ts-").delete()
        Team.objects.filter(slug__startswith="ts-").delete()
    ApiKey.objects.filter(name__startswith="ts-").delete()
    get_user_model().objects.filter(username__in=USERS).delete()


def build(world) -> TeamWorld:
    from django.contrib.auth import get_user_model

    from orchestrators.pool import pool
    from orchestrators.services import llm_config_create, orchestrator_create
    from orchestrators.tasks import instance_build
    from tenants.models import Membership
    from tenants.services import api_key_create
    from tenants.teams.models import Team, TeamMembership, TeamRole

    cleanup()
    # This process's pool may hold runtimes of an earlier module's orchestrators by these slugs.
    pool.clear()
    org = world.alpha.org
    made = TeamWorld()
    User = get_user_model()
    for name, username in zip(("sup_maint", "sup_member", "sales_member"), USERS, strict=True):
        user = User.objects.create_user(username=username, email=f"{username}@alpha.test")
        Membership.objects.create(user=user, organization=org, role="member")
        made.users[name] = user
    with schema_context("org_alpha"):
        for slug in ("support", "sales"):
            made.teams[slug] = Team.objects.create(slug=f"ts-{slug}", name=f"TS {slug}")
        support, sales = made.teams["support"], made.teams["sales"]
        TeamMembership.objects.create(
            team=support, user_id=made.users["sup_maint"].pk, role=TeamRole.MAINTAINER
        )
        TeamMembership.objects.create(team=support, user_id=made.users["sup_member"].pk)
        TeamMembership.objects.create(team=sales, user_id=made.users["sales_member"].pk)
        for slug in ("support", "sales", None):
            team = made.teams.get(slug)
            made.configs[slug] = llm_config_create(
                name=CONFIGS[slug], provider="offline", model="cadence-offline", team=team
            )
            made.bots[slug] = orchestrator_create(
                slug=SLUGS[slug], name=SLUGS[slug], llm_config=made.configs[slug], team=team
            )
    for bot in made.bots.values():
        status = instance_build(
            schema_name="org_alpha", instance_id=str(bot.id), expected_hash=bot.config_hash
        )
        assert status == "ready"
    owner, admin = world.alpha.users["owner"], world.alpha.users["admin"]
    for name, role, creator, creator_role, team in (
        ("k_sup_member", "member", made.users["sup_member"], "member", None),
        ("k_sales_member", "member", made.users["sales_member"], "member", None),
        ("sales_limited_admin", "admin", admin, "admin", sales),
        ("sales_limited_member", "member", owner, "owner", sales),
    ):
        key, secret = api_key_create(
            org=org,
            name=f"ts-{name}",
            role=role,
            creator_role=creator_role,
            created_by=creator,
            team_id=team.pk if team else None,
        )
        made.keys[name], made.key_ids[name] = secret, str(key.id)
    return made
