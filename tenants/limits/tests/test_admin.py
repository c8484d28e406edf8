"""Limits and usage in the admins: operators change plans and overrides, admins read usage."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tenants.limits.models import OrganizationLimits, UsageDay
from tenants.limits.usage import Usage, usage_add


@pytest.fixture
def alpha_usage(world, committed_db):
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()
    usage_add(
        org_id=world.alpha.org.pk,
        principal="key:ck_chartkey",
        orchestrator="chartbot",
        model="m",
        usage=Usage(40, 2),
        day=timezone.now().date(),
    )
    yield
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()


def test_operators_see_usage_charts_for_every_organization(world, client, alpha_usage):
    client.force_login(world.staff)
    world.staff.is_superuser = True
    world.staff.save(update_fields=["is_superuser"])
    try:
        page = client.get("/admin/limits/usageday/")
    finally:
        world.staff.is_superuser = False
        world.staff.save(update_fields=["is_superuser"])

    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="usage-charts"' in body
    assert "chartbot" in body and "key:ck_chartkey" in body
    assert "42 tokens" in body


def test_organization_admins_see_their_own_usage_only(world, client, alpha_usage):
    usage_add(
        org_id=world.bravo.org.pk, principal="user:b", orchestrator="bravobot", usage=Usage(1, 1)
    )
    try:
        client.force_login(world.alpha.users["admin"])
        page = client.get("/orgs/alpha/admin/limits/usageday/")
        client.force_login(world.alpha.users["member"])
        member = client.get("/orgs/alpha/admin/limits/usageday/")
        client.force_login(world.outsider)
        outsider = client.get("/orgs/alpha/admin/limits/usageday/")
    finally:
        UsageDay.objects.filter(organization_id=world.bravo.org.pk).delete()

    assert page.status_code == 200
    body = page.content.decode()
    assert "chartbot" in body and "bravobot" not in body
    assert member.status_code == 403
    assert outsider.status_code == 404


def test_operators_override_an_organizations_limits_in_the_admin(world, client, committed_db):
    world.staff.is_superuser = True
    world.staff.save(update_fields=["is_superuser"])
    client.force_login(world.staff)
    try:
        response = client.post(
            "/admin/limits/organizationlimits/add/",
            {"organization": world.alpha.org.pk, "requests_per_minute": "7", "note": "pilot"},
        )
        negative = client.post(
            "/admin/limits/organizationlimits/add/",
            {"organization": world.bravo.org.pk, "tokens_per_day": "-1"},
        )
        saved = OrganizationLimits.objects.filter(organization=world.alpha.org).first()
    finally:
        OrganizationLimits.objects.filter(
            organization__in=[world.alpha.org, world.bravo.org]
        ).delete()
        world.staff.is_superuser = False
        world.staff.save(update_fields=["is_superuser"])

    assert response.status_code == 302
    assert saved.requests_per_minute == 7
    assert negative.status_code == 200  # the form again, with its error
    assert "Ensure this value is greater than or equal to 0" in negative.content.decode()


def test_non_staff_cannot_reach_the_operator_limits(world, client, committed_db):
    client.force_login(world.alpha.users["owner"])

    response = client.get("/admin/limits/organizationlimits/")

    assert response.status_code == 302  # to the admin's login
