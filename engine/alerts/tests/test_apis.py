"""Alert rules over REST: who may read and change them, what is refused, secrets shown once."""

from __future__ import annotations

import uuid

import pytest
from django_tenants.utils import schema_context

from engine.alerts.models import AlertEvent, AlertRule
from tenants.audit.models import AuditEvent

BASE = "/api/v1/orgs/alpha/alert-rules/"
RULE = {"name": "failures", "kind": "run_failed", "emails": ["ops@alpha.test"]}


@pytest.fixture
def public_hooks(settings):
    # example.com is public (and never contacted): the policy accepts it without DNS games.
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["hooks.example.com"]


def _count() -> int:
    with schema_context("org_alpha"):
        return AlertRule.objects.count()


def test_an_admin_creates_a_rule_whose_secret_is_shown_once_and_audited(
    world, as_key, db, public_hooks
):
    api = as_key(world.alpha.keys["admin"])
    response = api.post(
        BASE,
        {**RULE, "webhook_url": "https://hooks.example.com/cadence", "error_code": "llm_timeout"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["webhook_secret"].startswith("whsec_")
    assert (created["kind"], created["error_code"], created["has_webhook_secret"]) == (
        "run_failed",
        "llm_timeout",
        True,
    )
    listed = api.get(BASE).json()["results"]
    assert [r["id"] for r in listed] == [created["id"]]
    assert "webhook_secret" not in listed[0]
    assert "webhook_secret" not in api.get(f"{BASE}{created['id']}/").json()
    with schema_context("org_alpha"):
        audit = AuditEvent.objects.get(action="alert_rule.created")
        stored = AlertRule.objects.get(pk=created["id"]).webhook_secret
    assert audit.target == f"alert_rule:{created['id']}"
    assert created["webhook_secret"] not in str(audit.details)
    assert created["webhook_secret"] not in stored  # encrypted at rest


def test_members_and_viewers_read_rules_but_cannot_change_them(world, as_key, db):
    rule = as_key(world.alpha.keys["owner"]).post(BASE, RULE, format="json").json()
    for role in ("member", "viewer"):
        api = as_key(world.alpha.keys[role])
        assert api.get(BASE).status_code == 200
        assert api.get(f"{BASE}{rule['id']}/").json()["name"] == "failures"
        assert api.get(f"{BASE}{rule['id']}/history/").json() == {
            "results": [],
            "next_cursor": None,
        }
        assert api.post(BASE, RULE, format="json").status_code == 403
        patched = api.patch(f"{BASE}{rule['id']}/", {"enabled": False}, format="json")
        assert (patched.status_code, patched.json()["error"]["code"]) == (403, "role_required")
        assert api.delete(f"{BASE}{rule['id']}/").status_code == 403
    with schema_context("org_alpha"):
        assert list(AlertRule.objects.values_list("name", "enabled")) == [("failures", True)]


def test_another_organizations_key_and_a_non_member_get_404(world, as_key, as_user, db):
    rule = as_key(world.alpha.keys["owner"]).post(BASE, RULE, format="json").json()
    for api in (as_key(world.bravo.keys["owner"]), as_user(world.outsider)):
        for response in (
            api.get(BASE),
            api.post(BASE, RULE, format="json"),
            api.get(f"{BASE}{rule['id']}/"),
            api.patch(f"{BASE}{rule['id']}/", {"enabled": False}, format="json"),
            api.delete(f"{BASE}{rule['id']}/"),
            api.get(f"{BASE}{rule['id']}/history/"),
        ):
            assert response.status_code == 404
    assert _count() == 1
    with schema_context("org_bravo"):
        assert AlertRule.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**RULE, "kind": "bogus"}, "kind"),
        ({**RULE, "name": "a\x00b"}, "name"),
        ({**RULE, "webhook_url": "not a url"}, "webhook_url"),
        ({**RULE, "webhook_url": "ftp://hooks.example.com/x"}, "webhook_url"),
        ({**RULE, "webhook_url": "http://169.254.169.254/latest"}, "webhook_url"),
        ({**RULE, "kind": "log_match", "pattern": "a" * 501}, "pattern"),
        ({**RULE, "kind": "log_match", "pattern": "(unclosed"}, "pattern"),
        ({**RULE, "kind": "log_match"}, "pattern"),
        ({**RULE, "kind": "slow_run", "threshold_ms": -1}, "threshold_ms"),
        ({**RULE, "kind": "slow_run"}, "threshold_ms"),
        ({**RULE, "kind": "tokens_over", "window_seconds": 60, "tokens": -5}, "tokens"),
        (
            {**RULE, "kind": "failure_rate", "window_seconds": 60, "failure_rate": 1.5},
            "failure_rate",
        ),
        ({**RULE, "kind": "failure_rate", "window_seconds": 60, "failure_rate": 0}, "failure_rate"),
        (
            {**RULE, "kind": "failure_rate", "failure_rate": 0.5, "window_seconds": 0},
            "window_seconds",
        ),
        ({**RULE, "threshold_ms": 10}, "threshold_ms"),  # a run_failed rule takes no threshold
        ({**RULE, "emails": ["not-an-address"]}, "emails"),
        ({"name": "no target", "kind": "run_failed"}, "webhook_url"),
        ({**RULE, "surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(world, as_key, db, body, field):
    response = as_key(world.alpha.keys["admin"]).post(BASE, body, format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    details = error["details"]
    named = details.get("field") if isinstance(details, dict) else None
    assert named == field or field in details or field in str(details), error
    assert _count() == 0


def test_bad_rule_ids_are_404(world, as_key, db):
    api = as_key(world.alpha.keys["admin"])
    for rule_id in ("nope", str(uuid.uuid4())):
        response = api.get(f"{BASE}{rule_id}/")
        assert (response.status_code, response.json()["error"]["code"]) == (
            404,
            "alert_rule_not_found",
        )


def test_a_patch_changes_the_kind_and_rotates_the_secret_and_a_delete_is_audited(
    world, as_key, db, public_hooks
):
    api = as_key(world.alpha.keys["admin"])
    rule = api.post(
        BASE, {**RULE, "webhook_url": "https://hooks.example.com/a"}, format="json"
    ).json()

    changed = api.patch(
        f"{BASE}{rule['id']}/", {"kind": "slow_run", "threshold_ms": 2500}, format="json"
    )
    assert changed.status_code == 200, changed.json()
    assert (changed.json()["kind"], changed.json()["threshold_ms"]) == ("slow_run", 2500)
    assert "webhook_secret" not in changed.json()
    rotated = api.patch(f"{BASE}{rule['id']}/", {"rotate_secret": True}, format="json").json()
    assert rotated["webhook_secret"].startswith("whsec_")
    assert rotated["webhook_secret"] != rule["webhook_secret"]
    refused = api.patch(f"{BASE}{rule['id']}/", {"threshold_ms": None}, format="json")
    assert (refused.status_code, refused.json()["error"]["details"]) == (
        400,
        {"field": "threshold_ms"},
    )

    assert api.delete(f"{BASE}{rule['id']}/").status_code == 204
    assert _count() == 0
    with schema_context("org_alpha"):
        actions = list(
            AuditEvent.objects.filter(action__startswith="alert_rule.")
            .order_by("created_at")
            .values_list("action", flat=True)
        )
    assert actions == [
        "alert_rule.created",
        "alert_rule.updated",
        "alert_rule.updated",
        "alert_rule.deleted",
    ]


def test_history_pages_and_members_see_firings_about_their_own_runs(world, as_key, db):
    from engine.alerts.evaluate import Finding
    from engine.alerts.services import alert_fire
    from engine.models import Run

    owner = as_key(world.alpha.keys["owner"])
    rule_id = owner.post(BASE, RULE, format="json").json()["id"]
    with schema_context("org_alpha"):
        rule = AlertRule.objects.get(pk=rule_id)
        mine = Run.objects.create(
            orchestrator_slug="x", trigger="rest", status="failed",
            owner_api_key_id=world.alpha.key_ids["member"],
        )  # fmt: skip
        theirs = Run.objects.create(orchestrator_slug="x", trigger="rest", status="failed")
        for run in (mine, theirs):
            alert_fire(rule=rule, finding=Finding(f"run:{run.id}", "failed", {}, str(run.id)))
        alert_fire(rule=rule, finding=Finding("window:1", "rate", {}))
        assert AlertEvent.objects.count() == 3

    first = owner.get(f"{BASE}{rule_id}/history/?limit=2").json()
    second = owner.get(f"{BASE}{rule_id}/history/?limit=2&cursor={first['next_cursor']}").json()
    seen = [e["key"] for e in first["results"] + second["results"]]
    assert sorted(seen) == sorted([f"run:{mine.id}", f"run:{theirs.id}", "window:1"])
    assert second["next_cursor"] is None
    assert first["results"][0]["email"] == {"status": "pending", "attempts": 0, "error": ""}

    member = as_key(world.alpha.keys["member"]).get(f"{BASE}{rule_id}/history/").json()
    assert sorted(e["key"] for e in member["results"]) == sorted([f"run:{mine.id}", "window:1"])
    bad = owner.get(f"{BASE}{rule_id}/history/?limit=0")
    assert (bad.status_code, bad.json()["error"]["details"]) == (400, {"field": "limit"})
    bad = owner.get(f"{BASE}{rule_id}/history/?cursor=zz")
    assert (bad.status_code, bad.json()["error"]["details"]) == (400, {"field": "cursor"})


def test_members_and_viewers_see_only_the_webhooks_host(world, as_key, db, public_hooks):
    url = "https://hooks.example.com/services/T000/B000/secret-token"
    rule = (
        as_key(world.alpha.keys["admin"])
        .post(BASE, {**RULE, "webhook_url": url}, format="json")
        .json()
    )
    assert (
        as_key(world.alpha.keys["admin"]).get(f"{BASE}{rule['id']}/").json()["webhook_url"] == url
    )
    for role in ("member", "viewer"):
        api = as_key(world.alpha.keys[role])
        assert (
            api.get(f"{BASE}{rule['id']}/").json()["webhook_url"] == "https://hooks.example.com/…"
        )
        assert "secret-token" not in str(api.get(BASE).json())
