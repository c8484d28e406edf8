from __future__ import annotations

import contextlib

import pytest


def _clear(tenant: str) -> None:
    from tenants import ratelimit
    from tenants.limits import budgets

    ratelimit.clear_tenant(tenant)
    budgets.clear_tenant(tenant)


@contextlib.contextmanager
def overridden(org, **values):
    """An organization's limits overridden for the block; its buckets empty before and after."""
    from tenants.limits import plans
    from tenants.limits.models import OrganizationLimits

    OrganizationLimits.objects.update_or_create(organization_id=org.pk, defaults=values)
    plans.limits_forget()
    _clear(str(org.public_id))
    try:
        yield
    finally:
        OrganizationLimits.objects.filter(organization_id=org.pk).delete()
        plans.limits_forget()
        _clear(str(org.public_id))


@pytest.fixture
def limited(committed_db):
    return overridden


@pytest.fixture
def empty_buckets(world):
    from tenants import ratelimit

    for fixture in (world.alpha, world.bravo):
        _clear(str(fixture.org.public_id))
    ratelimit.clear_tenant("login")
    yield
    for fixture in (world.alpha, world.bravo):
        _clear(str(fixture.org.public_id))
    ratelimit.clear_tenant("login")
