"""Team-scoped resources (issue 16, item 2) over REST, /v1, the chat page and the admin: the
outsider matrix (another team's member, a member of no team, a team-limited key) and sharing.

Every test runs in a transaction that is rolled back: what a test changes (shares, memberships,
teams) is gone for the next one; the teams' world itself is committed once per module.
"""

from __future__ import annotations

import uuid

import pytest
from django_tenants.utils import schema_context

from tenants.teams.scoping import TeamScope
from tenants.teams.tests.scoping_world import SLUGS, build, cleanup

pytestmark = pytest.mark.django_db

ORG = "/api/v1/orgs/alpha"
SUP, SALES, ORGWIDE = SLUGS["support"], SLUGS["sales"], SLUGS[None]


@pytest.fixture(scope="module")
def tw(module_world, django_db_blocker):
    with django_db_blocker.unblock():
        made = build(module_world)
    yield made
    with django_db_blocker.unblock():
        cleanup()


@pytest.fixture
def client_for(world, tw, api):
    """A REST client as a named caller: a user of the teams' world, or a key."""

    def use(name: str):
        api.credentials()
        api.logout()
        if name in tw.keys:
            api.credentials(HTTP_AUTHORIZATION=f"Bearer {tw.keys[name]}")
        elif name in tw.users:
            api.force_login(tw.users[name])
        elif name.endswith("_key"):
            api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.alpha.keys[name[:-4]]}")
        else:
            api.force_login(world.alpha.users[name])
        return api

    return use


def _state() -> dict:
    """Everything a refused request could have changed."""
    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from tenants.teams.models import LLMConfigShare, OrchestratorShare

    with schema_context("org_alpha"):
        return {
            "bots": sorted(
                OrchestratorInstance.objects.filter(slug__startswith="ts-").values_list(
                    "slug", "name", "team_id", "status", "version"
                )
            ),
            "configs": sorted(
                LLMConfig.objects.filter(name__startswith="ts-").values_list(
                    "name", "model", "team_id"
                )
            ),
            "shares": sorted(
                [
                    (str(s.orchestrator_id), str(s.team_id), s.level)
                    for s in OrchestratorShare.objects.all()
                ]
                + [
                    (str(s.llm_config_id), str(s.team_id), s.level)
                    for s in LLMConfigShare.objects.all()
                ]
            ),
            "conversations": Conversation.objects.filter(
                orchestrator__slug__startswith="ts-"
            ).count(),
        }


ORDER = [SALES, SUP, ORGWIDE]


def _slugs(response) -> list[str]:
    """The teams' world's orchestrators in a response, in the order the tests name them."""
    assert response.status_code == 200, response.content
    found = {r["slug"] for r in response.json()["results"]}
    return [slug for slug in ORDER if slug in found]


def _audit(*actions: str) -> list[tuple]:
    from tenants.audit.models import AuditEvent

    with schema_context("org_alpha"):
        return [
            (e.action, e.target, e.details.get("before"), e.details.get("after"))
            for e in AuditEvent.objects.filter(action__in=actions).order_by("created_at")
        ]


# --- who sees what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("admin", [SALES, SUP, ORGWIDE]),
        ("admin_key", [SALES, SUP, ORGWIDE]),
        ("sup_maint", [SUP, ORGWIDE]),
        ("sup_member", [SUP, ORGWIDE]),
        ("k_sup_member", [SUP, ORGWIDE]),  # a member's key sees what its creator sees
        ("sales_member", [SALES, ORGWIDE]),
        ("k_sales_member", [SALES, ORGWIDE]),
        ("member", [ORGWIDE]),  # a member of no team
        ("viewer", [ORGWIDE]),
        ("member_key", [ORGWIDE]),  # created by the owner, who is in no team
        ("sales_limited_admin", [SALES, ORGWIDE]),
        ("sales_limited_member", [SALES, ORGWIDE]),
    ],
)
def test_each_caller_lists_what_its_teams_give(client_for, caller, expected):
    client = client_for(caller)

    orchestrators = client.get(f"{ORG}/orchestrators/")
    configs = client.get(f"{ORG}/llm-configs/")

    assert _slugs(orchestrators) == [slug for slug in ORDER if slug in expected]
    names = sorted(c["name"] for c in configs.json()["results"] if c["name"].startswith("ts-"))
    assert names == sorted(s.replace("-bot", "-llm") for s in expected)


