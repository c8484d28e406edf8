"""A sign-in as `make run` serves it: uvicorn (ASGI, where the sync views call the async
outbound client through async_to_sync), the test provider, and httpx as the browser."""

from __future__ import annotations

import httpx
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.testing import start_live_server, test_database_url
from tenants.audit.models import AuditEvent
from tenants.models import Membership
from tenants.roles import Role
from tenants.sso.models import SsoProvider
from tenants.sso.services import sso_provider_set
from tenants.sso.tests.conftest import DEFAULT_USER
from tenants.teams.models import Team, TeamMembership

User = get_user_model()
EMAIL = "live-ada@alpha-corp.test"


def _cleanup(org, since=None) -> None:
    SsoProvider.objects.filter(organization=org).delete()
    users = list(User.objects.filter(email=EMAIL).values_list("pk", flat=True))
    with schema_context(org.schema_name):
        TeamMembership.objects.filter(user_id__in=users).delete()
        Team.objects.filter(slug="live-platform").delete()
        if since is not None:
            # Committed: other tests count alpha's audit events.
            AuditEvent.objects.filter(created_at__gte=since).delete()
    User.objects.filter(pk__in=users).delete()


def test_a_sign_in_under_the_asgi_server(world, committed_db, provider, settings):
    org = world.alpha.org
    key = Fernet.generate_key().decode()
    settings.CADENCE_ENCRYPTION_KEY = key
    _cleanup(org)
    since = timezone.now()
    server = start_live_server(
        test_database_url(),
        CADENCE_ENCRYPTION_KEY=key,
        CADENCE_EGRESS_ALLOWED_NETWORKS="127.0.0.0/8",
    )
    try:
        with schema_context(org.schema_name):
            Team.objects.create(slug="live-platform", name="Live platform")
        sso_provider_set(
            org=org,
            actor=None,
            actor_role=Role.OWNER,
            issuer=provider.url,
            client_id="cadence-test",
            client_secret="test-secret-0123456789",
            allowed_domains=["alpha-corp.test"],
            claim="groups",
            mapping={"eng-leads": {"role": "admin", "team": "live-platform"}},
        )
        provider.configure(
            redirect_uris=[f"{server.url}/orgs/alpha/sso/callback/"],
            user={**DEFAULT_USER, "sub": "live-ada", "email": EMAIL},
        )
        with httpx.Client(base_url=server.url, timeout=30) as browser:
            start = browser.get("/orgs/alpha/sso/login/")
            at_provider = httpx.get(start.headers["location"], timeout=10)
            back = browser.get(at_provider.headers["location"])
            admin = browser.get("/orgs/alpha/admin/")

        assert start.status_code == 302
        assert (back.status_code, back.headers.get("location")) == (302, "/orgs/alpha/admin/")
        assert admin.status_code == 200
        assert b"Alpha" in admin.content
        user = User.objects.get(email=EMAIL)
        assert Membership.objects.get(organization=org, user=user).role == "admin"
        with schema_context(org.schema_name):
            assert TeamMembership.objects.filter(user_id=user.pk).count() == 1
    finally:
        server.stop()
        _cleanup(org, since)
