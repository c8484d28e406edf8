"""The limits and usage endpoints: who reads, who changes, and bad input."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tenants.limits.models import ApiKeyLimits, UsageDay
from tenants.limits.tests.conftest import overridden
from tenants.limits.usage import Usage, usage_add

pytestmark = pytest.mark.usefixtures("empty_buckets")


@pytest.fixture
def usage_rows(world, committed_db):
    """Three days of usage in alpha (two keys, two orchestrators) and one row in bravo."""
    today = timezone.now().date()
    alpha, bravo = world.alpha.org.pk, world.bravo.org.pk
    UsageDay.objects.filter(organization_id__in=[alpha, bravo]).delete()
    member = f"key:{world.alpha.keys['member'][:12]}"
    admin = f"key:{world.alpha.keys['admin'][:12]}"
    usage_add(
        org_id=alpha,
        principal=member,
        orchestrator="bot",
        model="m1",
        usage=Usage(10, 5),
        day=today - timedelta(days=2),
    )
    usage_add(
        org_id=alpha,
        principal=member,
        orchestrator="bot",
        model="m1",
        usage=Usage(20, 10),
        day=today,
    )
    usage_add(
        org_id=alpha,
        principal=admin,
        orchestrator="=cmd",
        model="m2",
        usage=Usage(1, 1, estimated=True),
        day=today,
    )
    usage_add(
        org_id=bravo,
        principal="user:1",
        orchestrator="bot",
        model="m1",
        usage=Usage(1000, 1000),
        day=today,
    )
    yield {"today": today, "member": member, "admin": admin}
    UsageDay.objects.filter(organization_id__in=[alpha, bravo]).delete()


def test_members_read_the_effective_limits_and_quota_use(world, as_key, committed_db):
    with overridden(world.alpha.org, max_orchestrators=7, tokens_per_day=5000):
        response = as_key(world.alpha.keys["viewer"]).get("/api/v1/orgs/alpha/limits/")

    assert response.status_code == 200
    body = response.json()
    assert body["plan"] == "default"
    assert body["overrides"] == {"max_orchestrators": 7, "tokens_per_day": 5000}
    assert body["limits"]["max_orchestrators"] == 7
    assert body["limits"]["tokens_per_day"] == 5000
    assert body["limits"]["requests_per_minute"] == 600
    assert body["quotas"]["max_orchestrators"]["limit"] == 7
    assert body["quotas"]["max_members"]["used"] == 4


def test_outsiders_do_not_see_limits(world, as_key, as_user, committed_db):
    assert as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/alpha/limits/").status_code == 404
    assert as_user(world.outsider).get("/api/v1/orgs/alpha/limits/").status_code == 404


def test_admins_set_key_limits_within_the_organizations(world, as_key, committed_db):
    key_id = world.alpha.key_ids["viewer"]
    url = f"/api/v1/orgs/alpha/api-keys/{key_id}/limits/"
    try:
        with overridden(world.alpha.org, tokens_per_day=1000):
            ok = as_key(world.alpha.keys["admin"]).patch(
                url, {"requests_per_minute": 5, "tokens_per_day": 100}, format="json"
            )
            above = as_key(world.alpha.keys["admin"]).patch(
                url, {"tokens_per_day": 1001}, format="json"
            )
            read = as_key(world.alpha.keys["admin"]).get(url)
        saved = ApiKeyLimits.objects.get(api_key_id=key_id)
    finally:
        ApiKeyLimits.objects.filter(api_key_id=key_id).delete()

    assert ok.status_code == 200
    assert ok.json()["limits"]["requests_per_minute"] == 5
    assert (saved.requests_per_minute, saved.tokens_per_day) == (5, 100)
    assert above.status_code == 400
    assert above.json()["error"]["code"] == "limit_above_organization"
    assert read.json()["limits"]["tokens_per_day"] == 100


@pytest.mark.parametrize(
    "body, field",
    [
        ({"requests_per_minute": -1}, "requests_per_minute"),
        ({"tokens_per_day": -5}, "tokens_per_day"),
        ({"request_burst": 0}, "request_burst"),
        ({"requests_per_minute": "many"}, "requests_per_minute"),
        ({"unknown_limit": 3}, "unknown_limit"),
    ],
)
def test_bad_key_limits_are_400_and_change_nothing(world, as_key, committed_db, body, field):
    key_id = world.alpha.key_ids["viewer"]
    response = as_key(world.alpha.keys["admin"]).patch(
        f"/api/v1/orgs/alpha/api-keys/{key_id}/limits/", body, format="json"
    )

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not ApiKeyLimits.objects.filter(api_key_id=key_id).exists()


def test_members_and_other_organizations_cannot_change_limits(world, as_key, committed_db):
    key_id = world.alpha.key_ids["viewer"]
    url = f"/api/v1/orgs/alpha/api-keys/{key_id}/limits/"
    member = as_key(world.alpha.keys["member"]).patch(
        url, {"requests_per_minute": 1}, format="json"
    )
    other = as_key(world.bravo.keys["owner"]).patch(url, {"requests_per_minute": 1}, format="json")
    # Bravo's admin naming Alpha's key under Bravo's path: no such key there.
    crossed = as_key(world.bravo.keys["owner"]).patch(
        f"/api/v1/orgs/bravo/api-keys/{key_id}/limits/", {"requests_per_minute": 1}, format="json"
    )

    assert (member.status_code, other.status_code, crossed.status_code) == (403, 404, 404)
    assert not ApiKeyLimits.objects.filter(api_key_id=key_id).exists()


def test_usage_groups_by_key_and_orchestrator_within_the_range(world, as_key, usage_rows):
    today = usage_rows["today"]
    response = as_key(world.alpha.keys["admin"]).get(
        "/api/v1/orgs/alpha/usage/",
        {"from": str(today - timedelta(days=1)), "to": str(today), "group_by": "key,orchestrator"},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["group_by"] == ["principal", "orchestrator"]
    rows = {(r["principal"], r["orchestrator"]): r for r in body["results"]}
    assert set(rows) == {(usage_rows["member"], "bot"), (usage_rows["admin"], "=cmd")}
    assert rows[(usage_rows["member"], "bot")]["total_tokens"] == 30  # the day before is out
    assert rows[(usage_rows["admin"], "=cmd")]["estimated_tokens"] == 2
    assert body["totals"]["total_tokens"] == 32
    assert body["totals"]["requests"] == 2


def test_usage_by_day_defaults_to_the_last_30_days(world, as_key, usage_rows):
    body = as_key(world.alpha.keys["owner"]).get("/api/v1/orgs/alpha/usage/").json()

    assert [r["day"] for r in body["results"]] == [
        str(usage_rows["today"] - timedelta(days=2)),
        str(usage_rows["today"]),
    ]
    assert [r["total_tokens"] for r in body["results"]] == [15, 32]


def test_usage_export_is_csv_with_formula_cells_defused(world, as_key, usage_rows):
    response = as_key(world.alpha.keys["admin"]).get(
        "/api/v1/orgs/alpha/usage/export/", {"group_by": "orchestrator"}
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == [
        "orchestrator",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "estimated_tokens",
    ]
    assert rows[1] == ["'=cmd", "1", "1", "1", "2", "2"]
    assert rows[2] == ["bot", "2", "30", "15", "45", "0"]


@pytest.mark.parametrize(
    "params, code",
    [
        ({"group_by": "colour"}, "invalid_group_by"),
        ({"from": "2026-13-01"}, "invalid_date"),
        ({"from": "yesterday"}, "invalid_date"),
        # A NUL is refused before any view, by the bad-input guard, with its own code.
        ({"from": "2026-01-0\x00"}, "invalid_characters"),
        ({"from": "1990-01-01"}, "range_past_retention"),
        ({"from": "2999-01-02", "to": "2999-01-01"}, "invalid_range"),
    ],
)
def test_bad_usage_queries_are_400(world, as_key, committed_db, params, code):
    response = as_key(world.alpha.keys["admin"]).get("/api/v1/orgs/alpha/usage/", params)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_usage_is_for_admins_of_that_organization_only(world, as_key, as_user, usage_rows):
    member = as_key(world.alpha.keys["member"]).get("/api/v1/orgs/alpha/usage/")
    other = as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/alpha/usage/")
    outsider = as_user(world.outsider).get("/api/v1/orgs/alpha/usage/export/")
    own = as_key(world.bravo.keys["owner"]).get("/api/v1/orgs/bravo/usage/").json()

    assert (member.status_code, other.status_code, outsider.status_code) == (403, 404, 404)
    assert own["totals"]["total_tokens"] == 2000  # bravo sees its own row only


def test_concurrent_usage_adds_lose_nothing(world, committed_db):
    org = world.bravo.org.pk
    day = timezone.now().date() - timedelta(days=1)
    UsageDay.objects.filter(organization_id=org, principal="user:race").delete()

    def add():
        try:
            for _ in range(25):
                usage_add(org_id=org, principal="user:race", usage=Usage(3, 4), day=day)
        finally:
            connection.close()

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row = UsageDay.objects.get(organization_id=org, principal="user:race", day=day)
    UsageDay.objects.filter(organization_id=org, principal="user:race").delete()

    assert (row.requests, row.prompt_tokens, row.total_tokens) == (200, 600, 1400)
