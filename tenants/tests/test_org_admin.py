"""Members and API keys in the organization admin: the REST API's rules, through the same services."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from tenants.models import ApiKey, Membership

pytestmark = pytest.mark.django_db

MEMBERS = "/orgs/alpha/admin/tenants/membership/"
KEYS = "/orgs/alpha/admin/tenants/apikey/"


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _membership(world, role: str) -> Membership:
    return Membership.objects.get(user=world.alpha.users[role], organization=world.alpha.org)


def _audit(action: str):
    from tenants.audit.models import AuditEvent

    with schema_context("org_alpha"):
        return list(AuditEvent.objects.filter(action=action).order_by("-created_at"))


def test_admin_invites_a_new_member_and_sees_the_initial_password_once(world):
    response = _client(world.alpha.users["admin"]).post(
        f"{MEMBERS}add/", {"email": "new@alpha.test", "role": "member"}, follow=True
    )

    assert response.status_code == 200
    membership = Membership.objects.get(organization=world.alpha.org, user__email="new@alpha.test")
    assert membership.role == "member"
    notes = [str(m) for m in response.context["messages"]]
    assert any("initial password" in n for n in notes)
    assert _audit("member.added")[0].target == "new@alpha.test"


def test_an_admin_cannot_grant_the_owner_role_and_nothing_is_created(world):
    response = _client(world.alpha.users["admin"]).post(
        f"{MEMBERS}add/", {"email": "boss@alpha.test", "role": "owner"}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Only an owner" in str(errors["role"])
    assert not Membership.objects.filter(user__email="boss@alpha.test").exists()


def test_invalid_email_is_shown_beside_the_field(world):
    response = _client(world.alpha.users["owner"]).post(
        f"{MEMBERS}add/", {"email": "not-an-email", "role": "member"}
    )

    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors
    assert Membership.objects.filter(organization=world.alpha.org).count() == 4


def test_admin_changes_a_role_and_the_audit_trail_has_before_and_after(world):
    viewer = _membership(world, "viewer")
    try:
        response = _client(world.alpha.users["admin"]).post(
            f"{MEMBERS}{viewer.pk}/change/", {"role": "member"}
        )
        assert response.status_code == 302
        viewer.refresh_from_db()
        assert viewer.role == "member"
        event = _audit("member.role_changed")[0]
        assert event.details == {"from": "viewer", "to": "member"}
        assert event.actor == "user:alpha-admin"
    finally:
        Membership.objects.filter(pk=viewer.pk).update(role="viewer")


def test_an_admin_cannot_change_an_owner(world):
    owner = _membership(world, "owner")

    response = _client(world.alpha.users["admin"]).post(
        f"{MEMBERS}{owner.pk}/change/", {"role": "viewer"}
    )

    assert response.status_code == 200
    assert "owner" in str(response.context["adminform"].form.errors["role"])
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_the_last_owner_cannot_be_removed(world):
    owner = _membership(world, "owner")

    response = _client(world.alpha.users["owner"]).post(
        f"{MEMBERS}{owner.pk}/delete/", {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert any("at least one owner" in str(m) for m in response.context["messages"])
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_admin_removes_a_member(world):
    from tenants.services import membership_add

    membership, _ = membership_add(
        org=world.alpha.org, email="leaving@alpha.test", role="viewer", actor_role="owner"
    )

    response = _client(world.alpha.users["admin"]).post(
        f"{MEMBERS}{membership.pk}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert _audit("member.removed")[0].target == "leaving@alpha.test"


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_read_the_member_list_but_cannot_change_it(world, role):
    client = _client(world.alpha.users[role])
    viewer = _membership(world, "viewer")

    assert client.get(MEMBERS).status_code == 200
    assert (
        client.post(f"{MEMBERS}add/", {"email": "x@alpha.test", "role": "viewer"}).status_code
        == 403
    )
    assert client.post(f"{MEMBERS}{viewer.pk}/change/", {"role": "admin"}).status_code == 403
    assert client.post(f"{MEMBERS}{viewer.pk}/delete/", {"post": "yes"}).status_code == 403
    viewer.refresh_from_db()
    assert viewer.role == "viewer"
    assert not Membership.objects.filter(user__email="x@alpha.test").exists()


def test_another_organizations_owner_cannot_reach_members_or_keys(world):
    client = _client(world.bravo.users["owner"])
    viewer = _membership(world, "viewer")

    assert client.get(MEMBERS).status_code == 404
    assert (
        client.post(f"{MEMBERS}add/", {"email": "y@alpha.test", "role": "owner"}).status_code == 404
    )
    assert client.post(f"{MEMBERS}{viewer.pk}/delete/", {"post": "yes"}).status_code == 404
    assert client.post(f"{KEYS}add/", {"name": "steal", "role": "owner"}).status_code == 404
    assert Membership.objects.filter(pk=viewer.pk).exists()
    assert not ApiKey.objects.filter(name="steal").exists()


def test_an_admin_cannot_open_another_organizations_rows_through_its_own_admin(world):
    bravo_viewer = Membership.objects.get(user=world.bravo.users["viewer"])
    bravo_key = ApiKey.objects.get(pk=world.bravo.key_ids["viewer"])
    client = _client(world.alpha.users["owner"])

    member_page = client.post(f"{MEMBERS}{bravo_viewer.pk}/change/", {"role": "owner"})
    key_page = client.get(f"{KEYS}{bravo_key.pk}/change/")
    revoke = client.post(KEYS, {"action": "revoke_selected", "_selected_action": [bravo_key.pk]})

    # Django's admin answers a row outside the queryset with a redirect to its index.
    assert member_page.status_code == key_page.status_code == 302
    assert revoke.status_code in (200, 302)
    bravo_viewer.refresh_from_db()
    bravo_key.refresh_from_db()
    assert bravo_viewer.role == "viewer"
    assert bravo_key.revoked_at is None


def test_admin_creates_a_key_and_sees_its_secret_on_that_page_only(world, api):
    client = _client(world.alpha.users["admin"])
    expires = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")

    response = client.post(
        f"{KEYS}add/",
        {
            "name": "ci",
            "role": "member",
            "expires_at_0": expires[:10],
            "expires_at_1": expires[11:],
        },
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = re.search(rb'id="api-key-secret">(ck_[^<]+)<', response.content)[1].decode()
    key = ApiKey.objects.get(organization=world.alpha.org, name="ci")
    assert key.role == "member" and key.expires_at is not None
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/orgs/alpha/").status_code == 200
    assert secret.encode() not in client.get(f"{KEYS}{key.pk}/change/").content
    assert secret.encode() not in client.get(KEYS).content
    assert _audit("api_key.created")[0].target == key.prefix


def test_a_key_above_the_creators_role_or_expired_is_refused_beside_its_field(world):
    client = _client(world.alpha.users["admin"])
    before = ApiKey.objects.filter(organization=world.alpha.org).count()

    too_high = client.post(f"{KEYS}add/", {"name": "root", "role": "owner"})
    past = client.post(
        f"{KEYS}add/",
        {"name": "old", "role": "viewer", "expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"},
    )

    assert too_high.status_code == past.status_code == 200
    assert "higher role" in str(too_high.context["adminform"].form.errors["role"])
    assert "future" in str(past.context["adminform"].form.errors["expires_at"])
    assert ApiKey.objects.filter(organization=world.alpha.org).count() == before


def test_admin_revokes_a_key_and_it_stops_working(world, api):
    from tenants.services import api_key_create

    key, secret = api_key_create(
        org=world.alpha.org, name="to-revoke", role="viewer", creator_role="owner"
    )

    response = _client(world.alpha.users["admin"]).post(
        KEYS, {"action": "revoke_selected", "_selected_action": [key.pk]}
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/orgs/alpha/").status_code == 401


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_see_or_revoke_keys(world, role):
    client = _client(world.alpha.users[role])
    key = ApiKey.objects.get(pk=world.alpha.key_ids["viewer"])

    assert client.get(KEYS).status_code == 403
    assert client.get(f"{KEYS}add/").status_code == 403
    assert (
        client.post(KEYS, {"action": "revoke_selected", "_selected_action": [key.pk]}).status_code
        == 403
    )
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_autocomplete_endpoint_answers_outsiders_like_an_unknown_organization(world):
    query = "?app_label=orchestrators&model_name=orchestratorinstance&field_name=llm_config&term=a"
    path = f"/orgs/alpha/admin/autocomplete/{query}"

    assert _client(world.bravo.users["owner"]).get(path).status_code == 404
    assert _client(world.outsider).get(path).status_code == 404
    # A member of the organization gets Django's refusal for a field that is not autocompleted.
    assert _client(world.alpha.users["owner"]).get(path).status_code == 403
