"""`/api/v1/orgs/<slug>/sso/`: owners and admins configure the provider; everyone else is refused
and changes nothing; the secret is encrypted, write-only and masked in the audit trail."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from orchestrators import crypto
from tenants.audit.models import AuditEvent
from tenants.sso.models import SsoProvider
from tenants.teams.models import Team

pytestmark = pytest.mark.django_db

URL = "/api/v1/orgs/alpha/sso/"
SECRET = "s3cret-value-that-must-never-leak"


def _body(**changes) -> dict:
    return {
        "issuer": "https://login.alpha-corp.test",
        "client_id": "cadence",
        "client_secret": SECRET,
        "allowed_domains": ["Alpha-Corp.test", "@alpha.test"],
        "claim": "groups",
        "mapping": {"eng": {"role": "admin", "team": "Platform"}, "all": {"role": "member"}},
        "sso_required": True,
        **changes,
    }


@pytest.fixture
def team(world):
    with schema_context(world.alpha.org.schema_name):
        return Team.objects.create(slug="platform", name="Platform")


def _events(action: str) -> list[AuditEvent]:
    with schema_context("org_alpha"):
        return list(AuditEvent.objects.filter(action=action))


def test_an_admin_registers_the_provider_and_the_secret_stays_hidden(world, as_key, team):
    client = as_key(world.alpha.keys["admin"])

    put = client.put(URL, _body(), format="json")
    got = client.get(URL)

    assert put.status_code == 200, put.json()
    body = got.json()
    assert body == {
        **put.json(),
        "warnings": [],
    }
    assert body["issuer"] == "https://login.alpha-corp.test"
    assert body["client_secret_set"] is True
    assert body["client_secret_hint"] == "s3c…leak"
    assert body["allowed_domains"] == ["alpha-corp.test", "alpha.test"]
    assert body["mapping"] == {
        "eng": {"role": "admin", "team": str(team.id)},
        "all": {"role": "member", "team": None},
    }
    assert body["sso_required"] is True
    assert body["login_url"] == "http://testserver/orgs/alpha/sso/login/"
    assert body["redirect_uri"] == "http://testserver/orgs/alpha/sso/callback/"
    assert SECRET not in put.content.decode() + got.content.decode()
    stored = SsoProvider.objects.get(organization=world.alpha.org)
    assert SECRET not in stored.client_secret_encrypted
    assert crypto.decrypt(stored.client_secret_encrypted) == SECRET
    [event] = _events("sso.provider_created")
    assert event.actor.startswith("key:")
    assert event.details["after"]["client_secret"] == "s3c…leak"
    assert SECRET not in str(event.details)


def test_a_put_without_the_secret_keeps_it_and_the_change_is_audited(world, as_key, team):
    client = as_key(world.alpha.keys["owner"])
    client.put(URL, _body(), format="json")
    body = _body(sso_required=False, client_id="cadence-2")
    del body["client_secret"]

    response = client.put(URL, body, format="json")

    assert response.status_code == 200
    assert response.json()["client_secret_hint"] == "s3c…leak"
    stored = SsoProvider.objects.get(organization=world.alpha.org)
    assert crypto.decrypt(stored.client_secret_encrypted) == SECRET
    assert (stored.client_id, stored.sso_required) == ("cadence-2", False)
    [event] = _events("sso.provider_updated")
    assert event.details["changed"] == ["client_id", "sso_required"]
    assert event.details["before"]["sso_required"] is True


def test_an_owner_removes_the_provider(world, as_key, team):
    client = as_key(world.alpha.keys["owner"])
    client.put(URL, _body(), format="json")

    deleted = client.delete(URL)
    after = client.get(URL)
    again = client.delete(URL)

    assert deleted.status_code == 204
    assert (after.status_code, after.json()["error"]["code"]) == (404, "sso_not_configured")
    assert again.status_code == 404
    assert not SsoProvider.objects.exists()
    [event] = _events("sso.provider_deleted")
    assert SECRET not in str(event.details)


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_are_refused_and_change_nothing(world, as_key, team, role):
    as_key(world.alpha.keys["owner"]).put(URL, _body(), format="json")
    before = SsoProvider.objects.values().get()
    client = as_key(world.alpha.keys[role])

    answers = [
        client.get(URL),
        client.put(URL, _body(client_id="hijack"), format="json"),
        client.delete(URL),
    ]

    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [
        (403, "role_required")
    ] * 3
    assert SsoProvider.objects.values().get() == before


def test_outsiders_get_the_404_of_an_unknown_organization(world, as_key, as_user, api, team):
    as_key(world.alpha.keys["owner"]).put(URL, _body(), format="json")
    before = SsoProvider.objects.values().get()

    foreign = as_key(world.bravo.keys["owner"])
    foreign_answers = [
        foreign.get(URL),
        foreign.put(URL, _body(client_id="x"), format="json"),
        foreign.delete(URL),
    ]
    api.credentials()
    outsider = as_user(world.outsider)
    outsider_answers = [
        outsider.get(URL),
        outsider.put(URL, _body(client_id="x"), format="json"),
        outsider.delete(URL),
    ]
    api.logout()
    anonymous = api.get(URL)

    assert {a.status_code for a in foreign_answers + outsider_answers} == {404}
    assert anonymous.status_code in (401, 403)
    assert SsoProvider.objects.values().get() == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"issuer": "http://login.alpha-corp.test"}, "issuer"),
        ({"issuer": "ftp://login.alpha-corp.test"}, "issuer"),
        ({"issuer": "https://login.alpha-corp.test/?x=1"}, "issuer"),
        ({"issuer": "https://" + "a" * 600}, "issuer"),
        ({"issuer": "https://login\u0000.test"}, "issuer"),
        ({"client_id": ""}, "client_id"),
        ({"allowed_domains": []}, "allowed_domains"),
        ({"allowed_domains": ["not a domain"]}, "allowed_domains"),
        ({"allowed_domains": [f"d{i}.test" for i in range(51)]}, "allowed_domains"),
        ({"mapping": {"eng": {"role": "owner"}}}, "mapping"),
        ({"mapping": {"eng": {"role": "admin", "team": "nope"}}}, "mapping.eng"),
        ({"mapping": {"eng": {"role": "admin", "colour": "red"}}}, "mapping"),
        ({"claim": "", "mapping": {"eng": {"role": "admin"}}}, "claim"),
        ({"claim": "has space"}, "claim"),
        ({"scopes": "email profile"}, "scopes"),
        ({"default_role": "owner"}, "default_role"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(world, as_key, team, changes, field):
    response = as_key(world.alpha.keys["admin"]).put(URL, _body(**changes), format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    details = str(error["details"])
    assert field.split(".")[0] in details, error
    assert not SsoProvider.objects.exists()


def test_a_provider_on_a_private_address_is_refused_unless_the_operator_allows_it(
    world, as_key, team, settings
):
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = []
    client = as_key(world.alpha.keys["admin"])

    refused = client.put(URL, _body(issuer="https://10.1.2.3"), format="json")
    settings.CADENCE_EGRESS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    allowed = client.put(URL, _body(issuer="https://10.1.2.3"), format="json")

    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "egress_denied")
    assert allowed.status_code == 200


HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=300),
    st.lists(st.text(max_size=30), max_size=5),
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(
            st.text(max_size=20),
            st.dictionaries(st.sampled_from(["role", "team", "x"]), st.text(max_size=20)),
        ),
        max_size=4,
    ),
)


@given(field=st.sampled_from(sorted(_body())), value=HOSTILE)
@hypothesis_settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_put_body_is_a_5xx(world, as_key, field, value):
    response = as_key(world.alpha.keys["admin"]).put(URL, _body(**{field: value}), format="json")

    assert response.status_code in (200, 400), (field, value, response.content[:300])
    assert response.json().get("client_secret") is None
