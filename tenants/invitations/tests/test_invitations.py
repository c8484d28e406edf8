"""Invitations: sent by email through Django's backend, accepted once, refused every other way."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_tenants.utils import schema_context

from tenants.audit.models import AuditEvent
from tenants.invitations.models import Invitation
from tenants.models import Membership
from tenants.teams.models import Team, TeamMembership

pytestmark = pytest.mark.django_db
User = get_user_model()

INVITES = "/api/v1/orgs/alpha/invitations/"
ACCEPT = "/api/v1/invitations/accept/"
PASSWORD = "a-long-enough-passphrase-42"


def _token(mail) -> str:
    return re.search(r"token=(inv_[A-Za-z0-9_-]+)", mail.body).group(1)


def _invite(client, **body):
    return client.post(INVITES, {"email": "newcomer@example.test", **body}, format="json")


def _members() -> list[tuple[str, str]]:
    return sorted(
        Membership.objects.filter(organization__slug="alpha").values_list("user__email", "role")
    )


def test_an_admin_invites_and_the_newcomer_creates_an_account_once(
    world, as_key, api, mailoutbox, django_capture_on_commit_callbacks
):
    before = _members()
    with django_capture_on_commit_callbacks(execute=True):
        created = _invite(as_key(world.alpha.keys["admin"]), role="viewer")
    token = _token(mailoutbox[0])
    api.credentials()

    accepted = api.post(
        ACCEPT, {"token": token, "username": "newcomer", "password": PASSWORD}, format="json"
    )
    again = api.post(
        ACCEPT, {"token": token, "username": "newcomer2", "password": PASSWORD}, format="json"
    )

    assert created.status_code == 201
    assert created.json()["status"] == "pending"
    assert mailoutbox[0].to == ["newcomer@example.test"]
    assert "Alpha" in mailoutbox[0].subject
    assert token not in str(created.json())
    assert accepted.status_code == 200, accepted.json()
    assert accepted.json() == {
        "org": "alpha",
        "role": "viewer",
        "team": None,
        "username": "newcomer",
    }
    assert User.objects.get(username="newcomer").check_password(PASSWORD)
    assert _members() == sorted([*before, ("newcomer@example.test", "viewer")])
    assert (again.status_code, again.json()["error"]["code"]) == (404, "invitation_invalid")
    assert not User.objects.filter(username="newcomer2").exists()
    stored = Invitation.objects.get()
    assert stored.status == "accepted"
    assert token not in stored.token_hash
    with schema_context("org_alpha"):
        actions = set(
            AuditEvent.objects.filter(action__startswith="invitation.").values_list(
                "action", flat=True
            )
        )
    assert actions == {"invitation.created", "invitation.accepted"}


def test_an_expired_a_revoked_and_a_resent_link_are_refused(
    world, as_key, api, mailoutbox, django_capture_on_commit_callbacks
):
    client = as_key(world.alpha.keys["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        invitation_id = _invite(client).json()["id"]
    first = _token(mailoutbox[0])
    with django_capture_on_commit_callbacks(execute=True):
        resent = client.post(f"{INVITES}{invitation_id}/resend/")
    second = _token(mailoutbox[1])
    body = {"username": "late", "password": PASSWORD}
    api.credentials()

    old_link = api.post(ACCEPT, {"token": first, **body}, format="json")
    Invitation.objects.filter(id=invitation_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired = api.post(ACCEPT, {"token": second, **body}, format="json")
    Invitation.objects.filter(id=invitation_id).update(
        expires_at=timezone.now() + timedelta(hours=1)
    )
    revoked = as_key(world.alpha.keys["admin"]).delete(f"{INVITES}{invitation_id}/")
    api.credentials()
    after_revoke = api.post(ACCEPT, {"token": second, **body}, format="json")

    assert resent.json()["send_count"] == 2
    assert first != second
    assert (old_link.status_code, expired.status_code, after_revoke.status_code) == (
        404,
        404,
        404,
    ), (old_link.json(), expired.json(), after_revoke.json())
    assert revoked.json()["status"] == "revoked"
    assert not User.objects.filter(username="late").exists()


def test_an_existing_account_must_sign_in_and_match_the_address(
    world, as_key, as_user, api, mailoutbox, django_capture_on_commit_callbacks
):
    # bravo's member has an account; alpha invites that address.
    invitee = world.bravo.users["member"]
    with django_capture_on_commit_callbacks(execute=True):
        _invite(as_key(world.alpha.keys["admin"]), email=invitee.email)
    token = _token(mailoutbox[0])
    api.credentials()

    anonymous = api.post(
        ACCEPT, {"token": token, "username": "x", "password": PASSWORD}, format="json"
    )
    wrong_user = as_user(world.bravo.users["viewer"]).post(ACCEPT, {"token": token}, format="json")
    with_key = as_key(world.bravo.keys["member"]).post(ACCEPT, {"token": token}, format="json")
    api.credentials()
    api.logout()
    right_user = as_user(invitee).post(ACCEPT, {"token": token}, format="json")

    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (409, "sign_in_required")
    assert (wrong_user.status_code, wrong_user.json()["error"]["code"]) == (
        403,
        "invitation_email_mismatch",
    )
    assert with_key.status_code == 403
    assert right_user.status_code == 200
    assert Membership.objects.get(organization__slug="alpha", user=invitee).role == "member"


def test_an_invitation_from_someone_demoted_since_grants_nothing(
    world, as_user, api, mailoutbox, django_capture_on_commit_callbacks
):
    from tenants.services import membership_add

    inviter, _ = membership_add(
        org=world.alpha.org, email="inviter@alpha.test", role="admin", actor_role="owner"
    )
    with django_capture_on_commit_callbacks(execute=True):
        _invite(as_user(inviter.user), role="member")
    token = _token(mailoutbox[0])
    Membership.objects.filter(pk=inviter.pk).update(role="viewer")
    api.logout()

    refused = api.post(
        ACCEPT, {"token": token, "username": "via-demoted", "password": PASSWORD}, format="json"
    )

    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "invitation_withdrawn")
    assert not User.objects.filter(username="via-demoted").exists()
    assert Invitation.objects.get().status == "pending"


def test_roles_limit_what_may_be_invited(world, as_key):
    admin = as_key(world.alpha.keys["admin"])
    owner_by_admin = _invite(admin, role="owner")
    member = as_key(world.alpha.keys["member"])
    by_member = _invite(member)
    listed_by_member = member.get(INVITES)
    duplicate_first = _invite(as_key(world.alpha.keys["owner"]))
    duplicate = _invite(as_key(world.alpha.keys["owner"]))
    existing = _invite(as_key(world.alpha.keys["owner"]), email="member@alpha.test")

    assert (owner_by_admin.status_code, owner_by_admin.json()["error"]["code"]) == (
        403,
        "invite_not_allowed",
    )
    assert (by_member.status_code, by_member.json()["error"]["code"]) == (403, "invite_not_allowed")
    assert listed_by_member.status_code == 200
    assert duplicate_first.status_code == 201
    assert (duplicate.status_code, duplicate.json()["error"]["code"]) == (400, "invitation_pending")
    assert (existing.status_code, existing.json()["error"]["code"]) == (400, "already_member")
    assert Invitation.objects.count() == 1


def test_a_team_maintainer_invites_into_their_team(
    world, as_user, as_key, api, mailoutbox, django_capture_on_commit_callbacks
):
    with schema_context("org_alpha"):
        team = Team.objects.create(slug="support", name="Support")
        other = Team.objects.create(slug="sales", name="Sales")
        TeamMembership.objects.create(
            team=team, user_id=world.alpha.users["member"].pk, role="maintainer"
        )
    maintainer = as_user(world.alpha.users["member"])

    as_admin = maintainer.post(
        INVITES, {"email": "x@example.test", "role": "admin", "team": str(team.id)}, format="json"
    )
    other_team = maintainer.post(
        INVITES, {"email": "x@example.test", "team": str(other.id)}, format="json"
    )
    with django_capture_on_commit_callbacks(execute=True):
        ok = maintainer.post(
            INVITES, {"email": "x@example.test", "team": str(team.id)}, format="json"
        )
    api.logout()
    accepted = api.post(
        ACCEPT,
        {"token": _token(mailoutbox[0]), "username": "x", "password": PASSWORD},
        format="json",
    )

    assert as_admin.status_code == other_team.status_code == 403
    assert ok.status_code == 201
    assert accepted.json()["team"] == str(team.id)
    user = User.objects.get(username="x")
    assert Membership.objects.get(organization__slug="alpha", user=user).role == "member"
    with schema_context("org_alpha"):
        assert list(
            TeamMembership.objects.filter(user_id=user.pk).values_list("team__slug", "role")
        ) == [("support", "member")]


def test_outsiders_cannot_list_create_resend_or_revoke(world, api, as_key):
    invitation_id = _invite(as_key(world.alpha.keys["owner"])).json()["id"]
    attempts = [
        ("get", INVITES, None),
        ("post", INVITES, {"email": "intruder@example.test"}),
        ("post", f"{INVITES}{invitation_id}/resend/", None),
        ("delete", f"{INVITES}{invitation_id}/", None),
    ]
    for method, path, body in attempts:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {world.bravo.keys['owner']}")
        foreign = getattr(api, method)(path, body, format="json")
        api.credentials()
        api.force_login(world.outsider)
        stranger = getattr(api, method)(path, body, format="json")
        api.logout()
        assert (foreign.status_code, stranger.status_code) == (404, 404), (method, path)
    bravo_view = as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/bravo/invitations/")
    assert bravo_view.json()["results"] == []
    stored = Invitation.objects.get()
    assert (stored.status, stored.send_count) == ("pending", 1)


def test_bad_tokens_and_input_are_4xx(world, api):
    api.credentials()
    for body in (
        {"token": "inv_" + "x" * 40},
        {"token": "not-a-token"},
        {"token": "inv_\u0000"},
        {"token": "inv_a", "extra": 1},
        {},
    ):
        response = api.post(ACCEPT, body, format="json")
        assert 400 <= response.status_code < 500, body
    assert api.get(f"{INVITES}?status=weird").status_code in (401, 403, 404)


def test_the_accept_page_creates_the_account_and_shows_errors_beside_fields(
    world, as_key, client, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(as_key(world.alpha.keys["admin"]))
    token = _token(mailoutbox[0])

    shown = client.get(f"/invitations/?token={token}")
    weak = client.post("/invitations/", {"token": token, "username": "pagey", "password": "123"})
    done = client.post("/invitations/", {"token": token, "username": "pagey", "password": PASSWORD})
    used = client.get(f"/invitations/?token={token}")

    assert shown.status_code == 200
    assert b"Alpha" in shown.content
    assert weak.status_code == 400
    assert b"too short" in weak.content or b"too common" in weak.content
    assert done.status_code == 302
    assert User.objects.filter(username="pagey").exists()
    assert used.status_code == 404
