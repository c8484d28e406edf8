"""Teams over REST: who may read, create and change them, and that outsiders change nothing."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from tenants.audit.models import AuditEvent
from tenants.teams.models import Team, TeamMembership

pytestmark = pytest.mark.django_db

TEAMS = "/api/v1/orgs/alpha/teams/"


def _team(slug: str = "support", name: str = "Support") -> Team:
    with schema_context("org_alpha"):
        return Team.objects.create(slug=slug, name=name)


def _rows() -> list[tuple[str, int, str]]:
    with schema_context("org_alpha"):
        return sorted(
            (m.team.slug, m.user_id, m.role) for m in TeamMembership.objects.select_related("team")
        )


def _teams() -> list[str]:
    with schema_context("org_alpha"):
        return sorted(Team.objects.values_list("slug", flat=True))


def test_an_admin_creates_renames_and_deletes_a_team_each_audited(world, as_key):
    client = as_key(world.alpha.keys["admin"])

    created = client.post(TEAMS, {"name": "Customer Support"}, format="json")
    team_id = created.json()["id"]
    renamed = client.patch(f"{TEAMS}{team_id}/", {"name": "Support"}, format="json")
    listed = client.get(TEAMS)
    deleted = client.delete(f"{TEAMS}{team_id}/")

    assert created.status_code == 201
    assert created.json()["slug"] == "customer-support"
    assert renamed.json()["name"] == "Support"
    assert [t["name"] for t in listed.json()["results"]] == ["Support"]
    assert deleted.status_code == 204
    assert _teams() == []
    with schema_context("org_alpha"):
        actions = list(
            AuditEvent.objects.filter(action__startswith="team.")
            .order_by("created_at")
            .values_list("action", flat=True)
        )
    assert actions == ["team.created", "team.updated", "team.deleted"]


def test_a_taken_slug_and_bad_input_are_400s_naming_the_field(world, as_key):
    client = as_key(world.alpha.keys["admin"])
    _team()

    taken = client.post(TEAMS, {"name": "Again", "slug": "support"}, format="json")
    unknown = client.post(TEAMS, {"name": "X", "colour": "red"}, format="json")
    nameless = client.post(TEAMS, {"name": "!!!"}, format="json")
    nul = client.post(TEAMS, {"name": "a\u0000b"}, format="json")

    assert (taken.status_code, taken.json()["error"]["code"]) == (400, "team_exists")
    assert unknown.status_code == 400
    assert "colour" in str(unknown.json()["error"]["details"])
    assert nameless.status_code == 400
    assert nul.status_code == 400
    assert _teams() == ["support"]


def test_members_and_viewers_read_teams_but_cannot_create_them(world, as_key):
    _team()
    for role in ("member", "viewer"):
        client = as_key(world.alpha.keys[role])
        assert client.get(TEAMS).json()["results"][0]["slug"] == "support"
        refused = client.post(TEAMS, {"name": "Mine"}, format="json")
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "role_required")
    assert _teams() == ["support"]


def test_outsiders_get_404_and_change_nothing(world, api):
    team = _team()
    member_id = world.alpha.users["member"].pk
    attempts = [
        ("get", TEAMS, None),
        ("post", TEAMS, {"name": "Intruders"}),
        ("patch", f"{TEAMS}{team.id}/", {"name": "Owned"}),
        ("delete", f"{TEAMS}{team.id}/", None),
        ("post", f"{TEAMS}{team.id}/members/", {"user": member_id}),
    ]
    for method, path, body in attempts:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
        foreign = getattr(api, method)(path, body, format="json")
        api.credentials()
        api.force_login(world.outsider)
        stranger = getattr(api, method)(path, body, format="json")
        api.logout()
        assert (foreign.status_code, stranger.status_code) == (404, 404), (method, path)
    assert _teams() == ["support"]
    assert _rows() == []


def test_another_organizations_team_id_is_not_found_through_alpha(world, as_key):
    with schema_context("org_bravo"):
        theirs = Team.objects.create(slug="secret", name="Secret")
    client = as_key(world.alpha.keys["owner"])

    assert client.get(f"{TEAMS}{theirs.id}/").status_code == 404
    assert client.delete(f"{TEAMS}{theirs.id}/").status_code == 404
    with schema_context("org_bravo"):
        assert Team.objects.filter(id=theirs.id).exists()


def test_a_maintainer_manages_their_team_only(world, as_user, as_key):
    support, sales = _team(), _team("sales", "Sales")
    maintainer, viewer = world.alpha.users["member"], world.alpha.users["viewer"]
    as_key(world.alpha.keys["admin"]).post(
        f"{TEAMS}{support.id}/members/",
        {"user": maintainer.pk, "role": "maintainer"},
        format="json",
    )
    client = as_user(maintainer)
    client.credentials()

    added = client.post(f"{TEAMS}{support.id}/members/", {"user": viewer.pk}, format="json")
    elsewhere = client.post(f"{TEAMS}{sales.id}/members/", {"user": viewer.pk}, format="json")
    rename = client.patch(f"{TEAMS}{support.id}/", {"name": "Mine"}, format="json")
    removed = client.delete(f"{TEAMS}{support.id}/members/{viewer.pk}/")

    assert added.status_code == 200
    assert added.json()["user"]["username"] == "alpha-viewer"
    assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert rename.status_code == 403
    assert removed.status_code == 204
    assert _rows() == [("support", maintainer.pk, "maintainer")]


def test_a_plain_team_member_cannot_change_the_roster(world, as_user, as_key):
    team = _team()
    member, viewer = world.alpha.users["member"], world.alpha.users["viewer"]
    as_key(world.alpha.keys["admin"]).post(
        f"{TEAMS}{team.id}/members/", {"user": member.pk}, format="json"
    )
    client = as_user(member)
    client.credentials()

    refused = client.post(f"{TEAMS}{team.id}/members/", {"user": viewer.pk}, format="json")

    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert _rows() == [("support", member.pk, "member")]


def test_only_organization_members_join_a_team(world, as_key):
    team = _team()
    client = as_key(world.alpha.keys["admin"])

    outsider = client.post(f"{TEAMS}{team.id}/members/", {"user": world.outsider.pk}, format="json")
    bravo = client.post(
        f"{TEAMS}{team.id}/members/", {"user": world.bravo.users["member"].pk}, format="json"
    )

    assert (outsider.status_code, outsider.json()["error"]["code"]) == (400, "not_an_org_member")
    assert bravo.status_code == 400
    assert _rows() == []


def test_leaving_the_organization_ends_team_rights_at_once(world, as_key):
    from tenants.models import Membership
    from tenants.services import membership_add, membership_remove
    from tenants.teams.selectors import team_role

    org = world.alpha.org
    membership, _ = membership_add(
        org=org, email="leaver@alpha.test", role="member", actor_role="owner"
    )
    team = _team()
    as_key(world.alpha.keys["admin"]).post(
        f"{TEAMS}{team.id}/members/",
        {"user": membership.user_id, "role": "maintainer"},
        format="json",
    )
    with schema_context("org_alpha"):
        assert team_role(org=org, team=team, user_id=membership.user_id) == "maintainer"

    membership_remove(membership=Membership.objects.get(pk=membership.pk), actor_role="owner")

    with schema_context("org_alpha"):
        assert team_role(org=org, team=team, user_id=membership.user_id) is None
    assert _rows() == []
