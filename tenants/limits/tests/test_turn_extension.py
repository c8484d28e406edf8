"""The pipeline extension: usage recorded per turn (its calls together, once its run is written,
and during a long turn every USAGE_WRITE_SECONDS), our own count when a stream broke, concurrent
streams, and Redis away (budgets fail open, or closed by setting; usage still recorded in
PostgreSQL; the day's figure rebuilt from those records when Redis is back)."""

from __future__ import annotations

import asyncio

import pytest

from cadence_site.errors import ApplicationError
from engine.runs.pipeline import Turn, TurnRequest
from orchestrators.runtime import Usage as RuntimeUsage
from tenants import ratelimit
from tenants.limits import budgets
from tenants.limits.models import UsageDay
from tenants.limits.tests.conftest import overridden
from tenants.limits.turns import budget_extension

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def turn_of(world, committed_db, empty_buckets):
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()

    def make() -> Turn:
        return Turn(
            TurnRequest(
                schema_name="org_alpha",
                org_slug="alpha",
                ref="any",
                message="hi",
                history=[],
                trigger="invoke",
                principal="user:redis-down",
            )
        )

    yield make
    UsageDay.objects.filter(organization_id=world.alpha.org.pk).delete()
    ratelimit.reset_backoff()


async def _model_call(turn: Turn, usage: RuntimeUsage) -> None:
    await budget_extension.before_model_call(turn, [{"role": "user", "content": "hello"}])
    await budget_extension.after_model_call(turn, usage)


def _call(turn: Turn, usage: RuntimeUsage) -> None:
    """A turn of one model call, to its end (the pipeline calls after_write once its run is
    written)."""
    asyncio.run(_model_call(turn, usage))
    budget_extension.after_write(turn, None)


def test_budgets_fail_open_and_usage_is_recorded_then_reconciled(world, turn_of, settings):
    budget = budgets.Budget(
        str(world.alpha.org.public_id), "*", "tokens_per_day", 10_000, "organization"
    )
    live_redis = settings.REDIS_URL
    with overridden(world.alpha.org, tokens_per_day=10_000):
        settings.REDIS_URL = DEAD_REDIS
        _call(turn_of(), RuntimeUsage(300, 200))
        settings.REDIS_URL = live_redis
        ratelimit.reset_backoff()
        row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
        # Back: the day's figure is missing from Redis and is seeded from the records.
        _call(turn_of(), RuntimeUsage(10, 10))
        settled, held = budgets.used(budget=budget)

    assert (row.requests, row.total_tokens) == (1, 500)
    assert (settled, held) == (520, 0)


def test_budgets_fail_closed_when_configured(world, turn_of, settings):
    settings.CADENCE_LIMITS_FAIL_OPEN = False
    live_redis = settings.REDIS_URL
    with overridden(world.alpha.org, tokens_per_day=10_000):
        settings.REDIS_URL = DEAD_REDIS
        with pytest.raises(ApplicationError) as refused:
            _call(turn_of(), RuntimeUsage(1, 1))
        settings.REDIS_URL = live_redis

    assert (refused.value.code, refused.value.status_code) == ("budget_unavailable", 503)
    assert not UsageDay.objects.filter(organization_id=world.alpha.org.pk).exists()


def test_an_organization_without_budgets_still_records_usage(world, turn_of):
    _call(turn_of(), RuntimeUsage(7, 3))

    row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
    assert (row.principal, row.total_tokens, row.estimated_tokens) == ("user:redis-down", 10, 0)


def test_a_call_that_broke_mid_stream_is_charged_by_our_own_count(world, turn_of):
    turn = turn_of()

    async def broken() -> None:
        await budget_extension.before_model_call(turn, [{"role": "user", "content": "hello"}])
        turn.text.append("twelve chars")  # what streamed before the connection dropped
        await budget_extension.after_model_call(turn, RuntimeUsage())

    asyncio.run(broken())
    budget_extension.after_write(turn, None)

    row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
    assert row.completion_tokens == 4  # 12 characters at the 3-per-token estimate
    assert row.estimated_tokens == row.total_tokens > 4


def test_a_turns_calls_are_recorded_together_once_its_run_is_written(world, turn_of):
    """One row update for the turn, after its run: not one per call while it runs (50 concurrent
    agent runs queued on that row's lock)."""
    turn = turn_of()

    async def three_calls() -> None:
        await _model_call(turn, RuntimeUsage(100, 20))
        await _model_call(turn, RuntimeUsage(50, 5))
        await budget_extension.before_model_call(turn, [{"role": "user", "content": "hello"}])
        turn.text.append("twelve chars")  # this one broke mid-stream: our own count
        await budget_extension.after_model_call(turn, RuntimeUsage())

    asyncio.run(three_calls())
    written_during = UsageDay.objects.filter(organization_id=world.alpha.org.pk).exists()
    budget_extension.after_write(turn, None)
    budget_extension.after_write(turn, None)  # nothing left: nothing added twice

    row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
    assert not written_during
    # The broken call: "user: hello" is 4 tokens at 3 characters each, plus 4 of framing; what
    # streamed, 4.
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (3, 150 + 8, 25 + 4)
    assert row.total_tokens == 187
    assert row.estimated_tokens == 12  # the broken call's, not the reported ones


