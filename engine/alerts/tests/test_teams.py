"""Alert rules belong to the organization or one team (issue 16, item 2): the outsider matrix
(another team's member, a member of no team, a team-limited key, another organization's key, a
viewer), maintainers' rights, sharing, the admin, and what a team's rule judges.

Every test runs in a transaction that is rolled back; the teams' world (tenants/teams/tests/
scoping_world.py) is committed once per module.
"""

from __future__ import annotations

import uuid

import pytest
from django_tenants.utils import schema_context

from engine.alerts.models import AlertEvent, AlertRule, AlertRuleShare
from tenants.teams.tests.test_scoping import _audit

pytestmark = pytest.mark.django_db

BASE = "/api/v1/orgs/alpha/alert-rules/"
EMAILS = ["ops@alpha.test"]


@pytest.fixture
def rules(tw):
    """One run_failed rule per owner: support's, sales' and the organization's."""
    from engine.alerts.services import alert_rule_create

    made = {}
    with schema_context("org_alpha"):
        for owner in ("support", "sales", None):
            made[owner], _ = alert_rule_create(
                actor="test",
                name=f"ts-rule-{owner or 'org'}",
                kind="run_failed",
                emails=EMAILS,
                team=tw.teams.get(owner),
            )
    return made


def _state() -> list:
    """Everything a refused request could have changed."""
    with schema_context("org_alpha"):
        return [
            sorted(
                AlertRule.objects.values_list(
                    "name", "kind", "enabled", "team_id", "webhook_url", "updated_at"
                )
            ),
            sorted(AlertRuleShare.objects.values_list("rule_id", "team_id", "level")),
        ]


def _names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(r["name"] for r in response.json()["results"])


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("admin", ["ts-rule-org", "ts-rule-sales", "ts-rule-support"]),
        ("admin_key", ["ts-rule-org", "ts-rule-sales", "ts-rule-support"]),
        ("sup_maint", ["ts-rule-org", "ts-rule-support"]),
        ("sup_member", ["ts-rule-org", "ts-rule-support"]),
        ("k_sup_member", ["ts-rule-org", "ts-rule-support"]),
        ("sales_member", ["ts-rule-org", "ts-rule-sales"]),
        ("member", ["ts-rule-org"]),  # a member of no team
        ("viewer", ["ts-rule-org"]),
        ("sales_limited_admin", ["ts-rule-org", "ts-rule-sales"]),
        ("sales_limited_member", ["ts-rule-org", "ts-rule-sales"]),
    ],
)
def test_each_caller_lists_the_rules_its_teams_give(client_for, rules, caller, expected):
    listed = client_for(caller).get(BASE)

    assert _names(listed) == expected
    teams = {r["name"]: r["team"] for r in listed.json()["results"]}
    assert teams["ts-rule-org"] is None


@pytest.mark.parametrize(
    "caller", ["sales_member", "member", "sales_limited_admin", "sales_limited_member", "viewer"]
)
def test_outsiders_get_404_on_another_teams_rule_and_nothing_changes(client_for, tw, rules, caller):
    client = client_for(caller)
    before = _state()
    sales, support = str(tw.teams["sales"].pk), str(tw.teams["support"].pk)
    url = f"{BASE}{rules['support'].pk}/"

    responses = [
        client.get(url),
        client.patch(url, {"enabled": False}, format="json"),
        client.patch(url, {"team": sales}, format="json"),
        client.delete(url),
        client.get(f"{url}history/"),
        client.get(f"{url}shares/"),
        client.post(f"{url}shares/", {"team": sales, "level": "manage"}, format="json"),
        client.delete(f"{url}shares/{sales}/"),
    ]
    created = client.post(
        BASE, {"name": "ts-stolen", "kind": "run_failed", "emails": EMAILS, "team": support},
        format="json",
    )  # fmt: skip

    # A viewer's writes stop at the role (403) before any rule is looked up.
    write = 403 if caller == "viewer" else 404
    expected = [404, write, write, write, 404, 404, write, write]
    assert [r.status_code for r in responses] == expected, [
        (r.status_code, r.content[:200]) for r in responses
    ]
    assert created.status_code == 403, created.content
    assert _state() == before


