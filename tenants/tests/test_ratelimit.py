"""The GCRA limiter against the real Redis (and a closed port for "Redis is down")."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tenants import ratelimit

NOW = 1_000_000.0  # seconds; tests pass their own clock so figures are exact


@pytest.fixture
def keys():
    ratelimit.reset_backoff()
    made: list[str] = []

    def make(scope: str = "requests") -> str:
        key = ratelimit.bucket_key(str(uuid.uuid4()), "*", scope)
        made.append(key)
        return key

    yield make
    ratelimit.clear(*made)
    ratelimit.reset_backoff()


def _bucket(key: str, limit: int, burst: int | None = None, period: float = 60.0, name="org"):
    return ratelimit.Bucket(key, limit, period, burst, name)


def test_a_burst_is_admitted_at_once_then_one_per_emission_interval(keys):
    bucket = _bucket(keys(), limit=60, burst=3)  # one a second, three at once

    first = [ratelimit.decide([bucket], now=NOW) for _ in range(3)]
    refused = ratelimit.decide([bucket], now=NOW)
    later = ratelimit.decide([bucket], now=NOW + 1.0)

    assert [(d.allowed, d.remaining) for d in first] == [(True, 2), (True, 1), (True, 0)]
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after == pytest.approx(1.0)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["X-RateLimit-Reset"] == "3"
    assert later.allowed and later.remaining == 0


def test_the_burst_defaults_to_the_limit_and_refills_fully(keys):
    bucket = _bucket(keys(), limit=2)

    assert [ratelimit.decide([bucket], now=NOW).allowed for _ in range(3)] == [True, True, False]
    refilled = [ratelimit.decide([bucket], now=NOW + 60).allowed for _ in range(3)]

    assert refilled == [True, True, False]


def test_a_request_is_admitted_into_every_bucket_or_none(keys):
    org = _bucket(keys(), limit=10, name="organization")
    key = _bucket(keys(), limit=1, name="api key")

    assert ratelimit.decide([org, key], now=NOW).allowed
    refused = ratelimit.decide([org, key], now=NOW)
    org_alone = [ratelimit.decide([org], now=NOW) for _ in range(9)]

    assert (refused.allowed, refused.bucket, refused.limit) == (False, "api key", 1)
    # The refused call spent nothing of the organization's: nine more fit (10 - the first one).
    assert [d.allowed for d in org_alone] == [True] * 9
    assert not ratelimit.decide([org], now=NOW).allowed


def test_the_most_constrained_bucket_reports_remaining(keys):
    org = _bucket(keys(), limit=100, name="organization")
    key = _bucket(keys(), limit=5, name="api key")

    decision = ratelimit.decide([org, key], now=NOW)

    assert (decision.bucket, decision.limit, decision.remaining) == ("api key", 5, 4)


def test_tenants_have_separate_buckets(keys):
    a, b = _bucket(keys(), limit=1), _bucket(keys(), limit=1)

    ratelimit.decide([a], now=NOW)

    assert not ratelimit.decide([a], now=NOW).allowed
    assert ratelimit.decide([b], now=NOW).allowed


def test_async_and_sync_callers_share_the_bucket(keys):
    bucket = _bucket(keys(), limit=3)

    async def two():
        return [await ratelimit.adecide([bucket], now=NOW) for _ in range(2)]

    decisions = asyncio.run(two())
    last = ratelimit.decide([bucket], now=NOW)
    refused = asyncio.run(ratelimit.adecide([bucket], now=NOW))

    assert [d.remaining for d in decisions] == [2, 1]
    assert (last.allowed, last.remaining) == (True, 0)
    assert (refused.allowed, refused.retry_after) == (False, pytest.approx(20.0))


def test_redis_time_is_used_when_no_clock_is_given(keys):
    bucket = _bucket(keys(), limit=1, period=3600)

    assert ratelimit.decide([bucket]).allowed
    refused = ratelimit.decide([bucket])

    assert not refused.allowed
    assert 3590 < refused.retry_after <= 3600


def _hammer(key: str, calls: int, out) -> None:
    bucket = _bucket(key, limit=100, period=3600)
    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(lambda _: ratelimit.decide([bucket]).allowed, range(calls)))
    out.put(sum(results))


def test_500_concurrent_decisions_from_4_processes_admit_exactly_100(keys):
    key = keys()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(key, 125, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    admitted = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)

    assert sum(admitted) == 100
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]


def test_redis_down_fails_open_with_one_warning_and_a_metric(keys, settings, caplog):
    from tenants.ratelimit import DEGRADED

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    bucket = _bucket(keys(), limit=1)
    before = DEGRADED.labels("allowed")._value.get()

    with caplog.at_level(logging.WARNING, logger="tenants.ratelimit"):
        decisions = [ratelimit.decide([bucket], now=NOW) for _ in range(3)]
        decisions.append(asyncio.run(ratelimit.adecide([bucket], now=NOW)))

    assert all(d.allowed and d.degraded for d in decisions)
    assert DEGRADED.labels("allowed")._value.get() - before == 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "tenants.ratelimit"]
    assert warnings == ["redis unavailable, limits not enforced"]


def test_redis_down_fails_closed_when_configured(keys, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CADENCE_LIMITS_FAIL_OPEN = False

    decision = ratelimit.decide([_bucket(keys(), limit=100)], now=NOW)

    assert (decision.allowed, decision.degraded) == (False, True)
    assert decision.headers()["Retry-After"] == "5"