def test_a_long_turn_writes_its_calls_as_it_goes(world, turn_of, monkeypatch):
    """A call settled USAGE_WRITE_SECONDS after the oldest unwritten one writes them all."""
    from tenants.limits import turns

    turn = turn_of()
    asyncio.run(_model_call(turn, RuntimeUsage(1, 1)))
    assert not UsageDay.objects.filter(organization_id=world.alpha.org.pk).exists()
    monkeypatch.setattr(turns, "USAGE_WRITE_SECONDS", 0.0)  # as if that long had passed
    asyncio.run(_model_call(turn, RuntimeUsage(2, 2)))
    row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
    assert (row.requests, row.total_tokens) == (2, 6)


def test_concurrent_streams_are_held_per_turn_and_released_when_it_ends(world, turn_of):
    first, second, third = turn_of(), turn_of(), turn_of()
    message = [{"role": "user", "content": "hi"}]
    with overridden(world.alpha.org, concurrent_streams=1):
        asyncio.run(budget_extension.before_model_call(first, message))
        with pytest.raises(ApplicationError) as refused:
            asyncio.run(budget_extension.before_model_call(second, message))
        budget_extension.on_finish(first, None)
        asyncio.run(budget_extension.before_model_call(third, message))
        budget_extension.on_finish(third, None)

    assert (refused.value.code, refused.value.status_code) == ("too_many_streams", 429)
    assert refused.value.headers == {"Retry-After": "1"}


def test_a_turns_budgets_come_from_the_cached_limits_as_they_would_from_the_database(
    world, limited, settings
):
    """The first model call reads no database when this process holds the limits: the same
    budgets as the database read gives, and a database read whenever something is missing."""
    from tenants.limits import plans
    from tenants.limits.turns import _who, _who_cached

    settings.CADENCE_LIMITS_CACHE_SECONDS = 60  # as served (tests read limits afresh)
    alpha = world.alpha
    key_id = alpha.key_ids["member"]
    prefix = _prefix(key_id)
    principal = f"key:{prefix}"
    with limited(alpha.org, tokens_per_day=10_000, concurrent_streams=3):
        plans.limits_forget()
        assert _who_cached(principal=principal, org_id=alpha.org.pk, key_id=key_id) is None
        read = _who(
            schema_name="org_alpha", principal=principal, org_id=alpha.org.pk, key_id=key_id
        )
        cached = _who_cached(principal=principal, org_id=alpha.org.pk, key_id=key_id)
        # Without the trigger's ids the database must say which organization and key.
        assert _who_cached(principal=principal, org_id=None, key_id=key_id) is None
        assert _who_cached(principal=principal, org_id=alpha.org.pk, key_id=None) is None
        # A user's turn counts against the organization's budgets only.
        user = _who_cached(principal="user:7", org_id=alpha.org.pk, key_id=key_id)

    assert cached == read
    assert [b.field for b in read.budgets] == ["tokens_per_day"]
    assert [b.limit for b in read.streams] == [3]
    assert user.key_id is None and user.budgets == read.budgets[:1]


def _prefix(key_id: str) -> str:
    from tenants.models import ApiKey

    return ApiKey.objects.values_list("prefix", flat=True).get(pk=key_id)


def test_a_turns_usage_goes_with_its_run_and_what_is_not_written_is_written_after(world, turn_of):
    """finish_statements: the turn's usage as statements of the run's batch (written when it
    commits: with_commit); a row they did not write (not sent, refused, the batch failed) is
    unwritten again, and after_write adds it, once."""
    from django.db import transaction

    from cadence_site.pipelined import write_together

    turn = turn_of()
    asyncio.run(_model_call(turn, RuntimeUsage(1, 1)))
    statements = budget_extension.finish_statements(turn, None)
    assert [s.with_commit for s in statements] == [True]
    assert budget_extension.finish_statements(turn, None) == []  # taken: not offered twice
    with transaction.atomic():
        assert write_together(lambda: None, statements, commit=True)
    budget_extension.after_write(turn, None)  # nothing left to write
    row = UsageDay.objects.get(organization_id=world.alpha.org.pk)
    assert (row.requests, row.total_tokens) == (1, 2)

    asyncio.run(_model_call(turn, RuntimeUsage(2, 2)))
    statements = budget_extension.finish_statements(turn, None)
    with transaction.atomic():
        # The run's transaction had begun (a chat reply stored with it): not sent, given back.
        UsageDay.objects.filter(pk=row.pk).update(updated_at=row.updated_at)
        assert write_together(lambda: None, statements, commit=True) is False
    row.refresh_from_db()
    assert (row.requests, row.total_tokens) == (1, 2)
    budget_extension.after_write(turn, None)
    row.refresh_from_db()
    assert (row.requests, row.total_tokens) == (2, 6)