def test_another_organizations_key_gets_404_on_every_rule_endpoint(world, as_key, tw, rules):
    client = as_key(world.bravo.keys["owner"])
    before = _state()
    url = f"{BASE}{rules['support'].pk}/"
    responses = [
        client.get(BASE),
        client.post(BASE, {"name": "x", "kind": "run_failed", "emails": EMAILS}, format="json"),
        client.get(url),
        client.patch(url, {"enabled": False}, format="json"),
        client.delete(url),
        client.get(f"{url}history/"),
        client.get(f"{url}shares/"),
        client.post(f"{url}shares/", {"team": str(tw.teams["sales"].pk)}, format="json"),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert _state() == before
    with schema_context("org_bravo"):
        assert AlertRule.objects.count() == 0


def test_a_maintainer_creates_and_manages_the_teams_rules_and_members_only_read(
    client_for, tw, rules
):
    support, sales = str(tw.teams["support"].pk), str(tw.teams["sales"].pk)
    body = {"name": "ts-sup-slow", "kind": "slow_run", "threshold_ms": 5000, "emails": EMAILS}

    by_member = client_for("sup_member").post(BASE, {**body, "team": support}, format="json")
    org_wide = client_for("sup_maint").post(BASE, body, format="json")
    made = client_for("sup_maint").post(BASE, {**body, "team": support}, format="json")
    assert (by_member.status_code, by_member.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert (org_wide.status_code, org_wide.json()["error"]["code"]) == (403, "role_required")
    assert made.status_code == 201, made.content
    assert made.json()["team"] == support
    url = f"{BASE}{made.json()['id']}/"

    refused = client_for("sup_member").patch(url, {"enabled": False}, format="json")
    moved_away = client_for("sup_maint").patch(url, {"team": sales}, format="json")
    changed = client_for("sup_maint").patch(url, {"threshold_ms": 9000}, format="json")
    org_rule = client_for("sup_maint").patch(
        f"{BASE}{rules[None].pk}/", {"enabled": False}, format="json"
    )

    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert (moved_away.status_code, moved_away.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )
    assert (changed.status_code, changed.json()["threshold_ms"]) == (200, 9000)
    assert (org_rule.status_code, org_rule.json()["error"]["code"]) == (403, "role_required")
    assert client_for("sup_maint").delete(url).status_code == 204
    with schema_context("org_alpha"):
        assert not AlertRule.objects.filter(name="ts-sup-slow").exists()
    target = f"alert_rule:{made.json()['id']}"
    actions = [
        a[0]
        for a in _audit("alert_rule.created", "alert_rule.updated", "alert_rule.deleted")
        if a[1] == target
    ]
    assert actions == ["alert_rule.created", "alert_rule.updated", "alert_rule.deleted"]


def test_an_admin_moves_a_rule_audited_and_bad_teams_are_400s(client_for, tw, rules):
    admin = client_for("admin")
    url = f"{BASE}{rules['support'].pk}/"
    sales = str(tw.teams["sales"].pk)

    unknown = admin.patch(url, {"team": str(uuid.uuid4())}, format="json")
    malformed = admin.post(
        BASE, {"name": "x", "kind": "run_failed", "emails": EMAILS, "team": "sales"}, format="json"
    )
    moved = admin.patch(url, {"team": sales}, format="json")

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "unknown_team")
    assert unknown.json()["error"]["details"] == {"field": "team"}
    assert malformed.status_code == 400 and "team" in str(malformed.json()["error"]["details"])
    assert (moved.status_code, moved.json()["team"]) == (200, sales)
    assert _audit("alert_rule.team_changed") == [
        ("alert_rule.team_changed", f"alert_rule:{rules['support'].pk}", {"team": "ts-support"},
         {"team": "ts-sales"}),
    ]  # fmt: skip
    assert "ts-rule-support" in _names(client_for("sales_member").get(BASE))
    assert "ts-rule-support" not in _names(client_for("sup_member").get(BASE))


def test_sharing_a_rule_shows_it_to_another_team_at_its_level(client_for, tw, rules):
    url = f"{BASE}{rules['support'].pk}/"
    sales = str(tw.teams["sales"].pk)

    by_member = client_for("sup_member").post(f"{url}shares/", {"team": sales}, format="json")
    shared = client_for("sup_maint").post(
        f"{url}shares/", {"team": sales, "level": "read"}, format="json"
    )
    assert by_member.status_code == 403
    assert shared.status_code == 200, shared.content
    seen = client_for("sales_member").get(url)
    read_only = client_for("sales_member").patch(url, {"enabled": False}, format="json")
    assert seen.status_code == 200
    assert seen.json()["webhook_url"] == ""
    assert (read_only.status_code, read_only.json()["error"]["code"]) == (
        403,
        "team_maintainer_required",
    )

    client_for("sup_maint").post(f"{url}shares/", {"team": sales, "level": "manage"}, format="json")
    managed = client_for("sales_member").patch(url, {"enabled": False}, format="json")
    unshared = client_for("sup_maint").delete(f"{url}shares/{sales}/")
    gone = client_for("sales_member").get(url)

    assert (managed.status_code, managed.json()["enabled"]) == (200, False)
    assert unshared.status_code == 204
    assert gone.status_code == 404
    target = f"alert_rule:{rules['support'].pk}"
    assert _audit("alert_rule.shared", "alert_rule.unshared") == [
        ("alert_rule.shared", target, None, {"team": "ts-sales", "level": "read"}),
        ("alert_rule.shared", target, {"team": "ts-sales", "level": "read"},
         {"team": "ts-sales", "level": "manage"}),
        ("alert_rule.unshared", target, {"team": "ts-sales", "level": "manage"}, None),
    ]  # fmt: skip


def test_a_team_that_owns_a_rule_cannot_be_deleted(client_for, tw):
    from engine.alerts.services import alert_rule_create
    from tenants.teams.models import Team

    with schema_context("org_alpha"):
        team = Team.objects.create(slug="ts-lonely", name="TS lonely")
        alert_rule_create(
            actor="test", name="ts-lonely-rule", kind="run_failed", emails=EMAILS, team=team
        )

    response = client_for("admin").delete(f"/api/v1/orgs/alpha/teams/{team.pk}/")

    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"resources": ["alert rule ts-lonely-rule"]}


