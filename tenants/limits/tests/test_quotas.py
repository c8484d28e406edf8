"""Quotas hold under concurrency: N threads racing for the last M places, exactly M win."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from cadence_site.errors import ApplicationError
from tenants.limits.quotas import QuotaExceeded, quota_enforce
from tenants.limits.tests.conftest import overridden

RACERS = 8


def _race(fn, count: int = RACERS) -> list:
    """Run fn(i) on `count` threads released together; each result or the exception raised."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as exc:  # collected and asserted on by the test
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_member_adds_stop_exactly_at_the_limit(world, committed_db):
    from django.contrib.auth import get_user_model

    from tenants.models import Membership, Organization
    from tenants.services import membership_add

    org = Organization.objects.get(slug="alpha")
    before = Membership.objects.filter(organization=org).count()
    emails = [f"racer{i}@quota.test" for i in range(RACERS)]
    with overridden(org, max_members=before + 2):
        try:
            results = _race(
                lambda i: membership_add(
                    org=org, email=emails[i], role="member", actor_role="owner"
                )
            )
            after = Membership.objects.filter(organization=org).count()
        finally:
            Membership.objects.filter(organization=org, user__email__in=emails).delete()
            get_user_model().objects.filter(email__in=emails).delete()

    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert after == before + 2
    assert len(refused) == RACERS - 2
    assert refused[0].extra == {
        "quota": "max_members",
        "limit": before + 2,
        "used": before + 2,
        "requested": 1,
    }
    assert "max_members" in refused[0].message


def test_concurrent_api_key_creation_stops_exactly_at_the_limit(world, committed_db):
    from tenants.models import ApiKey, Organization
    from tenants.services import api_key_create

    org = Organization.objects.get(slug="bravo")
    active = ApiKey.objects.filter(organization=org, revoked_at__isnull=True)
    before = active.count()
    with overridden(org, max_api_keys=before + 3):
        try:
            results = _race(
                lambda i: api_key_create(
                    org=org, name=f"racer-{i}", role="member", creator_role="owner"
                )
            )
            after = active.count()
        finally:
            ApiKey.objects.filter(organization=org, name__startswith="racer-").delete()

    assert after == before + 3
    assert sum(isinstance(r, QuotaExceeded) for r in results) == RACERS - 3


def test_concurrent_orchestrator_creation_stops_exactly_at_the_limit(world, committed_db):
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from orchestrators.services import llm_config_create, orchestrator_create
    from tenants.models import Organization

    org = Organization.objects.get(slug="alpha")
    with schema_context(org.schema_name):
        config = llm_config_create(name="quota-race", provider="offline", model="cadence-offline")
        before = OrchestratorInstance.objects.count()

    def create(i: int):
        with schema_context(org.schema_name):
            return orchestrator_create(slug=f"quota-{i}", name=f"Quota {i}", llm_config=config)

    with overridden(org, max_orchestrators=before + 2):
        try:
            results = _race(create)
        finally:
            with schema_context(org.schema_name):
                after = OrchestratorInstance.objects.count()
                OrchestratorInstance.objects.filter(slug__startswith="quota-").delete()
                LLMConfig.objects.filter(pk=config.pk).delete()

    assert after == before + 2
    refusals = [r for r in results if isinstance(r, ApplicationError)]
    assert [r.code for r in refusals] == ["quota_exceeded"] * (RACERS - 2)
    assert refusals[0].extra["quota"] == "max_orchestrators"


def test_the_api_names_the_limit_with_409(world, as_key, committed_db):
    from tenants.models import Membership

    org = world.alpha.org
    count = Membership.objects.filter(organization_id=org.pk).count()
    with overridden(org, max_members=count):
        response = as_key(world.alpha.keys["admin"]).post(
            "/api/v1/orgs/alpha/members/",
            {"email": "one-too-many@quota.test", "role": "member"},
            format="json",
        )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["quota"] == "max_members"
    assert error["details"]["limit"] == count
    assert not Membership.objects.filter(user__email="one-too-many@quota.test").exists()


def test_quota_enforce_inside_a_transaction_returns_use_and_limit(world, db):
    from django.db import transaction

    with transaction.atomic():
        used, limit = quota_enforce(org_id=world.alpha.org.pk, quota="max_plugins", count=lambda: 0)
    assert (used, limit) == (0, 50)


def test_quota_enforce_without_a_transaction_is_a_bug(world, committed_db):
    with pytest.raises(RuntimeError):
        quota_enforce(org_id=world.alpha.org.pk, quota="max_plugins", count=lambda: 0)
