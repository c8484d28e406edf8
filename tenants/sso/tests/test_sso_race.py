"""Sign-ins of one subject at once: committed, on two connections (no wrapping transaction)."""

from __future__ import annotations

import threading

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django_tenants.utils import schema_context

from tenants.audit.models import AuditEvent
from tenants.models import Membership
from tenants.sso.models import SsoProvider
from tenants.sso.oidc import Assertion
from tenants.sso.signin import sso_sign_in

User = get_user_model()


def test_two_first_sign_ins_of_one_subject_make_one_account(world, committed_db):
    """The second waits on the subject's lock, then finds the first one's link."""
    org = world.alpha.org
    email = "race@alpha-corp.test"
    provider = SsoProvider.objects.create(
        organization=org,
        issuer="https://race.test",
        client_id="c",
        allowed_domains=["alpha-corp.test"],
    )
    assertion = Assertion(
        issuer="https://race.test", subject="race", email=email, email_verified=True, claims={}
    )
    results: list = []

    def second():
        try:
            results.append(sso_sign_in(org=org, provider=provider, assertion=assertion)[0].pk)
        finally:
            connection.close()

    try:
        with transaction.atomic():
            first = sso_sign_in(org=org, provider=provider, assertion=assertion)[0].pk
            thread = threading.Thread(target=second)
            thread.start()
            thread.join(timeout=1.0)
            waited = thread.is_alive()
        thread.join(timeout=30)

        assert waited, "the second sign-in did not wait for the first"
        assert results == [first]
        assert User.objects.filter(email=email).count() == 1
    finally:
        Membership.objects.filter(user__email=email).delete()
        User.objects.filter(email=email).delete()
        provider.delete()
        with schema_context(org.schema_name):
            AuditEvent.objects.filter(target__startswith="race@").delete()
