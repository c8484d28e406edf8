"""Shared fixtures: real PostgreSQL and Redis, and two organizations built once per session.

Organizations are provisioned once (schema copies are cheap, but users, keys and memberships for
every role add up) and rebuilt only if a transactional test flushed them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

os.environ.setdefault("CADENCE_TESTING", "1")

ROLES = ("owner", "admin", "member", "viewer")
SHARED_DB_FIXTURES = {"committed_db", "_session_world"}


def pytest_configure(config):
    """pytest-django creates the test database only for aliases the *selected* tests declare (a
    django_db mark or the db fixtures). Tests on the shared, committed world declare it through
    committed_db or world instead, so `-k` picking only those would run them against DATABASE_URL
    itself. Count those fixtures as a use of the default database."""
    from pytest_django import fixtures as pytest_django_fixtures

    declared = pytest_django_fixtures._get_databases_for_test

    def databases_for_test(test):
        databases, serialized = declared(test)
        if not databases and SHARED_DB_FIXTURES & set(getattr(test, "fixturenames", ())):
            return ("default",), False
        return databases, serialized

    pytest_django_fixtures._get_databases_for_test = databases_for_test


def pytest_collection_modifyitems(config, items):
    """A transactional test (`django_db(transaction=True)`, `transactional_db`, `live_server`)
    flushes every table when it ends, the session's shared organizations with them; a module
    fixture built afterwards on the session's World would then write rows for organizations that
    no longer exist (CI failed so once, 23 errors). Such tests use committed_db instead."""
    flushing = []
    for item in items:
        mark = item.get_closest_marker("django_db")
        names = set(getattr(item, "fixturenames", ()))
        if (mark is not None and mark.kwargs.get("transaction")) or names & {
            "transactional_db",
            "live_server",
        }:
            flushing.append(item.nodeid)
    if flushing:
        raise pytest.UsageError(
            "these tests would flush the shared test database; use the committed_db fixture "
            "(and remove what the test creates) instead: " + ", ".join(flushing)
        )


@dataclass
class OrgFixture:
    org: object
    users: dict[str, object] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.org.slug


@dataclass
class World:
    alpha: OrgFixture
    bravo: OrgFixture
    outsider: object
    staff: object


def _build_org(slug: str) -> OrgFixture:
    from django.contrib.auth import get_user_model

    from tenants.models import Membership
    from tenants.services import api_key_create, organization_create

    User = get_user_model()
    created = organization_create(
        name=slug.title(),
        slug=slug,
        owner_email=f"owner@{slug}.test",
        owner_username=f"{slug}-owner",
    )
    created.owner.set_password("pw-owner")
    created.owner.save()
    fixture = OrgFixture(org=created.organization)
    fixture.users["owner"] = created.owner
    fixture.keys["owner"] = created.api_key_secret
    fixture.key_ids["owner"] = str(created.api_key.id)
    for role in ROLES[1:]:
        user = User.objects.create_user(
            username=f"{slug}-{role}", email=f"{role}@{slug}.test", password=f"pw-{role}"
        )
        Membership.objects.create(user=user, organization=created.organization, role=role)
        fixture.users[role] = user
        key, secret = api_key_create(
            org=created.organization,
            name=f"{role} key",
            role=role,
            creator_role="owner",
            created_by=created.owner,
        )
        fixture.keys[role] = secret
        fixture.key_ids[role] = str(key.id)
    return fixture


def _build_world() -> World:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tenants.models import Organization
    from tenants.resolution import org_cache_invalidate

    for slug in ("alpha", "bravo"):
        org_cache_invalidate(Organization(slug=slug))
    with connection.cursor() as cursor:
        for slug in ("alpha", "bravo"):
            cursor.execute(f'DROP SCHEMA IF EXISTS "org_{slug}" CASCADE')
    Organization.objects.filter(slug__in=["alpha", "bravo"]).delete()
    User = get_user_model()
    User.objects.filter(username__in=["outsider", "staffer"]).delete()
    User.objects.filter(username__regex=r"^(alpha|bravo)-").delete()
    outsider = User.objects.create_user(
        username="outsider", email="outsider@nowhere.test", password="pw-outsider"
    )
    staff = User.objects.create_user(
        username="staffer", email="staff@cadence.test", password="pw-staff", is_staff=True
    )
    return World(
        alpha=_build_org("alpha"), bravo=_build_org("bravo"), outsider=outsider, staff=staff
    )


_world: World | None = None


def _ensure_world() -> World:
    global _world
    from tenants.models import Organization

    if _world is None or Organization.objects.filter(slug__in=["alpha", "bravo"]).count() != 2:
        _world = _build_world()
    return _world


@pytest.fixture(scope="session")
def _close_stray_connections(django_db_setup, django_db_blocker):
    """Consumer threads keep connections open; end them so the test database can be dropped."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def _session_world(django_db_setup, django_db_blocker) -> World:
    # Built outside any test transaction, so it is committed and shared by the whole session.
    with django_db_blocker.unblock():
        return _ensure_world()


