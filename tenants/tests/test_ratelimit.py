"""The per-organization request budget, against the real Redis (and a closed port for "Redis is down")."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from tenants import ratelimit

# The middle of a window: 1,000,020 s is 20 s into window 16,667.
NOW = 16_667 * 60 + 20.0


@pytest.fixture
def org_id():
    ratelimit.reset_backoff()
    value = str(uuid.uuid4())
    yield value
    ratelimit.clear(org_public_id=value, now=NOW)
    ratelimit.clear(org_public_id=value, now=NOW + 60)
    ratelimit.reset_backoff()


def test_requests_within_the_budget_pass_and_the_next_is_refused_until_the_window_ends(org_id):
    first = ratelimit.hit(org_public_id=org_id, limit=2, now=NOW)
    second = ratelimit.hit(org_public_id=org_id, limit=2, now=NOW + 1)
    third = ratelimit.hit(org_public_id=org_id, limit=2, now=NOW + 5)

    assert (first.allowed, first.remaining) == (True, 1)
    assert (second.allowed, second.remaining) == (True, 0)
    assert (third.allowed, third.remaining, third.retry_after) == (False, 0, 35)
    assert not third.degraded


def test_a_new_window_starts_a_new_budget(org_id):
    for _ in range(3):
        ratelimit.hit(org_public_id=org_id, limit=2, now=NOW)

    assert ratelimit.hit(org_public_id=org_id, limit=2, now=NOW + 60).allowed


def test_organizations_have_separate_budgets(org_id):
    other = str(uuid.uuid4())
    try:
        for _ in range(3):
            ratelimit.hit(org_public_id=org_id, limit=2, now=NOW)

        assert ratelimit.hit(org_public_id=other, limit=2, now=NOW).allowed
        assert not ratelimit.hit(org_public_id=org_id, limit=2, now=NOW).allowed
    finally:
        ratelimit.clear(org_public_id=other, now=NOW)


def test_async_and_sync_callers_share_the_bucket(org_id):
    async def two() -> list[ratelimit.Decision]:
        return [await ratelimit.ahit(org_public_id=org_id, limit=3, now=NOW) for _ in range(2)]

    decisions = asyncio.run(two())
    last = ratelimit.hit(org_public_id=org_id, limit=3, now=NOW)
    refused = asyncio.run(ratelimit.ahit(org_public_id=org_id, limit=3, now=NOW))

    assert [d.remaining for d in decisions] == [2, 1]
    assert (last.allowed, last.remaining) == (True, 0)
    assert (refused.allowed, refused.retry_after) == (False, 40)


def test_redis_down_lets_requests_through_with_one_warning(org_id, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    with caplog.at_level(logging.WARNING, logger="tenants.ratelimit"):
        decisions = [ratelimit.hit(org_public_id=org_id, limit=1, now=NOW) for _ in range(3)]
        decisions.append(asyncio.run(ratelimit.ahit(org_public_id=org_id, limit=1, now=NOW)))

    assert all(d.allowed and d.degraded for d in decisions)
    warnings = [r for r in caplog.records if r.name == "tenants.ratelimit"]
    assert [r.getMessage() for r in warnings] == ["redis unavailable, rate limits not enforced"]


def test_async_caller_degrades_open_too(org_id, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    decision = asyncio.run(ratelimit.ahit(org_public_id=org_id, limit=1, now=NOW))

    assert (decision.allowed, decision.degraded) == (True, True)