@pytest.mark.parametrize("caller", ["sales_member", "member", "sales_limited_admin"])
def test_outsiders_get_404_on_every_orchestrator_endpoint_and_nothing_changes(
    client_for, tw, caller
):
    client = client_for(caller)
    before = _state()
    sales = str(tw.teams["sales"].pk)
    for ref in (str(tw.bots["support"].pk), SUP):
        url = f"{ORG}/orchestrators/{ref}/"
        responses = [
            client.get(url),
            client.patch(url, {"name": "hacked"}, format="json"),
            client.patch(url, {"team": sales}, format="json"),
            client.delete(url),
            client.post(f"{url}activate/"),
            client.post(f"{url}suspend/"),
            client.post(f"{url}rebuild/"),
            client.get(f"{url}diagram/"),
            client.post(
                f"{url}invoke/", {"messages": [{"role": "user", "content": "hi"}]}, format="json"
            ),
            client.get(f"{url}shares/"),
            client.post(f"{url}shares/", {"team": sales, "level": "manage"}, format="json"),
            client.delete(f"{url}shares/{sales}/"),
        ]
        assert [r.status_code for r in responses] == [404] * len(responses), [
            (r.status_code, r.content[:200]) for r in responses
        ]
    queued = client.post(
        f"{ORG}/orchestrators/{tw.bots['support'].pk}/runs/",
        {"input": {"message": "hi"}, "idempotency_key": "ts-outsider"},
        format="json",
    )
    assert queued.status_code == 404
    assert _state() == before


@pytest.mark.parametrize("caller", ["sales_member", "member", "sales_limited_admin"])
def test_outsiders_get_404_on_another_teams_llm_configuration(client_for, tw, caller):
    client = client_for(caller)
    before = _state()
    url = f"{ORG}/llm-configs/{tw.configs['support'].pk}/"
    sales = str(tw.teams["sales"].pk)
    responses = [
        client.get(url),
        client.patch(url, {"model": "other"}, format="json"),
        client.delete(url),
        client.get(f"{url}shares/"),
        client.post(f"{url}shares/", {"team": sales}, format="json"),
        client.delete(f"{url}shares/{sales}/"),
    ]
    assert [r.status_code for r in responses] == [404] * len(responses)
    # Naming it in an orchestrator is naming a configuration that does not exist.
    made = client.post(
        f"{ORG}/orchestrators/",
        {
            "slug": "ts-stolen",
            "name": "x",
            "llm_config": str(tw.configs["support"].pk),
            "team": sales,
        },
        format="json",
    )
    assert made.status_code in (400, 403)
    assert _state() == before


# --- who manages what -------------------------------------------------------------------------


