"""Token budgets: leases reserved all or nothing, settled once, released when their worker died."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from orchestrators.tests.factories import orchestrators_remove, ready_orchestrator
from tenants.limits import budgets
from tenants.limits.models import UsageDay
from tenants.limits.tests.conftest import overridden
from tenants.limits.usage import Usage, usage_add

NOW = 1_800_000_000.0


@pytest.fixture
def tenant():
    value = str(uuid.uuid4())
    yield value
    budgets.clear_tenant(value)


def _budget(tenant, limit, field="tokens_per_minute", principal="*", owner="organization"):
    return budgets.Budget(tenant, principal, field, limit, owner)


def test_a_reservation_holds_every_budget_or_none(tenant):
    org = _budget(tenant, 1000)
    key = _budget(tenant, 100, principal="key:ck_x", owner="api key")

    held = budgets.reserve(budgets=[org, key], lease_id="run1:1", amount=80, now=NOW)
    refused = budgets.reserve(budgets=[org, key], lease_id="run2:1", amount=30, now=NOW)

    assert isinstance(held, budgets.Lease)
    assert isinstance(refused, budgets.Refusal)
    assert (refused.budget.owner, refused.available) == ("api key", 20)
    # The refused call held nothing of the organization's.
    assert budgets.used(budget=org, now=NOW) == (0, 80)


def test_settling_replaces_the_hold_by_the_real_use_once(tenant):
    budget = _budget(tenant, 100)
    lease = budgets.reserve(budgets=[budget], lease_id="run:1", amount=60, now=NOW)

    first = budgets.settle(lease=lease, actual=25)
    again = budgets.settle(lease=lease, actual=25)

    assert (first, again) == (True, False)
    assert budgets.used(budget=budget, now=NOW) == (25, 0)
    assert isinstance(
        budgets.reserve(budgets=[budget], lease_id="run:2", amount=75, now=NOW), budgets.Lease
    )


def test_a_dead_workers_lease_is_released_after_its_deadline(tenant):
    budget = _budget(tenant, 100, field="tokens_per_day")
    seeds = {0: 0}
    budgets.reserve(budgets=[budget], lease_id="dead:1", amount=90, seeds=seeds, now=NOW)

    before = budgets.reserve(budgets=[budget], lease_id="live:1", amount=20, now=NOW + 30)
    after = budgets.reserve(
        budgets=[budget], lease_id="live:2", amount=20, now=NOW + budgets.LEASE_SECONDS + 1
    )

    assert isinstance(before, budgets.Refusal)
    assert isinstance(after, budgets.Lease)
    assert budgets.used(budget=budget, now=NOW) == (0, 20)


def test_a_heartbeat_keeps_a_live_lease(tenant):
    budget = _budget(tenant, 100, field="tokens_per_day")
    lease = budgets.reserve(budgets=[budget], lease_id="slow:1", amount=90, seeds={0: 0}, now=NOW)

    budgets.lease_refresh(leases=[lease], now=NOW + 40)
    later = budgets.reserve(budgets=[budget], lease_id="other:1", amount=20, now=NOW + 60)

    assert isinstance(later, budgets.Refusal)


def test_a_missing_day_figure_asks_to_be_seeded_from_the_usage_records(tenant):
    day = _budget(tenant, 100, field="tokens_per_day")

    asked = budgets.reserve(budgets=[day], lease_id="r:1", amount=10, now=NOW)
    seeded = budgets.reserve(budgets=[day], lease_id="r:1", amount=10, seeds={0: 85}, now=NOW)
    refused = budgets.reserve(budgets=[day], lease_id="r:2", amount=10, now=NOW)

    assert asked == [0]
    assert isinstance(seeded, budgets.Lease)
    assert isinstance(refused, budgets.Refusal) and refused.available == 5


def test_concurrent_reservations_never_pass_the_budget(tenant):
    budget = _budget(tenant, 1000)

    def one(i):
        return budgets.reserve(budgets=[budget], lease_id=f"c:{i}", amount=70, now=NOW)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(100)))

    assert sum(isinstance(r, budgets.Lease) for r in results) == 14  # 14 x 70 = 980
    assert budgets.used(budget=budget, now=NOW) == (0, 980)


@pytest.fixture
def bot(world, committed_db):
    """A ready offline orchestrator in alpha."""
    orchestrators_remove("org_alpha", "budgetbot")
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()
    yield ready_orchestrator("org_alpha", "budgetbot", name="Budget bot")
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()
    orchestrators_remove("org_alpha", "budgetbot")


def _invoke(client, instance, text="hello there"):
    return client.post(
        f"/api/v1/orgs/alpha/orchestrators/{instance.id}/invoke/",
        {"messages": [{"role": "user", "content": text}]},
        format="json",
    )


def test_a_turn_settles_its_reservation_and_records_usage(world, bot, as_key, empty_buckets):
    with overridden(world.alpha.org, tokens_per_day=100_000):
        response = _invoke(as_key(world.alpha.keys["member"]), bot)
        org_day = budgets.Budget(
            str(world.alpha.org.public_id), "*", "tokens_per_day", 100_000, "organization"
        )
        settled, held = budgets.used(budget=org_day)

    assert response.status_code == 200
    usage = response.json()["usage"]
    row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
    assert row.principal == f"key:{world.alpha.keys['member'][:12]}"
    assert (row.orchestrator, row.model, row.requests) == ("budgetbot", "cadence-offline", 1)
    assert row.total_tokens == usage["total_tokens"] > 0
    assert row.estimated_tokens == 0
    assert (settled, held) == (usage["total_tokens"], 0)


def test_a_turn_past_the_budget_is_refused_with_402_and_spends_nothing(
    world, bot, as_key, empty_buckets
):
    # 900 tokens already used today (the records), and a call reserves its prompt plus 1024.
    usage_add(
        org_id=world.alpha.org.pk,
        principal="user:earlier",
        usage=Usage(500, 400),
        day=timezone.now().date(),
    )
    with overridden(world.alpha.org, tokens_per_day=1500):
        response = _invoke(as_key(world.alpha.keys["member"]), bot)

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert error["details"]["budget"] == "tokens_per_day"
    assert error["details"]["available"] == 600
    assert "Retry-After" not in response
    assert UsageDay.objects.filter(organization_id=world.alpha.org.pk).count() == 1


def test_a_keys_budget_applies_on_top_of_the_organizations(world, bot, as_key, empty_buckets):
    from tenants.limits.models import ApiKeyLimits

    key_id = world.alpha.key_ids["member"]
    ApiKeyLimits.objects.create(api_key_id=key_id, tokens_per_minute=50)
    try:
        refused = _invoke(as_key(world.alpha.keys["member"]), bot)
        other = _invoke(as_key(world.alpha.keys["admin"]), bot)
    finally:
        ApiKeyLimits.objects.filter(api_key_id=key_id).delete()

    assert refused.status_code == 402
    assert refused.json()["error"]["details"]["owner"] == "api key"
    assert other.status_code == 200


def test_a_reply_without_max_tokens_stops_where_its_reservation_ends(
    world, bot, as_key, empty_buckets, settings
):
    """No max_tokens in the request or the configuration: the call reserves the default allowance
    and the model is asked for no more, so the reply ends with finish reason "length" there
    instead of spending past what was reserved."""
    from engine.models import RunEvent

    settings.CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS = 3
    with overridden(world.alpha.org, tokens_per_day=100_000):
        response = _invoke(as_key(world.alpha.keys["member"]), bot, "one two three four five six")
        org_day = budgets.Budget(
            str(world.alpha.org.public_id), "*", "tokens_per_day", 100_000, "organization"
        )
        settled, held = budgets.used(budget=org_day)

    assert response.status_code == 200, response.json()
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == 3
    assert (settled, held) == (usage["total_tokens"], 0)
    with schema_context("org_alpha"):
        call = RunEvent.objects.get(run_id=response.json()["run"], kind="llm_call")
    assert response.json()["finish_reason"] == "length"
    assert call.data["outputs"]["finish_reason"] == "length"
    assert call.data["llm"]["parameters"]["max_tokens"] == 3


def test_without_budgets_the_reply_is_not_capped(world, bot, as_key, empty_buckets, settings):
    settings.CADENCE_BUDGET_DEFAULT_COMPLETION_TOKENS = 3
    response = _invoke(as_key(world.alpha.keys["member"]), bot, "one two three four five six")

    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] > 3
