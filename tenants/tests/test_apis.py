from __future__ import annotations

import pytest

from tenants.models import ApiKey, Membership, Organization

pytestmark = pytest.mark.django_db


def test_me_lists_memberships_for_a_session_user(world, as_user):
    response = as_user(world.alpha.users["admin"]).get("/api/v1/me")

    assert response.status_code == 200
    assert response.json()["user"]["username"] == "alpha-admin"
    assert response.json()["memberships"] == [
        {"org": "alpha", "name": "Alpha", "role": "admin", "status": "active"}
    ]


def test_me_with_an_api_key_names_its_organization_and_role(world, as_key):
    response = as_key(world.bravo.keys["member"]).get("/api/v1/me")

    assert response.status_code == 200
    assert response.json()["memberships"] == [{"org": "bravo", "role": "member"}]
    assert "key" not in response.json()["api_key"]


def test_org_list_shows_only_my_organizations(world, as_user):
    response = as_user(world.alpha.users["viewer"]).get("/api/v1/orgs/")

    assert response.status_code == 200
    assert [(o["slug"], o["role"]) for o in response.json()["results"]] == [("alpha", "viewer")]


def test_org_create_is_staff_only(world, as_user):
    response = as_user(world.alpha.users["owner"]).post(
        "/api/v1/orgs/", {"name": "X", "slug": "xray", "owner_email": "o@x.test"}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "staff_required"
    assert not Organization.objects.filter(slug="xray").exists()


def test_staff_creates_an_organization_whose_key_reads_it_and_not_others(world, as_user, api):
    response = as_user(world.staff).post(
        "/api/v1/orgs/",
        {"name": "Charlie", "slug": "charlie", "owner_email": "o@charlie.test"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["slug"] == "charlie" and body["owner"]["username"] == "o@charlie.test"
    assert body["api_key"].startswith("ck_")

    api.logout()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {body['api_key']}")
    assert api.get("/api/v1/orgs/charlie/").json()["slug"] == "charlie"
    assert api.get("/api/v1/orgs/alpha/").status_code == 404
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.alpha.keys['viewer']}")
    assert api.get("/api/v1/orgs/charlie/").status_code == 404


def test_org_create_rejects_a_taken_or_reserved_slug(world, as_user):
    client = as_user(world.staff)

    taken = client.post(
        "/api/v1/orgs/", {"name": "A", "slug": "alpha", "owner_email": "o@a.test"}, format="json"
    )
    reserved = client.post(
        "/api/v1/orgs/", {"name": "A", "slug": "admin", "owner_email": "o@a.test"}, format="json"
    )
    invalid = client.post(
        "/api/v1/orgs/",
        {"name": "A", "slug": "Bad Slug!", "owner_email": "o@a.test"},
        format="json",
    )

    assert (taken.status_code, taken.json()["error"]["code"]) == (400, "slug_taken")
    assert (reserved.status_code, reserved.json()["error"]["code"]) == (400, "invalid_slug")
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (400, "invalid_slug")


def test_org_detail_and_patch_by_admin(world, as_key):
    client = as_key(world.alpha.keys["admin"])

    assert client.get("/api/v1/orgs/alpha/").json()["role"] == "admin"
    response = client.patch("/api/v1/orgs/alpha/", {"name": "Alpha Renamed"}, format="json")

    assert response.status_code == 200
    assert Organization.objects.get(slug="alpha").name == "Alpha Renamed"
    client.patch("/api/v1/orgs/alpha/", {"name": "Alpha"}, format="json")


def test_member_add_update_remove(world, as_key):
    client = as_key(world.alpha.keys["admin"])

    added = client.post(
        "/api/v1/orgs/alpha/members/", {"email": "new@alpha.test", "role": "member"}, format="json"
    )
    assert added.status_code == 201
    member_id = added.json()["id"]
    assert added.json()["initial_password"]

    changed = client.patch(
        f"/api/v1/orgs/alpha/members/{member_id}/", {"role": "viewer"}, format="json"
    )
    assert changed.json()["role"] == "viewer"

    removed = client.delete(f"/api/v1/orgs/alpha/members/{member_id}/")
    assert removed.status_code == 204
    assert not Membership.objects.filter(pk=member_id).exists()


def test_admin_cannot_grant_or_touch_owner(world, as_key):
    client = as_key(world.alpha.keys["admin"])
    owner_membership = Membership.objects.get(organization__slug="alpha", role="owner")

    grant = client.post(
        "/api/v1/orgs/alpha/members/", {"email": "x@alpha.test", "role": "owner"}, format="json"
    )
    demote = client.patch(
        f"/api/v1/orgs/alpha/members/{owner_membership.id}/", {"role": "viewer"}, format="json"
    )

    assert (grant.status_code, grant.json()["error"]["code"]) == (403, "owner_required")
    assert (demote.status_code, demote.json()["error"]["code"]) == (403, "owner_required")
    assert Membership.objects.get(pk=owner_membership.id).role == "owner"


def test_last_owner_cannot_be_removed(world, as_key):
    owner_membership = Membership.objects.get(organization__slug="alpha", role="owner")

    response = as_key(world.alpha.keys["owner"]).delete(
        f"/api/v1/orgs/alpha/members/{owner_membership.id}/"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (400, "last_owner")


def test_api_key_created_once_listed_without_secret_and_revoked(world, as_key):
    client = as_key(world.alpha.keys["admin"])

    created = client.post(
        "/api/v1/orgs/alpha/api-keys/", {"name": "ci", "role": "member"}, format="json"
    )
    assert created.status_code == 201
    secret, key_id = created.json()["key"], created.json()["id"]
    assert secret.startswith("ck_") and len(secret) > 40

    listed = client.get("/api/v1/orgs/alpha/api-keys/").json()["results"]
    assert all("key" not in item and "secret_hash" not in item for item in listed)
    assert key_id in [item["id"] for item in listed]
    assert ApiKey.objects.get(pk=key_id).secret_hash != secret

    revoked = client.delete(f"/api/v1/orgs/alpha/api-keys/{key_id}/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    after = client.get("/api/v1/orgs/alpha/")
    assert (after.status_code, after.json()["error"]["code"]) == (401, "api_key_revoked")


def test_api_key_role_cannot_exceed_its_creator(world, as_key):
    response = as_key(world.alpha.keys["admin"]).post(
        "/api/v1/orgs/alpha/api-keys/", {"name": "x", "role": "owner"}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (403, "role_too_high")


def test_ws_ticket_issued_to_any_member(world, as_key):
    response = as_key(world.alpha.keys["viewer"]).post("/api/v1/orgs/alpha/ws-tickets/")

    assert response.status_code == 201
    assert response.json()["expires_in"] == 30
    assert len(response.json()["ticket"]) >= 40


# --- outsiders: another organization's key, a non-member, a lower role -----------------------

WRITE_ENDPOINTS = [
    ("patch", "/api/v1/orgs/alpha/", {"name": "Hacked"}),
    ("post", "/api/v1/orgs/alpha/members/", {"email": "intruder@x.test", "role": "viewer"}),
    ("post", "/api/v1/orgs/alpha/api-keys/", {"name": "intruder", "role": "viewer"}),
]
READ_ENDPOINTS = [
    "/api/v1/orgs/alpha/",
    "/api/v1/orgs/alpha/members/",
    "/api/v1/orgs/alpha/api-keys/",
]


def _snapshot():
    org = Organization.objects.get(slug="alpha")
    return (
        org.name,
        Membership.objects.filter(organization=org).count(),
        ApiKey.objects.filter(organization=org).count(),
    )


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ENDPOINTS)
def test_writes_refused_to_outsiders_and_lower_roles(world, api, method, path, body):
    before = _snapshot()

    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
    foreign_key = getattr(api, method)(path, body, format="json")
    api.credentials()
    api.force_login(world.outsider)
    non_member = getattr(api, method)(path, body, format="json")
    api.force_login(world.alpha.users["member"])
    lower_role = getattr(api, method)(path, body, format="json")

    assert foreign_key.status_code == 404
    assert non_member.status_code == 404
    assert (lower_role.status_code, lower_role.json()["error"]["code"]) == (403, "role_required")
    assert _snapshot() == before


def test_member_and_key_detail_writes_refused_to_outsiders(world, api):
    target = Membership.objects.get(organization__slug="alpha", user__username="alpha-viewer")
    key_id = world.alpha.key_ids["viewer"]
    attempts = [
        ("patch", f"/api/v1/orgs/alpha/members/{target.id}/", {"role": "admin"}),
        ("delete", f"/api/v1/orgs/alpha/members/{target.id}/", None),
        ("delete", f"/api/v1/orgs/alpha/api-keys/{key_id}/", None),
    ]
    for method, path, body in attempts:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
        assert getattr(api, method)(path, body, format="json").status_code == 404
        api.credentials()
        api.force_login(world.outsider)
        assert getattr(api, method)(path, body, format="json").status_code == 404
        api.force_login(world.alpha.users["member"])
        assert getattr(api, method)(path, body, format="json").status_code == 403
        api.logout()

    target.refresh_from_db()
    assert target.role == "viewer"
    assert ApiKey.objects.get(pk=key_id).revoked_at is None


def test_bravo_ids_are_not_reachable_through_alpha(world, as_key):
    bravo_member = Membership.objects.get(organization__slug="bravo", user__username="bravo-viewer")

    response = as_key(world.alpha.keys["owner"]).delete(
        f"/api/v1/orgs/alpha/members/{bravo_member.id}/"
    )

    assert response.status_code == 404
    assert Membership.objects.filter(pk=bravo_member.id).exists()


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_reads_refused_to_another_organizations_key_and_non_members(world, api, path):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
    assert api.get(path).status_code == 404
    api.credentials()
    api.force_login(world.outsider)
    assert api.get(path).status_code == 404


def test_api_keys_list_needs_admin(world, as_key):
    response = as_key(world.alpha.keys["member"]).get("/api/v1/orgs/alpha/api-keys/")

    assert (response.status_code, response.json()["error"]["code"]) == (403, "role_required")


def test_ws_ticket_refused_to_outsiders(world, api):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
    assert api.post("/api/v1/orgs/alpha/ws-tickets/").status_code == 404
    api.credentials()
    api.force_login(world.outsider)
    assert api.post("/api/v1/orgs/alpha/ws-tickets/").status_code == 404


def test_unknown_and_foreign_organizations_look_the_same(world, as_key):
    client = as_key(world.bravo.keys["owner"])

    unknown = client.get("/api/v1/orgs/does-not-exist/")
    foreign = client.get("/api/v1/orgs/alpha/")

    assert unknown.status_code == foreign.status_code == 404
    assert unknown.json() == foreign.json()


def test_suspended_organization_answers_403_to_its_members_only(world, as_key, api):
    from tenants.services import organization_resume, organization_suspend

    org = Organization.objects.get(slug="alpha")
    organization_suspend(org=org)
    try:
        member = as_key(world.alpha.keys["owner"]).get("/api/v1/orgs/alpha/")
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
        outsider = api.get("/api/v1/orgs/alpha/")
    finally:
        organization_resume(org=org)

    assert (member.status_code, member.json()["error"]["code"]) == (403, "org_suspended")
    assert outsider.status_code == 404


def test_hostname_names_the_organization(world, as_key):
    client = as_key(world.alpha.keys["viewer"])

    by_host = client.get("/api/v1/", HTTP_HOST="alpha.localhost")
    mismatch = client.get("/api/v1/orgs/bravo/", HTTP_HOST="alpha.localhost")

    assert by_host.status_code == 200 and by_host.json()["slug"] == "alpha"
    assert mismatch.status_code == 404


def test_a_revoked_key_stops_working_at_once_even_when_cached(
    world, as_key, django_capture_on_commit_callbacks
):
    admin = as_key(world.alpha.keys["admin"])
    created = admin.post(
        "/api/v1/orgs/alpha/api-keys/", {"name": "short-lived", "role": "viewer"}, format="json"
    ).json()
    from rest_framework.test import APIClient

    user = APIClient()
    user.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert user.get("/api/v1/orgs/alpha/").status_code == 200  # now cached

    with django_capture_on_commit_callbacks(execute=True):
        admin.delete(f"/api/v1/orgs/alpha/api-keys/{created['id']}/")
    after = user.get("/api/v1/orgs/alpha/")

    assert (after.status_code, after.json()["error"]["code"]) == (401, "api_key_revoked")
