"""Effective rights: a key never does more than whoever vouches for it may do right now."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants.models import ApiKey, Membership
from tenants.services import api_key_create

pytestmark = pytest.mark.django_db


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def temp_admin(world):
    """An admin of alpha (rolled back with the test) and an admin-role key they created."""
    user = get_user_model().objects.create_user(username="alpha-temp-admin", email="t@alpha.test")
    membership = Membership.objects.create(user=user, organization=world.alpha.org, role="admin")
    key, secret = api_key_create(
        org=world.alpha.org,
        name="temp admin key",
        role="admin",
        creator_role="admin",
        created_by=user,
    )
    return membership, key, secret


def test_a_key_loses_the_rights_its_creator_loses(world, temp_admin):
    membership, _, secret = temp_admin
    assert _client(secret).get("/api/v1/orgs/alpha/api-keys/").status_code == 200

    Membership.objects.filter(pk=membership.pk).update(role="viewer")
    members = _client(secret).get("/api/v1/orgs/alpha/api-keys/")
    minted = _client(secret).post(
        "/api/v1/orgs/alpha/api-keys/", {"name": "x", "role": "viewer"}, format="json"
    )
    me = _client(secret).get("/api/v1/me").json()

    assert (members.status_code, members.json()["error"]["code"]) == (403, "role_required")
    assert minted.status_code == 403
    assert me["memberships"] == [{"org": "alpha", "role": "viewer"}]
    assert me["api_key"]["role"] == "admin" and me["api_key"]["effective_role"] == "viewer"
    assert ApiKey.objects.filter(name="x").count() == 0


def test_a_key_stops_when_its_creator_leaves(world, temp_admin):
    membership, _, secret = temp_admin
    Membership.objects.filter(pk=membership.pk).delete()

    response = _client(secret).get("/api/v1/orgs/alpha/")

    assert (response.status_code, response.json()["error"]["code"]) == (
        401,
        "api_key_creator_gone",
    )


def test_a_key_stops_when_its_creator_is_deactivated(world, temp_admin):
    membership, _, secret = temp_admin
    get_user_model().objects.filter(pk=membership.user_id).update(is_active=False)

    assert _client(secret).get("/api/v1/orgs/alpha/").status_code == 401


def test_a_key_minted_by_a_key_records_it_and_follows_it(world, temp_admin):
    membership, parent, secret = temp_admin
    created = _client(secret).post(
        "/api/v1/orgs/alpha/api-keys/", {"name": "child", "role": "admin"}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["created_by_key"] == str(parent.pk)
    assert created.json()["created_by"] is None
    child = created.json()["key"]
    assert _client(child).get("/api/v1/orgs/alpha/api-keys/").status_code == 200

    # The parent's creator is demoted: the child is capped through the chain.
    Membership.objects.filter(pk=membership.pk).update(role="member")
    assert _client(child).get("/api/v1/orgs/alpha/api-keys/").status_code == 403
    assert _client(child).get("/api/v1/me").json()["memberships"][0]["role"] == "member"

    # The parent is revoked: the child stops.
    ApiKey.objects.filter(pk=parent.pk).update(revoked_at="2020-01-01T00:00:00Z")
    response = _client(child).get("/api/v1/orgs/alpha/")
    assert (response.status_code, response.json()["error"]["code"]) == (
        401,
        "api_key_creator_gone",
    )


def test_a_key_with_no_creator_works_for_no_one(world):
    key, secret = api_key_create(
        org=world.alpha.org, name="orphan", role="member", creator_role="owner", created_by=None
    )

    assert _client(secret).get("/api/v1/orgs/alpha/").status_code == 401


def test_listing_shows_each_keys_effective_role(world, temp_admin):
    membership, key, _ = temp_admin
    Membership.objects.filter(pk=membership.pk).update(role="member")

    listed = _client(world.alpha.keys["owner"]).get("/api/v1/orgs/alpha/api-keys/").json()
    rows = {row["id"]: row for row in listed["results"]}

    assert (rows[str(key.pk)]["role"], rows[str(key.pk)]["effective_role"]) == ("admin", "member")
    assert rows[world.alpha.key_ids["viewer"]]["effective_role"] == "viewer"


def test_admins_cannot_revoke_owner_keys(world, as_key):
    owner_key_id = world.alpha.key_ids["owner"]

    response = as_key(world.alpha.keys["admin"]).delete(
        f"/api/v1/orgs/alpha/api-keys/{owner_key_id}/"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (403, "owner_required")
    assert ApiKey.objects.get(pk=owner_key_id).revoked_at is None


def test_owners_revoke_owner_keys(world):
    key, secret = api_key_create(
        org=world.alpha.org,
        name="second owner key",
        role="owner",
        creator_role="owner",
        created_by=world.alpha.users["owner"],
    )

    response = _client(world.alpha.keys["owner"]).delete(f"/api/v1/orgs/alpha/api-keys/{key.pk}/")

    assert response.status_code == 200 and response.json()["revoked_at"]


def test_member_detail_warns_which_keys_stop_and_an_owner_reassigns_them(
    world, temp_admin, django_capture_on_commit_callbacks
):
    membership, key, secret = temp_admin
    child = (
        _client(secret)
        .post(
            "/api/v1/orgs/alpha/api-keys/", {"name": "grandchild", "role": "member"}, format="json"
        )
        .json()
    )
    owner = _client(world.alpha.keys["owner"])

    detail = owner.get(f"/api/v1/orgs/alpha/members/{membership.pk}/").json()
    assert {k["id"] for k in detail["api_keys_stopping_on_removal"]} == {str(key.pk), child["id"]}

    target = Membership.objects.get(user=world.alpha.users["admin"], organization=world.alpha.org)
    with django_capture_on_commit_callbacks(execute=True):
        moved = owner.post(
            f"/api/v1/orgs/alpha/members/{membership.pk}/reassign-keys/",
            {"member_id": str(target.pk)},
            format="json",
        )
    assert moved.status_code == 200
    assert [row["id"] for row in moved.json()["results"]] == [str(key.pk)]
    assert moved.json()["results"][0]["created_by"] == "alpha-admin"

    assert owner.delete(f"/api/v1/orgs/alpha/members/{membership.pk}/").status_code == 204
    assert _client(secret).get("/api/v1/orgs/alpha/api-keys/").status_code == 200
    assert _client(child["key"]).get("/api/v1/orgs/alpha/").status_code == 200


def test_one_key_is_reassigned_after_its_creator_left(
    world, temp_admin, django_capture_on_commit_callbacks
):
    membership, key, secret = temp_admin
    Membership.objects.filter(pk=membership.pk).delete()
    assert _client(secret).get("/api/v1/orgs/alpha/").status_code == 401
    target = Membership.objects.get(user=world.alpha.users["member"], organization=world.alpha.org)

    with django_capture_on_commit_callbacks(execute=True):
        moved = _client(world.alpha.keys["owner"]).post(
            f"/api/v1/orgs/alpha/api-keys/{key.pk}/reassign/",
            {"member_id": str(target.pk)},
            format="json",
        )

    assert moved.status_code == 200
    assert (moved.json()["role"], moved.json()["effective_role"]) == ("admin", "member")
    assert _client(secret).get("/api/v1/orgs/alpha/").status_code == 200


@pytest.mark.parametrize("who", ["admin_key", "bravo_owner", "outsider"])
def test_reassign_refused_to_non_owners_and_outsiders(world, temp_admin, who, api):
    _, key, _ = temp_admin
    target = Membership.objects.get(user=world.alpha.users["member"], organization=world.alpha.org)
    if who == "admin_key":
        client, status = _client(world.alpha.keys["admin"]), 403
    elif who == "bravo_owner":
        client, status = _client(world.bravo.keys["owner"]), 404
    else:
        api.force_login(world.outsider)
        client, status = api, 404

    for path in (
        f"/api/v1/orgs/alpha/api-keys/{key.pk}/reassign/",
        f"/api/v1/orgs/alpha/members/{target.pk}/reassign-keys/",
    ):
        response = client.post(path, {"member_id": str(target.pk)}, format="json")
        assert response.status_code == status

    key.refresh_from_db()
    assert key.created_by.username == "alpha-temp-admin"


def test_openai_surface_uses_the_effective_role(world, temp_admin):
    from chat.openai.access import _caller_for_secret

    membership, _, _ = temp_admin
    key, secret = api_key_create(
        org=world.alpha.org,
        name="chat key",
        role="member",
        creator_role="admin",
        created_by=membership.user,
    )
    assert _caller_for_secret(secret=secret).role == "member"

    Membership.objects.filter(pk=membership.pk).update(role="viewer")
    assert _caller_for_secret(secret=secret).role == "viewer"