def test_team_members_use_and_maintainers_manage(
    client_for, tw, django_capture_on_commit_callbacks
):
    url = f"{ORG}/orchestrators/{SUP}/"
    support, sales = str(tw.teams["support"].pk), str(tw.teams["sales"].pk)

    member = client_for("sup_member")
    refused = member.patch(url, {"name": "renamed"}, format="json")
    member_create = member.post(
        f"{ORG}/llm-configs/",
        {"name": "ts-m", "provider": "offline", "model": "x", "team": support},
        format="json",
    )
    maint = client_for("sup_maint")
    with django_capture_on_commit_callbacks(execute=False):
        renamed = maint.patch(url, {"name": "renamed"}, format="json")
    created = maint.post(
        f"{ORG}/llm-configs/",
        {"name": "ts-new", "provider": "offline", "model": "x", "team": support},
        format="json",
    )
    elsewhere = maint.post(
        f"{ORG}/llm-configs/",
        {"name": "ts-other", "provider": "offline", "model": "x", "team": sales},
        format="json",
    )
    orgwide = maint.post(
        f"{ORG}/llm-configs/",
        {"name": "ts-org2", "provider": "offline", "model": "x"},
        format="json",
    )
    orgwide_edit = maint.patch(f"{ORG}/orchestrators/{ORGWIDE}/", {"name": "x"}, format="json")
    move_out = maint.patch(url, {"team": None}, format="json")

    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert (member_create.status_code, member_create.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
    assert created.status_code == 201 and created.json()["team"] == support
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert (orgwide.status_code, orgwide.json()["error"]["code"]) == (403, "role_required")
    assert (orgwide_edit.status_code, orgwide_edit.json()["error"]["code"]) == (
        403,
        "role_required",
    )
    assert (move_out.status_code, move_out.json()["error"]["code"]) == (403, "role_required")
    with schema_context("org_alpha"):
        from orchestrators.models import LLMConfig, OrchestratorInstance

        assert sorted(
            LLMConfig.objects.filter(name__startswith="ts-").values_list("name", flat=True)
        ) == [
            "ts-new",
            "ts-org-llm",
            "ts-sales-llm",
            "ts-sup-llm",
        ]
        assert OrchestratorInstance.objects.get(slug=ORGWIDE).name == ORGWIDE
        assert OrchestratorInstance.objects.get(slug=SUP).team_id == tw.teams["support"].pk


def test_an_orchestrator_runs_only_on_its_teams_or_a_shared_llm_configuration(client_for, tw):
    admin = client_for("admin_key")
    support = str(tw.teams["support"].pk)
    body = {
        "slug": "ts-mixed",
        "name": "Mixed",
        "llm_config": str(tw.configs["sales"].pk),
        "team": support,
    }

    refused = admin.post(f"{ORG}/orchestrators/", body, format="json")
    orgwide = admin.post(
        f"{ORG}/orchestrators/", body | {"team": None, "slug": "ts-mixed2"}, format="json"
    )
    shared = admin.post(
        f"{ORG}/llm-configs/{tw.configs['sales'].pk}/shares/",
        {"team": support, "level": "use"},
        format="json",
    )
    allowed = admin.post(f"{ORG}/orchestrators/", body, format="json")
    unshare = admin.delete(f"{ORG}/llm-configs/{tw.configs['sales'].pk}/shares/{support}/")
    move = admin.patch(
        f"{ORG}/llm-configs/{tw.configs['support'].pk}/",
        {"team": str(tw.teams["sales"].pk)},
        format="json",
    )

    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "llm_config_not_shared")
    assert (orgwide.status_code, orgwide.json()["error"]["code"]) == (400, "llm_config_not_shared")
    assert shared.status_code == 200 and shared.json()["level"] == "use"
    assert allowed.status_code == 201, allowed.json()
    # Support's orchestrators run on it now: unsharing or moving away strands them.
    assert (unshare.status_code, unshare.json()["error"]["code"]) == (409, "in_use")
    assert (move.status_code, move.json()["error"]["code"]) == (409, "in_use")
    assert move.json()["error"]["details"]["orchestrators"] == [SUP]


# --- sharing ----------------------------------------------------------------------------------


def test_sharing_opens_an_orchestrator_to_another_team_at_its_level(client_for, tw):
    admin, sales_member = client_for("admin_key"), None
    sales = str(tw.teams["sales"].pk)
    shares = f"{ORG}/orchestrators/{SUP}/shares/"
    turn = {"messages": [{"role": "user", "content": "hi"}]}

    read = admin.post(shares, {"team": sales, "level": "read"}, format="json")
    sales_member = client_for("sales_member")
    listed = _slugs(sales_member.get(f"{ORG}/orchestrators/"))
    detail = sales_member.get(f"{ORG}/orchestrators/{SUP}/")
    chat_refused = sales_member.post(f"{ORG}/conversations/", {"orchestrator": SUP}, format="json")
    invoke_refused = sales_member.post(f"{ORG}/orchestrators/{SUP}/invoke/", turn, format="json")
    edit_refused = sales_member.patch(f"{ORG}/orchestrators/{SUP}/", {"name": "x"}, format="json")
    reshare_refused = sales_member.post(shares, {"team": sales, "level": "manage"}, format="json")

    admin = client_for("admin_key")
    use = admin.post(shares, {"team": sales, "level": "use"}, format="json")
    listed_shares = admin.get(shares).json()["results"]
    sales_member = client_for("sales_member")
    chat = sales_member.post(f"{ORG}/conversations/", {"orchestrator": SUP}, format="json")

    admin = client_for("admin_key")
    gone = admin.delete(f"{shares}{sales}/")
    again = admin.delete(f"{shares}{sales}/")
    sales_member = client_for("sales_member")
    after = sales_member.get(f"{ORG}/orchestrators/{SUP}/")

    assert read.status_code == 200 and read.json()["team"]["slug"] == "ts-sales"
    assert listed == [SALES, SUP, ORGWIDE]
    assert detail.status_code == 200
    assert (chat_refused.status_code, chat_refused.json()["error"]["code"]) == (403, "share_level")
    assert (invoke_refused.status_code, invoke_refused.json()["error"]["code"]) == (
        403,
        "share_level",
    )
    assert edit_refused.status_code == 403
    assert reshare_refused.status_code == 403
    assert use.json()["level"] == "use"
    assert [(s["team"]["slug"], s["level"]) for s in listed_shares] == [("ts-sales", "use")]
    assert chat.status_code == 201, chat.json()
    assert gone.status_code == 204
    assert (again.status_code, again.json()["error"]["code"]) == (404, "not_found")
    assert after.status_code == 404
    assert _audit("orchestrator.shared", "orchestrator.unshared") == [
        ("orchestrator.shared", SUP, None, {"team": "ts-sales", "level": "read"}),
        (
            "orchestrator.shared",
            SUP,
            {"team": "ts-sales", "level": "read"},
            {"team": "ts-sales", "level": "use"},
        ),
        ("orchestrator.unshared", SUP, {"team": "ts-sales", "level": "use"}, None),
    ]