@pytest.fixture(scope="module")
def module_world(_session_world, django_db_blocker) -> World:
    """The shared World for a module-scoped fixture: checked (and rebuilt if it is gone) when the
    module starts, not only when the session did."""
    with django_db_blocker.unblock():
        return _ensure_world()


@pytest.fixture
def world(_session_world, django_db_blocker) -> World:
    """Two organizations with a user and an API key for every role, an outsider and a staff user."""
    with django_db_blocker.unblock():
        return _ensure_world()


@pytest.fixture
def committed_db(django_db_setup, django_db_blocker, _close_stray_connections):
    """Database access without a wrapping transaction, for code on other threads (consumers, workers).

    Unlike transactional_db it flushes nothing, so the shared organizations survive; a test using
    it removes what it creates.
    """
    with django_db_blocker.unblock():
        yield


@pytest.fixture
def committed_member(world, committed_db):
    """Makes committed members of alpha, each a user of their own, with an API key they created
    when `key_role` is given: `make(username, role, key_role=None) -> (membership, key, secret)`.
    The users and their keys are removed afterwards."""
    from django.contrib.auth import get_user_model

    from tenants.models import ApiKey, Membership
    from tenants.services import api_key_create

    User = get_user_model()
    made = []

    def make(username: str, role: str, key_role: str | None = None):
        User.objects.filter(username=username).delete()
        user = User.objects.create_user(username=username, email=f"{username}@alpha.test")
        made.append(user)
        membership = Membership.objects.create(user=user, organization=world.alpha.org, role=role)
        key = secret = None
        if key_role is not None:
            key, secret = api_key_create(
                org=world.alpha.org,
                name=f"{username} key",
                role=key_role,
                creator_role=role,
                created_by=user,
            )
        return membership, key, secret

    yield make
    for user in made:
        ApiKey.objects.filter(created_by=user).delete()
        user.delete()


@pytest.fixture
def access_watch_running(committed_db):
    """This process's access watch listening on the test database (tenants/access_watch.py), as
    a server's lifespan starts it; stopped afterwards (nothing is kept once it stops)."""
    from tenants import access_watch

    started = access_watch.start()
    assert started.ready.wait(10), "the access watch did not start listening"
    yield started
    access_watch.stop()
    assert not access_watch.listening()


@pytest.fixture
def api():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def as_key(api):
    def use(secret: str):
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return api

    return use


@pytest.fixture
def as_user(api):
    def use(user):
        api.force_login(user)
        return api

    return use


# Hypothesis under load: CI runs the suite on a shared 2-core machine, where input generation and
# a single example can take longer than Hypothesis's wall-clock defaults; those limits test the
# machine, not the code. Example counts stay as each test sets them.
def _register_hypothesis_profile() -> None:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "cadence", deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile("cadence")


_register_hypothesis_profile()
