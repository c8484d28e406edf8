"""Signing in through an organization's OpenID Connect provider, against a real provider process:
the happy path, the second sign-in, and every way a sign-in must be refused (with no session)."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from tenants.audit.models import AuditEvent
from tenants.models import Membership
from tenants.roles import Role
from tenants.sso.models import SsoIdentity, SsoLoginState
from tenants.sso.services import sso_provider_set
from tenants.sso.tests.conftest import DEFAULT_USER, callback_url, sign_in
from tenants.teams.models import Team, TeamMembership

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def sso(world, provider):
    """Alpha signs in through the test provider: `eng-leads` are admins in the platform team,
    `everyone` members, anyone else a viewer."""
    org = world.alpha.org
    with schema_context(org.schema_name):
        platform = Team.objects.create(slug="platform", name="Platform")
        support = Team.objects.create(slug="support", name="Support")
    sso_provider_set(
        org=org,
        actor=world.alpha.users["owner"],
        actor_role=Role.OWNER,
        issuer=provider.url,
        client_id="cadence-test",
        client_secret="test-secret-0123456789",
        scopes="openid email profile groups",
        allowed_domains=["alpha-corp.test"],
        claim="groups",
        mapping={
            "eng-leads": {"role": "admin", "team": "platform"},
            "everyone": {"role": "member"},
            "helpdesk": {"role": "member", "team": str(support.id)},
        },
        default_role="viewer",
    )
    return {"org": org, "platform": platform, "support": support, "provider": provider}


def _session_user(client) -> int | None:
    value = client.session.get("_auth_user_id")
    return int(value) if value is not None else None


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content[:600]
    assert code.encode() in response.content
    assert b'id="sso-error"' in response.content


def _team_slugs(user_id: int) -> list[str]:
    with schema_context("org_alpha"):
        return sorted(
            TeamMembership.objects.filter(user_id=user_id).values_list("team__slug", flat=True)
        )


def _actions(prefix: str) -> list[str]:
    with schema_context("org_alpha"):
        return list(
            AuditEvent.objects.filter(action__startswith=prefix)
            .order_by("created_at")
            .values_list("action", flat=True)
        )


def test_first_sign_in_creates_the_account_with_the_mapped_role_and_team(sso):
    client = Client()

    response = sign_in(client)

    assert response.status_code == 302, response.content[:600]
    assert response["Location"] == "/orgs/alpha/admin/"
    user = User.objects.get(email="ada@alpha-corp.test")
    assert _session_user(client) == user.pk
    assert not user.has_usable_password()
    membership = Membership.objects.get(organization=sso["org"], user=user)
    assert membership.role == "admin"
    assert _team_slugs(user.pk) == ["platform"]
    identity = SsoIdentity.objects.get(organization=sso["org"])
    assert (identity.subject, identity.user_id) == ("okta-ada", user.pk)
    assert SsoLoginState.objects.count() == 0
    # PKCE: the challenge went out with S256 and the verifier came back to the token endpoint.
    seen = sso["provider"].seen()
    authorize = next(s for s in seen if s["endpoint"] == "authorize")
    token = next(s for s in seen if s["endpoint"] == "token")
    assert authorize["code_challenge_method"] == "S256"
    assert len(authorize["code_challenge"]) == 43
    assert 43 <= len(token["code_verifier"]) <= 128
    assert authorize["nonce"] and authorize["state"]
    assert "client_secret" not in token  # client_secret_basic, not in the body
    assert _actions("sso.signed_in") == ["sso.signed_in"]
    assert "member.added" in _actions("member.")
    # The session works: the organization's admin opens for this admin.
    assert client.get("/orgs/alpha/admin/").status_code == 200


def test_second_sign_in_reaches_the_same_account_and_follows_the_claim(sso):
    first = Client()
    assert sign_in(first).status_code == 302
    user = User.objects.get(email="ada@alpha-corp.test")
    # At the provider: a new address (same subject) and no longer an engineering lead.
    sso["provider"].configure(
        user={**DEFAULT_USER, "email": "ada.l@alpha-corp.test", "groups": ["everyone", "helpdesk"]}
    )

    second = Client()
    response = sign_in(second, next_path="/orgs/alpha/chat/")

    assert response.status_code == 302
    assert response["Location"] == "/orgs/alpha/chat/"
    assert _session_user(second) == user.pk
    assert (
        User.objects.filter(email__in=["ada@alpha-corp.test", "ada.l@alpha-corp.test"]).count() == 1
    )
    assert Membership.objects.get(organization=sso["org"], user=user).role == "member"
    assert _team_slugs(user.pk) == ["support"]
    assert SsoIdentity.objects.get(organization=sso["org"]).email == "ada.l@alpha-corp.test"


def test_an_existing_account_without_other_organizations_is_linked_by_verified_email(sso):
    existing = User.objects.create_user(
        username="ada-local", email="Ada@alpha-corp.test", password="pw-long-enough-1"
    )
    client = Client()

    response = sign_in(client)

    assert response.status_code == 302
    assert _session_user(client) == existing.pk
    assert Membership.objects.get(organization=sso["org"], user=existing).role == "admin"


def test_an_account_that_belongs_to_another_organization_is_not_taken_over(sso, world):
    victim = world.bravo.users["member"]
    sso["provider"].configure(user={**DEFAULT_USER, "sub": "evil", "email": victim.email})
    sso_provider_set(
        org=sso["org"],
        actor=None,
        actor_role=Role.OWNER,
        issuer=sso["provider"].url,
        client_id="cadence-test",
        allowed_domains=["alpha-corp.test", "bravo.test"],
    )
    client = Client()

    response = sign_in(client)

    _refused(response, 409, "sso_account_exists")
    assert _session_user(client) is None
    assert not Membership.objects.filter(organization=sso["org"], user=victim).exists()
    assert not SsoIdentity.objects.exists()


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("issuer", b"another issuer"),
        ("rogue_key", b"signature does not verify"),
        ("expired", b"has expired"),
        ("nonce", b"nonce of this sign-in"),
        ("audience", b"another client"),
    ],
)
def test_an_id_token_that_fails_a_check_signs_nobody_in(sso, fault, words):
    sso["provider"].configure(fault=fault)
    client = Client()

    response = sign_in(client)

    _refused(response, 401, "sso_token_invalid")
    assert words in response.content
    assert _session_user(client) is None
    assert not User.objects.filter(email="ada@alpha-corp.test").exists()
    assert _actions("sso.sign_in_refused") == ["sso.sign_in_refused"]


def test_a_replayed_state_is_refused(sso):
    client = Client()
    url = callback_url(client)
    assert client.get(url).status_code == 302
    client.logout()

    replayed = client.get(url)

    _refused(replayed, 400, "sso_state_invalid")
    assert _session_user(client) is None


def test_a_callback_in_another_browser_is_refused(sso):
    url = callback_url(Client())
    stranger = Client()

    response = stranger.get(url)

    _refused(response, 400, "sso_state_invalid")
    assert _session_user(stranger) is None
    assert not User.objects.filter(email="ada@alpha-corp.test").exists()


def test_an_expired_state_is_refused(sso):
    client = Client()
    url = callback_url(client)
    SsoLoginState.objects.update(expires_at="2000-01-01T00:00:00Z")

    response = client.get(url)

    _refused(response, 400, "sso_state_invalid")
    assert _session_user(client) is None


def test_an_email_outside_the_allowed_domains_is_refused(sso):
    sso["provider"].configure(user={**DEFAULT_USER, "email": "ada@gmail.test"})
    client = Client()

    response = sign_in(client)

    _refused(response, 403, "sso_email_domain")
    assert b"@alpha-corp.test" in response.content
    assert _session_user(client) is None
    assert not User.objects.filter(email="ada@gmail.test").exists()


def test_an_unverified_email_is_refused_and_never_linked(sso):
    existing = User.objects.create_user(username="ada-local", email="ada@alpha-corp.test")
    sso["provider"].configure(user={**DEFAULT_USER, "email_verified": False})
    client = Client()

    response = sign_in(client)

    _refused(response, 403, "sso_email_unverified")
    assert _session_user(client) is None
    assert not Membership.objects.filter(organization=sso["org"], user=existing).exists()
    assert not SsoIdentity.objects.exists()


def test_claims_from_userinfo_when_the_id_token_has_only_the_subject(sso):
    sso["provider"].configure(userinfo_only=True)
    client = Client()

    response = sign_in(client)

    assert response.status_code == 302
    user = User.objects.get(email="ada@alpha-corp.test")
    assert Membership.objects.get(organization=sso["org"], user=user).role == "admin"


def test_the_mapped_claim_from_userinfo_when_the_id_token_lacks_it(sso):
    sso["provider"].configure(userinfo_claims=["groups"])
    client = Client()

    response = sign_in(client)

    assert response.status_code == 302
    user = User.objects.get(email="ada@alpha-corp.test")
    assert Membership.objects.get(organization=sso["org"], user=user).role == "admin"
    assert _team_slugs(user.pk) == ["platform"]


def test_the_egress_policy_applies_to_the_provider(sso, settings):
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = []
    client = Client()

    response = client.get("/orgs/alpha/sso/login/")

    _refused(response, 502, "sso_provider_unreachable")
    assert b"CADENCE_EGRESS_ALLOWED" in response.content


def test_an_organization_without_sso_has_no_sign_in(world):
    response = Client().get("/orgs/bravo/sso/login/")

    _refused(response, 404, "sso_not_configured")


# --- "SSO required" -------------------------------------------------------------------------


def _require_sso(world, provider, required: bool = True):
    sso_provider_set(
        org=world.alpha.org,
        actor=None,
        actor_role=Role.OWNER,
        issuer=provider.url,
        client_id="cadence-test",
        allowed_domains=["alpha.test"],
        sso_required=required,
    )


def _password_login(username: str, password: str):
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": password})
    return client, response


def test_sso_required_refuses_password_login_with_the_sign_in_link(world, provider):
    _require_sso(world, provider)

    client, response = _password_login("alpha-member", "pw-member")

    assert response.status_code == 200
    assert b"requires single sign-on" in response.content
    assert b"/orgs/alpha/sso/login/" in response.content
    assert _session_user(client) is None


def test_without_sso_required_password_login_works(world, provider):
    _require_sso(world, provider, required=False)

    client, response = _password_login("alpha-member", "pw-member")

    assert response.status_code == 302
    assert _session_user(client) == world.alpha.users["member"].pk


def test_sso_required_leaves_other_organizations_members_alone(world, provider):
    _require_sso(world, provider)

    client, response = _password_login("bravo-member", "pw-member")

    assert response.status_code == 302
    assert _session_user(client) == world.bravo.users["member"].pk


def test_platform_staff_keep_a_recorded_break_glass_password_login(world, provider):
    _require_sso(world, provider)
    staff = world.staff
    Membership.objects.create(user=staff, organization=world.alpha.org, role="admin")

    client, response = _password_login("staffer", "pw-staff")

    assert response.status_code == 302
    assert _session_user(client) == staff.pk
    assert _actions("sso.break_glass") == ["sso.break_glass_login"]


def test_sign_in_starts_are_rate_limited_per_address_before_the_provider_is_called(sso, settings):
    settings.CADENCE_SSO_PER_ADDRESS = 2
    address = f"203.0.113.{uuid.uuid4().int % 250}"
    client = Client(REMOTE_ADDR=address)

    answers = [client.get("/orgs/alpha/sso/login/").status_code for _ in range(3)]

    assert answers == [302, 302, 429]
    assert SsoLoginState.objects.count() == 2


def test_the_login_page_offers_the_organizations_sign_in_on_the_way_there(world, provider):
    _require_sso(world, provider, required=False)

    towards_alpha = Client().get("/accounts/login/?next=/orgs/alpha/admin/")
    towards_bravo = Client().get("/accounts/login/?next=/orgs/bravo/admin/")

    assert towards_alpha.status_code == 200
    assert (
        b'href="/orgs/alpha/sso/login/?next=/orgs/alpha/admin/"' in towards_alpha.content
        or b'href="/orgs/alpha/sso/login/?next=%2Forgs%2Falpha%2Fadmin%2F"' in towards_alpha.content
    )
    assert b'id="sso-link"' not in towards_bravo.content
    assert b'id="id_username"' in towards_bravo.content