def test_a_share_with_manage_lets_the_other_teams_maintainer_change_it(client_for, tw):
    from tenants.teams.models import TeamMembership, TeamRole

    with schema_context("org_alpha"):
        TeamMembership.objects.filter(user_id=tw.users["sales_member"].pk).update(
            role=TeamRole.MAINTAINER
        )
    admin = client_for("admin_key")
    admin.post(
        f"{ORG}/orchestrators/{SUP}/shares/",
        {"team": str(tw.teams["sales"].pk), "level": "manage"},
        format="json",
    )
    # Its LLM configuration is support's: sales may run on it once it is shared to use.
    admin.post(
        f"{ORG}/llm-configs/{tw.configs['support'].pk}/shares/",
        {"team": str(tw.teams["sales"].pk), "level": "use"},
        format="json",
    )
    renamed = client_for("sales_member").patch(
        f"{ORG}/orchestrators/{SUP}/", {"description": "by sales"}, format="json"
    )
    # Managing is not owning: moving it into sales needs support's maintainers or an admin.
    moved = client_for("sales_member").patch(
        f"{ORG}/orchestrators/{SUP}/", {"team": str(tw.teams["sales"].pk)}, format="json"
    )

    assert renamed.status_code == 200 and renamed.json()["description"] == "by sales"
    assert moved.status_code == 200  # a maintainer of sales may create in sales
    assert moved.json()["team"] == str(tw.teams["sales"].pk)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"team": "not-a-uuid"}, 400, "invalid"),
        ({"team": "00000000-0000-0000-0000-000000000001"}, 400, "unknown_team"),
        ({"level": "use"}, 400, "invalid"),
        ({"team": "TEAM", "level": "owner"}, 400, "invalid"),
        ({"team": "TEAM", "colour": "red"}, 400, "invalid"),
        ({"team": "OWN"}, 400, "own_team"),
        ({"team": "TEAM\u0000"}, 400, "invalid_characters"),
    ],
)
def test_bad_share_input_is_a_400(client_for, tw, body, status, code):
    sales, support = str(tw.teams["sales"].pk), str(tw.teams["support"].pk)
    body = {
        k: (v.replace("TEAM", sales).replace("OWN", support) if isinstance(v, str) else v)
        for k, v in body.items()
    }
    before = _state()

    response = client_for("admin_key").post(
        f"{ORG}/orchestrators/{SUP}/shares/", body, format="json"
    )

    assert response.status_code == status, response.content
    if code != "invalid":
        assert response.json()["error"]["code"] == code
    assert _state() == before


