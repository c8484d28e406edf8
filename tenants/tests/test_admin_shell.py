"""The admins' shell: branding, the sidebar in tenant context, dashboards, inlines, the landing page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

pytestmark = pytest.mark.django_db


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def run_and_conversation(world):
    from chat.models import Conversation, Message
    from engine.models import Run, RunEvent
    from orchestrators.services import llm_config_create, orchestrator_create

    with schema_context("org_alpha"):
        config = llm_config_create(name="shell", provider="offline", model="m")
        bot = orchestrator_create(slug="shellbot", name="Shellbot", llm_config=config)
        run = Run.objects.create(
            orchestrator_slug="ghost",
            trigger="rest",
            status="failed",
            error="boom",
            usage={"total_tokens": 7},
            owner_user_id=world.alpha.users["member"].pk,
        )
        RunEvent.objects.create(run=run, seq=1, kind="step", name="call_model", at=timezone.now())
        conversation = Conversation.objects.create(
            orchestrator=bot,
            owner_user_id=world.alpha.users["member"].pk,
            title="shell",
            last_seq=1,
        )
        Message.objects.create(conversation=conversation, seq=1, role="user", content="hi shell")
    return run, conversation


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_the_sidebar_works_in_tenant_context(world, role):
    page = _client(world.alpha.users[role]).get("/orgs/alpha/admin/engine/run/").content.decode()

    assert "Not available" not in page
    assert 'id="nav-sidebar"' in page
    assert 'href="/orgs/alpha/admin/orchestrators/orchestratorinstance/"' in page
    assert "Alpha — Cadence admin" in page
    assert "Django administration" not in page


def test_both_admins_are_branded_with_a_favicon(world):
    world.staff.is_superuser = True
    world.staff.save()
    try:
        operator = _client(world.staff).get("/admin/").content.decode()
    finally:
        world.staff.is_superuser = False
        world.staff.save()
    tenant = _client(world.alpha.users["owner"]).get("/orgs/alpha/admin/").content.decode()

    for page in (operator, tenant):
        assert "/static/cadence/favicon.svg" in page
        assert "Django administration" not in page and "Django site admin" not in page
    assert "Cadence operator admin" in operator
    assert "Deployment dashboard" in operator


def test_the_operator_dashboard_counts_runs_and_tokens_across_organizations(
    world, run_and_conversation
):
    from django.core.cache import cache

    from cadence_site.dashboards import operator_dashboard

    cache.delete("cadence:dashboard:operator")
    data = operator_dashboard()

    assert data["org_total"] >= 2
    assert data["runs_total"] >= 1 and data["tokens_total"] >= 7
    assert sum(data["chart"]["failed"]) >= 1
    assert "alpha" in [row["slug"] for row in data["busiest"]]


def test_the_organization_dashboard_shows_failures_to_admins_only(world, run_and_conversation):
    owner = _client(world.alpha.users["owner"]).get("/orgs/alpha/admin/")
    member = _client(world.alpha.users["member"]).get("/orgs/alpha/admin/")

    assert owner.status_code == member.status_code == 200
    assert owner.context["dashboard"]["runs_failed"] >= 1
    assert b'id="recent-failures"' in owner.content and b"boom" in owner.content
    assert b'id="recent-failures"' not in member.content
    assert b'data-chart="chart-data"' in member.content
    assert b"/static/vendor/chartjs/chart.umd.min.js" in member.content


def test_the_organization_dashboard_measures_usage_against_the_limits_that_apply(
    world, run_and_conversation
):
    """The organization's override, not the bare plan: what the quotas enforce is what it shows."""
    from tenants.limits.models import OrganizationLimits
    from tenants.limits.usage import Usage, usage_add

    org = world.alpha.org
    OrganizationLimits.objects.create(
        organization_id=org.pk, max_orchestrators=4, tokens_per_month=1000
    )
    usage_add(org_id=org.pk, principal="user:1", usage=Usage(150, 100))
    try:
        dashboard = (
            _client(world.alpha.users["owner"]).get("/orgs/alpha/admin/").context["dashboard"]
        )
    finally:
        OrganizationLimits.objects.filter(organization_id=org.pk).delete()

    with schema_context("org_alpha"):
        from orchestrators.models import OrchestratorInstance

        count = OrchestratorInstance.objects.count()
    assert dashboard["usage"]["orchestrators"] == {
        "used": count,
        "limit": 4,
        "percent": min(100, round(100 * count / 4)),
        "full": count >= 4,
    }
    assert dashboard["usage"]["tokens_month"]["limit"] == 1000
    assert dashboard["usage"]["tokens_month"]["used"] >= 250


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_a_runs_steps_are_shown_to_every_role_that_reads_the_run(world, run_and_conversation, role):
    """Owners and admins read every run; the member whose conversation it ran, this one."""
    from engine.models import Run

    run, _ = run_and_conversation
    # Members and viewers read their own runs (engine/runs/selectors.py): make it theirs.
    with schema_context("org_alpha"):
        Run.objects.filter(pk=run.pk).update(owner_user_id=world.alpha.users[role].pk)

    response = _client(world.alpha.users[role]).get(
        f"/orgs/alpha/admin/engine/run/{run.pk}/change/"
    )

    assert response.status_code == 200
    assert [f.formset.prefix for f in response.context["inline_admin_formsets"]] == ["events"]
    assert b"call_model" in response.content


def test_a_conversations_messages_are_shown_to_admins(world, run_and_conversation):
    _, conversation = run_and_conversation
    path = f"/orgs/alpha/admin/chat/conversation/{conversation.pk}/change/"

    response = _client(world.alpha.users["admin"]).get(path)

    assert response.status_code == 200
    assert [f.formset.prefix for f in response.context["inline_admin_formsets"]] == ["messages"]
    assert b"hi shell" in response.content
    assert _client(world.alpha.users["member"]).get(path).status_code == 403


def test_the_operators_open_link_is_offered_only_where_it_opens(world):
    from tenants.models import Membership

    world.staff.is_superuser = True
    world.staff.save()
    Membership.objects.create(user=world.staff, organization=world.bravo.org, role="viewer")
    try:
        page = _client(world.staff).get("/admin/tenants/organization/").content.decode()
    finally:
        Membership.objects.filter(user=world.staff).delete()
        world.staff.is_superuser = False
        world.staff.save()

    assert 'href="/orgs/bravo/admin/"' in page
    assert 'href="/orgs/alpha/admin/"' not in page


def test_the_landing_page_for_a_visitor_and_for_a_member(world):
    anonymous = _client().get("/")
    member = _client(world.alpha.users["member"]).get("/")

    assert anonymous.status_code == member.status_code == 200
    assert b'href="/accounts/login/?next=/"' in anonymous.content
    assert b'href="/api/docs/"' in anonymous.content
    assert b'href="/orgs/alpha/admin/"' in member.content
    assert b'href="/orgs/alpha/chat/"' in member.content
    assert b"/orgs/bravo/" not in member.content


def test_logging_in_without_a_destination_lands_on_the_landing_page(world):
    response = Client().post(
        "/accounts/login/", {"username": "alpha-viewer", "password": "pw-viewer"}
    )

    assert response.status_code == 302 and response["Location"] == "/"
