from __future__ import annotations

import pytest
from django.test import Client

from tenants.models import ApiKey, Organization

pytestmark = pytest.mark.django_db


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_operator_creates_an_organization_in_the_admin(world):
    world.staff.is_superuser = True
    world.staff.save()
    client = _client(world.staff)

    response = client.post(
        "/admin/tenants/organization/add/",
        {"name": "Echo", "slug": "echo", "plan": "", "owner_email": "o@echo.test"},
        follow=True,
    )

    assert response.status_code == 200
    org = Organization.objects.get(slug="echo")
    messages = [str(m) for m in response.context["messages"]]
    assert any("Owner API key (shown once): ck_" in m for m in messages)
    assert org.schema_name == "org_echo"


def test_operator_suspends_and_resumes_from_the_admin(world):
    world.staff.is_superuser = True
    world.staff.save()
    client = _client(world.staff)
    org = Organization.objects.get(slug="bravo")

    client.post(
        "/admin/tenants/organization/", {"action": "suspend_selected", "_selected_action": [org.pk]}
    )
    assert Organization.objects.get(pk=org.pk).status == "suspended"
    client.post(
        "/admin/tenants/organization/", {"action": "resume_selected", "_selected_action": [org.pk]}
    )
    assert Organization.objects.get(pk=org.pk).status == "active"


def test_api_key_admin_never_shows_the_secret_again(world):
    world.staff.is_superuser = True
    world.staff.save()
    key = ApiKey.objects.get(pk=world.alpha.key_ids["member"])

    page = _client(world.staff).get(f"/admin/tenants/apikey/{key.pk}/change/")

    assert page.status_code == 200
    assert world.alpha.keys["member"].encode() not in page.content
    assert key.secret_hash.encode() not in page.content


def test_public_admin_refuses_non_staff(world):
    response = _client(world.alpha.users["owner"]).get("/admin/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_tenant_admin_dashboard_for_every_member(world, role):
    response = _client(world.alpha.users[role]).get("/orgs/alpha/admin/")

    assert response.status_code == 200
    assert response.context["org_role"] == role
    assert b"Alpha" in response.content


def test_tenant_admin_links_keep_the_organization_prefix(world):
    response = _client(world.alpha.users["owner"]).get("/orgs/alpha/admin/")

    assert b'href="/orgs/alpha/admin/audit/auditevent/"' in response.content


@pytest.mark.parametrize(
    ("role", "can_write"), [("owner", True), ("admin", True), ("member", False), ("viewer", False)]
)
def test_tenant_admin_write_permission_follows_role(world, role, can_write, rf):
    from tenants.audit.models import AuditEvent
    from tenants.resolution import org_by_slug
    from tenants.tenant_admin import TenantModelAdmin, tenant_admin_site

    request = rf.get("/")
    request.user = world.alpha.users[role]
    request.org = org_by_slug("alpha")
    model_admin = TenantModelAdmin(AuditEvent, tenant_admin_site)

    assert model_admin.has_view_permission(request) is True
    assert model_admin.has_change_permission(request) is can_write
    assert model_admin.has_add_permission(request) is can_write
    assert model_admin.has_delete_permission(request) is can_write


def test_tenant_admin_refuses_outsiders_like_an_unknown_organization(world):
    foreign = _client(world.bravo.users["owner"]).get("/orgs/alpha/admin/")
    unknown = _client(world.bravo.users["owner"]).get("/orgs/nowhere/admin/")
    outsider = _client(world.outsider).get("/orgs/alpha/admin/")

    assert foreign.status_code == unknown.status_code == outsider.status_code == 404


def test_tenant_admin_sends_anonymous_visitors_to_login_whether_or_not_the_org_exists(world):
    real = _client().get("/orgs/alpha/admin/")
    unknown = _client().get("/orgs/nowhere/admin/")

    assert real.status_code == unknown.status_code == 302
    assert real["Location"].startswith("/accounts/login/?next=")
    assert unknown["Location"].startswith("/accounts/login/?next=")


def test_member_logs_in_and_reaches_the_tenant_admin(world):
    client = Client()

    response = client.post(
        "/accounts/login/?next=/orgs/alpha/admin/",
        {"username": "alpha-member", "password": "pw-member"},
    )

    assert response.status_code == 302 and response["Location"] == "/orgs/alpha/admin/"
    assert client.get("/orgs/alpha/admin/").status_code == 200


def test_suspended_organization_admin_is_403(world):
    from tenants.services import organization_resume, organization_suspend

    org = Organization.objects.get(slug="alpha")
    organization_suspend(org=org)
    try:
        response = _client(world.alpha.users["owner"]).get("/orgs/alpha/admin/")
    finally:
        organization_resume(org=org)

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("role", "can_read"), [("owner", True), ("admin", True), ("member", False), ("viewer", False)]
)
def test_the_audit_trail_is_for_admins_and_owners_only(world, role, can_read):
    from django_tenants.utils import schema_context

    from tenants.audit.models import AuditEvent

    with schema_context("org_alpha"):
        AuditEvent.objects.create(action="test.secret", actor="audit-probe", target="x")
    client = _client(world.alpha.users[role])

    listing = client.get("/orgs/alpha/admin/audit/auditevent/")
    dashboard = client.get("/orgs/alpha/admin/")

    assert listing.status_code == (200 if can_read else 403)
    assert (b"audit-probe" in dashboard.content) is can_read
    assert (b'href="/orgs/alpha/admin/audit/auditevent/"' in dashboard.content) is can_read
