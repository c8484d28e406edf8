"""Alert rules and their history in the organization's admin: admins create and change rules
through the services (checked, audited, secret shown once); members read."""

from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from engine.alerts.evaluate import Finding
from engine.alerts.models import AlertEvent, AlertRule
from engine.alerts.services import alert_fire, alert_rule_create
from engine.models import Run
from tenants.audit.models import AuditEvent

pytestmark = pytest.mark.django_db
RULES = "/orgs/alpha/admin/alerts/alertrule/"
HISTORY = "/orgs/alpha/admin/alerts/alertevent/"


def _client(user):
    client = Client()
    client.force_login(user)
    return client


def _form(**fields):
    form = {
        "name": "slow", "kind": "slow_run", "enabled": "on", "orchestrator": "",
        "error_code": "", "pattern": "", "threshold_ms": "1500", "window_seconds": "",
        "min_runs": "", "failure_rate": "", "tokens": "", "webhook_url": "",
        "emails": "ops@alpha.test\n", "_save": "Save",
    }  # fmt: skip
    form.update(fields)
    return form


def test_an_admin_creates_a_rule_in_the_admin_and_sees_its_secret_once(world, settings):
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["hooks.example.com"]
    client = _client(world.alpha.users["admin"])

    response = client.post(
        f"{RULES}add/", _form(webhook_url="https://hooks.example.com/x"), follow=True
    )

    assert response.status_code == 200
    with schema_context("org_alpha"):
        rule = AlertRule.objects.get()
        assert (rule.kind, rule.threshold_ms, rule.emails) == ("slow_run", 1500, ["ops@alpha.test"])
        assert AuditEvent.objects.filter(action="alert_rule.created").count() == 1
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 2 and "Webhook signing secret (shown only now): whsec_" in shown[0]
    assert b"whsec_" not in client.get(f"{RULES}{rule.pk}/change/").content


def test_the_admin_form_names_what_the_services_refuse(world):
    client = _client(world.alpha.users["admin"])

    response = client.post(f"{RULES}add/", _form(kind="log_match", threshold_ms="", pattern="(x"))

    assert response.status_code == 200
    assert "pattern" in response.context["adminform"].form.errors
    with schema_context("org_alpha"):
        assert AlertRule.objects.count() == 0


def test_a_member_reads_rules_and_the_history_of_their_own_runs_but_cannot_change(world, settings):
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = ["hooks.example.com"]
    with schema_context("org_alpha"):
        rule, _ = alert_rule_create(
            actor="test", name="fails", kind="run_failed", emails=["a@b.co"],
            webhook_url="https://hooks.example.com/T0/secret-token",
        )  # fmt: skip
        mine = Run.objects.create(
            orchestrator_slug="x", trigger="rest", status="failed",
            owner_user_id=world.alpha.users["member"].pk,
        )  # fmt: skip
        theirs = Run.objects.create(orchestrator_slug="x", trigger="rest", status="failed")
        alert_fire(rule=rule, finding=Finding(f"run:{mine.id}", "mine failed", {}, str(mine.id)))
        alert_fire(
            rule=rule, finding=Finding(f"run:{theirs.id}", "theirs failed", {}, str(theirs.id))
        )
    member = _client(world.alpha.users["member"])

    assert b"fails" in member.get(RULES).content
    assert b"secret-token" not in member.get(RULES).content
    assert b"secret-token" not in member.get(f"{RULES}{rule.pk}/change/").content
    history = member.get(f"{HISTORY}?rule__id__exact={rule.pk}")
    assert history.status_code == 200
    assert b"mine failed" in history.content and b"theirs failed" not in history.content
    assert b"email: pending (0)" in history.content
    assert f"/engine/run/{mine.id}/change/".encode() in history.content
    assert member.post(f"{RULES}{rule.pk}/change/", _form(kind="run_failed")).status_code == 403
    assert member.post(f"{RULES}{rule.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_history = _client(world.alpha.users["admin"]).get(HISTORY)
    assert b"theirs failed" in admin_history.content
    with schema_context("org_alpha"):
        assert AlertRule.objects.get().name == "fails"
        assert AlertEvent.objects.count() == 2


def test_an_admin_deletes_a_rule_through_the_service(world):
    with schema_context("org_alpha"):
        rule, _ = alert_rule_create(actor="test", name="gone", kind="drift", emails=["a@b.co"])
    client = _client(world.alpha.users["admin"])

    assert client.post(f"{RULES}{rule.pk}/delete/", {"post": "yes"}).status_code == 302

    with schema_context("org_alpha"):
        assert AlertRule.objects.count() == 0
        assert AuditEvent.objects.filter(action="alert_rule.deleted").count() == 1
