"""The provider in the organization's admin: the REST API's rules, through the same service."""

from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from orchestrators import crypto
from tenants.audit.models import AuditEvent
from tenants.sso.models import SsoProvider

pytestmark = pytest.mark.django_db

ADD = "/orgs/alpha/admin/sso/ssoprovider/add/"
SECRET = "admin-entered-secret-123456"


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(**changes) -> dict:
    return {
        "issuer": "https://login.alpha-corp.test",
        "client_id": "cadence",
        "client_secret": SECRET,
        "scopes": "openid email profile",
        "allowed_domains": "alpha-corp.test\nalpha.test",
        "claim": "groups",
        "mapping": '{"eng": {"role": "admin"}}',
        "default_role": "member",
        "sso_required": "on",
        **changes,
    }


def test_an_admin_registers_the_provider_in_the_admin(world):
    client = _client(world.alpha.users["admin"])

    page = client.get(ADD)
    response = client.post(ADD, _form())

    assert page.status_code == 200
    assert b"http://testserver/orgs/alpha/sso/callback/" in page.content
    assert response.status_code == 302, response.content[:2000]
    stored = SsoProvider.objects.get(organization=world.alpha.org)
    assert stored.allowed_domains == ["alpha-corp.test", "alpha.test"]
    assert stored.mapping == {"eng": {"role": "admin", "team": None}}
    assert stored.sso_required is True
    assert crypto.decrypt(stored.client_secret_encrypted) == SECRET
    change = client.get(f"/orgs/alpha/admin/sso/ssoprovider/{stored.pk}/change/")
    assert change.status_code == 200
    assert SECRET.encode() not in change.content
    with schema_context("org_alpha"):
        event = AuditEvent.objects.get(action="sso.provider_created")
    assert event.actor == "user:alpha-admin"


def test_a_service_refusal_lands_beside_the_field_and_nothing_is_saved(world):
    response = _client(world.alpha.users["admin"]).post(
        ADD, _form(mapping='{"eng": {"role": "owner"}}')
    )

    assert response.status_code == 200
    assert b"owners are made by people" in response.content
    assert not SsoProvider.objects.exists()


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_do_not_get_the_page(world, role):
    client = _client(world.alpha.users[role])

    page = client.get(ADD)
    posted = client.post(ADD, _form())

    assert page.status_code == 403
    assert posted.status_code == 403
    assert not SsoProvider.objects.exists()