def test_moving_an_orchestrator_is_audited_and_its_conversations_follow(client_for, tw):
    sup = client_for("sup_member")
    conversation = sup.post(f"{ORG}/conversations/", {"orchestrator": SUP}, format="json").json()
    sales = str(tw.teams["sales"].pk)
    admin = client_for("admin_key")
    stranded = admin.patch(f"{ORG}/orchestrators/{SUP}/", {"team": sales}, format="json")
    admin.post(
        f"{ORG}/llm-configs/{tw.configs['support'].pk}/shares/",
        {"team": sales, "level": "use"},
        format="json",
    )

    moved = admin.patch(f"{ORG}/orchestrators/{SUP}/", {"team": sales}, format="json")
    lost = client_for("sup_member").get(f"{ORG}/conversations/{conversation['id']}/")
    gained = _slugs(client_for("sales_member").get(f"{ORG}/orchestrators/"))

    # Its LLM configuration is support's, not shared with sales yet: the move is refused first.
    assert (stranded.status_code, stranded.json()["error"]["code"]) == (
        400,
        "llm_config_not_shared",
    )
    assert moved.status_code == 200 and moved.json()["team"] == sales
    assert lost.status_code == 404
    assert gained == [SALES, SUP, ORGWIDE]
    with schema_context("org_alpha"):
        from chat.models import Conversation

        assert Conversation.objects.get(pk=conversation["id"]).team_id == tw.teams["sales"].pk
    assert _audit("orchestrator.team_changed") == [
        ("orchestrator.team_changed", SUP, {"team": "ts-support"}, {"team": "ts-sales"})
    ]


def test_a_team_that_owns_resources_cannot_be_deleted(client_for, tw):
    response = client_for("admin_key").delete(f"{ORG}/teams/{tw.teams['support'].pk}/")

    assert (response.status_code, response.json()["error"]["code"]) == (409, "team_in_use")
    assert _state()["bots"][2][2] == tw.teams["support"].pk  # ts-sup-bot kept its team


# --- conversations ----------------------------------------------------------------------------


def test_conversations_follow_the_team_rule_and_current_membership(client_for, tw):
    from tenants.teams.models import TeamMembership

    sup = client_for("sup_member")
    created = sup.post(f"{ORG}/conversations/", {"orchestrator": SUP}, format="json")
    conversation = created.json()["id"]
    outsiders = {
        name: client_for(name).post(f"{ORG}/conversations/", {"orchestrator": SUP}, format="json")
        for name in ("sales_member", "member", "sales_limited_member", "sales_limited_admin")
    }
    sup = client_for("sup_member")
    before = sup.get(f"{ORG}/conversations/").json()["results"]
    with schema_context("org_alpha"):
        TeamMembership.objects.filter(user_id=tw.users["sup_member"].pk).delete()
    after_list = sup.get(f"{ORG}/conversations/").json()["results"]
    after_get = sup.get(f"{ORG}/conversations/{conversation}/")
    after_post = sup.post(
        f"{ORG}/conversations/{conversation}/messages/", {"content": "hi"}, format="json"
    )

    assert created.status_code == 201
    with schema_context("org_alpha"):
        from chat.models import Conversation

        assert Conversation.objects.get(pk=conversation).team_id == tw.teams["support"].pk
    assert {n: (r.status_code, r.json()["error"]["code"]) for n, r in outsiders.items()} == {
        name: (400, "unknown_orchestrator") for name in outsiders
    }
    assert [c["id"] for c in before] == [conversation]
    assert after_list == []
    assert after_get.status_code == 404
    assert after_post.status_code == 404
    assert _state()["conversations"] == 1


# --- runs -------------------------------------------------------------------------------------


def _run(tw, *, team: str | None, owner=None):
    from engine.models import Run

    with schema_context("org_alpha"):
        return Run.objects.create(
            orchestrator=tw.bots[team],
            orchestrator_slug=SLUGS[team],
            team=tw.teams.get(team),
            trigger=Run.Trigger.REST,
            owner_user_id=owner.pk if owner is not None else None,
            status=Run.Status.SUCCEEDED,
        )