def test_the_admin_lists_only_the_teams_rules_and_firings(client, tw, rules):
    from engine.alerts.evaluate import Finding
    from engine.alerts.services import alert_fire

    with schema_context("org_alpha"):
        for owner in ("support", "sales"):
            alert_fire(rule=rules[owner], finding=Finding(f"window:{owner}", f"ts-{owner}-fired"))
    client.force_login(tw.users["sales_member"])

    listed = client.get("/orgs/alpha/admin/alerts/alertrule/").content.decode()
    change = client.get(f"/orgs/alpha/admin/alerts/alertrule/{rules['support'].pk}/change/")
    firings = client.get("/orgs/alpha/admin/alerts/alertevent/").content.decode()

    assert "ts-rule-sales" in listed and "ts-rule-org" in listed
    assert "ts-rule-support" not in listed
    assert change.status_code == 302  # Django's "does not exist" redirect, nothing shown
    assert "ts-sales-fired" in firings and "ts-support-fired" not in firings


# --- what a team's rule judges ---------------------------------------------------------------


def _failed_run(bot) -> str:
    from engine.models import Run

    run = Run.objects.create(
        orchestrator=bot,
        orchestrator_slug=bot.slug,
        team_id=bot.team_id,
        trigger="rest",
        status="failed",
        error="secret text of the run",
        error_code="llm_unavailable",
    )
    return str(run.id)


def test_a_teams_rule_fires_only_on_runs_its_team_sees(tw, rules):
    from engine.alerts.services import alert_payload, alerts_for_run
    from tenants.teams.models import OrchestratorShare

    with schema_context("org_alpha"):
        runs = {name: _failed_run(tw.bots[name]) for name in ("sales", "support", None)}
        fired = {
            name: {str(e.rule_id) for e in alerts_for_run(run_id=run_id)}
            for name, run_id in runs.items()
        }
        payloads = [alert_payload(e) for e in AlertEvent.objects.filter(rule=rules["support"])]
        # Shared with support, sales' orchestrator is one support sees: its runs count then.
        OrchestratorShare.objects.create(
            orchestrator=tw.bots["sales"], team=tw.teams["support"], level="read"
        )
        shared_run = _failed_run(tw.bots["sales"])
        after_share = {str(e.rule_id) for e in alerts_for_run(run_id=shared_run)}

    support, sales, org = (str(rules[k].pk) for k in ("support", "sales", None))
    assert fired == {
        "sales": {sales, org},  # support's rule never sees another team's run
        "support": {support, org},
        None: {support, sales, org},  # an organization-wide orchestrator: every team sees it
    }
    assert sorted(p["run"] for p in payloads) == sorted([runs["support"], runs[None]])
    assert runs["sales"] not in str(payloads)
    assert after_share == {support, sales, org}


def test_a_teams_window_counts_only_the_runs_its_team_sees(tw):
    from engine.alerts.evaluate import window_finding

    sales_bot = tw.bots["sales"].slug
    with schema_context("org_alpha"):
        fields = {
            "kind": "failure_rate", "window_seconds": 3600, "failure_rate": 0.5,
            "emails": EMAILS, "orchestrator": sales_bot,
        }  # fmt: skip
        team_rule = AlertRule.objects.create(name="ts-sup", team=tw.teams["support"], **fields)
        sales_rule = AlertRule.objects.create(name="ts-sales", team=tw.teams["sales"], **fields)
        org_rule = AlertRule.objects.create(name="ts-org", **fields)
        for _ in range(3):
            _failed_run(tw.bots["sales"])
        found = {
            rule.name: window_finding(rule, now=None) for rule in (team_rule, sales_rule, org_rule)
        }

    assert found["ts-sup"] is None  # support sees none of sales' runs
    assert (found["ts-sales"].details["failed"], found["ts-sales"].details["total"]) == (3, 3)
    assert (found["ts-org"].details["failed"], found["ts-org"].details["total"]) == (3, 3)