def test_runs_keep_their_owner_rule_and_add_the_team_rule(client_for, tw, world):
    from tenants.teams.models import TeamMembership

    mine = _run(tw, team="support", owner=tw.users["sup_member"])
    admins = _run(tw, team="support", owner=world.alpha.users["admin"])
    sales_run = _run(tw, team="sales", owner=world.alpha.users["admin"])

    def ids(name):
        response = client_for(name).get(f"{ORG}/runs/?limit=200")
        assert response.status_code == 200
        wanted = {str(mine.id), str(admins.id), str(sales_run.id)}
        return sorted(r["id"] for r in response.json()["results"] if r["id"] in wanted)

    seen = {
        name: ids(name) for name in ("admin", "sup_member", "sales_member", "sales_limited_admin")
    }
    details = {
        name: client_for(name).get(f"{ORG}/runs/{mine.id}/").status_code
        for name in ("sup_member", "sales_member", "member", "sales_limited_admin", "admin")
    }
    # Dead letters read the runs' rule inside a subquery (its tables relabelled).
    with schema_context("org_alpha"):
        from engine.durable.models import QueuedRun

        QueuedRun.objects.create(
            run=mine,
            idempotency_key="ts-dead",
            orchestrator_id=tw.bots["support"].pk,
            message="hi",
            state=QueuedRun.State.DEAD,
        )
    dead = {
        name: [r["id"] for r in client_for(name).get(f"{ORG}/dead-letters/").json()["results"]]
        for name in ("sup_member", "sales_member", "sales_limited_admin")
    }
    with schema_context("org_alpha"):
        TeamMembership.objects.filter(user_id=tw.users["sup_member"].pk).delete()
    after = client_for("sup_member").get(f"{ORG}/runs/{mine.id}/").status_code
    dead_after = client_for("sup_member").get(f"{ORG}/dead-letters/").json()["results"]

    assert seen == {
        "admin": sorted([str(mine.id), str(admins.id), str(sales_run.id)]),
        "sup_member": [str(mine.id)],  # their own, not the admin's of the same team
        "sales_member": [],
        "sales_limited_admin": [str(sales_run.id)],  # all runs, of its team only
    }
    assert details == {
        "sup_member": 200,
        "sales_member": 404,
        "member": 404,
        "sales_limited_admin": 404,
        "admin": 200,
    }
    assert after == 404
    assert dead == {"sup_member": [str(mine.id)], "sales_member": [], "sales_limited_admin": []}
    assert dead_after == []


def test_a_run_inherits_its_orchestrators_team(client_for, tw):
    from engine.models import Run

    reply = client_for("sup_member").post(
        f"{ORG}/orchestrators/{SUP}/invoke/",
        {"messages": [{"role": "user", "content": "hello"}]},
        format="json",
    )

    assert reply.status_code == 200, reply.json()
    with schema_context("org_alpha"):
        run = Run.objects.get(pk=reply.json()["run"])
    assert (run.team_id, run.owner_user_id) == (tw.teams["support"].pk, tw.users["sup_member"].pk)


# --- team-limited keys ------------------------------------------------------------------------


def test_an_admin_creates_a_team_limited_key_and_bad_teams_are_400s(client_for, tw):
    admin = client_for("admin")
    sales = str(tw.teams["sales"].pk)

    created = admin.post(
        f"{ORG}/api-keys/", {"name": "ts-limited", "role": "member", "team": sales}, format="json"
    )
    unknown = admin.post(
        f"{ORG}/api-keys/",
        {"name": "ts-x", "team": "00000000-0000-0000-0000-000000000009"},
        format="json",
    )
    garbage = admin.post(f"{ORG}/api-keys/", {"name": "ts-y", "team": "sales"}, format="json")

    assert created.status_code == 201, created.json()
    assert created.json()["team"] == sales
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_team")
    assert garbage.status_code == 400
    client = client_for("admin")
    client.logout()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created.json()['key']}")
    assert _slugs(client.get(f"{ORG}/orchestrators/")) == [SALES, ORGWIDE]


def test_a_key_minted_by_a_team_limited_key_stays_in_its_team(client_for, tw):
    limited = client_for("sales_limited_admin")
    support = str(tw.teams["support"].pk)

    escaped = limited.post(
        f"{ORG}/api-keys/", {"name": "ts-escape", "role": "member", "team": support}, format="json"
    )
    unlimited = limited.post(
        f"{ORG}/api-keys/", {"name": "ts-child", "role": "member"}, format="json"
    )

    assert (escaped.status_code, escaped.json()["error"]["code"]) == (403, "team_limited")
    assert unlimited.status_code == 201 and unlimited.json()["team"] == str(tw.teams["sales"].pk)
    child = client_for("admin")
    child.logout()
    child.credentials(HTTP_AUTHORIZATION=f"Bearer {unlimited.json()['key']}")
    assert _slugs(child.get(f"{ORG}/orchestrators/")) == [SALES, ORGWIDE]


def test_a_team_limited_key_sees_the_team_only_while_its_creator_may(client_for, tw, world):
    from tenants.models import Membership

    # Created by alpha's admin, limited to sales: the admin may see sales, so the key does.
    assert _slugs(client_for("sales_limited_admin").get(f"{ORG}/orchestrators/")) == [
        SALES,
        ORGWIDE,
    ]
    Membership.objects.filter(organization=world.alpha.org, user=world.alpha.users["admin"]).update(
        role="member"
    )

    # Its creator is now a member of no team: the key keeps the organization-wide ones only.
    assert _slugs(client_for("sales_limited_admin").get(f"{ORG}/orchestrators/")) == [ORGWIDE]


# --- pages ------------------------------------------------------------------------------------


def test_the_chat_page_offers_only_the_teams_orchestrators(client, tw, world):
    client.force_login(tw.users["sales_member"])
    sales_page = client.get("/orgs/alpha/chat/").content.decode()
    client.force_login(tw.users["sup_member"])
    sup_page = client.get("/orgs/alpha/chat/").content.decode()

    assert SALES in sales_page and SUP not in sales_page
    assert SUP in sup_page and SALES not in sup_page


def test_the_admin_lists_only_the_teams_resources(client, tw, world):
    client.force_login(world.alpha.users["member"])
    orchestrators = client.get("/orgs/alpha/admin/orchestrators/orchestratorinstance/")
    configs = client.get("/orgs/alpha/admin/orchestrators/llmconfig/")
    change = client.get(
        f"/orgs/alpha/admin/orchestrators/orchestratorinstance/{tw.bots['support'].pk}/change/"
    )
    client.force_login(tw.users["sup_member"])
    sup_list = client.get("/orgs/alpha/admin/orchestrators/orchestratorinstance/").content.decode()

    assert orchestrators.status_code == 200
    text = orchestrators.content.decode()
    assert ORGWIDE in text and SUP not in text and SALES not in text
    assert "ts-sup-llm" not in configs.content.decode()
    assert change.status_code == 302  # Django's "does not exist" redirect, nothing shown
    assert SUP in sup_list and SALES not in sup_list


def test_the_drift_report_and_the_dashboard_name_only_visible_orchestrators(client_for, client, tw):
    drift = client_for("sales_member").get(f"{ORG}/drift/")
    slugs = {row["slug"] for row in drift.json()["results"]}
    client.force_login(tw.users["sales_member"])
    dashboard = client.get("/orgs/alpha/admin/").content.decode()

    assert drift.status_code == 200
    assert {SALES, ORGWIDE} <= slugs and SUP not in slugs
    assert SALES in dashboard and SUP not in dashboard


@pytest.mark.parametrize(
    "scope, level, allowed",
    [
        (TeamScope(everything=False, role="member", user_id=1), "use", True),
        (TeamScope(everything=False, role="viewer", user_id=1), "read", True),
        (TeamScope(everything=False, role="viewer", user_id=1), "use", False),
        (TeamScope(everything=False, role="member", user_id=None), "manage", False),
        (TeamScope(everything=True, role="admin"), "manage", True),
    ],
)
def test_an_organization_wide_resource_is_decided_without_reading_teams(
    world, scope, level, allowed
):
    """Members use and viewers read what belongs to no team: answered without a statement
    (every chat turn asks it); managing it, and what a viewer may not do, still go through
    access_level and give its errors."""
    from types import SimpleNamespace

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from cadence_site.errors import ForbiddenError
    from tenants.teams.scoping import require_level

    orchestrator = SimpleNamespace(pk=uuid.uuid4(), team_id=None)
    with schema_context("org_alpha"), CaptureQueriesContext(connection) as queries:
        try:
            require_level(scope, kind="orchestrator", obj=orchestrator, level=level, what="x")
            outcome = True
        except ForbiddenError:
            outcome = False
    assert outcome is allowed
    if allowed and level != "manage":
        assert len(queries) == 0
