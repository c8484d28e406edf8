"""The fenced Redis lock: two worker processes racing on one key, stale tokens, lost leases."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from cadence_site.aredis import async_redis
from cadence_site.testing import test_database_url
from engine.durable.locking import (
    LockLostError,
    LockTimeout,
    RedisLock,
    StaleTokenError,
    fence_advance,
    lock_key,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def prefix():
    return f"cadence:test:lock:{uuid.uuid4().hex}"


@pytest.fixture
async def client(prefix):
    redis = async_redis(settings.REDIS_URL)
    yield redis
    # Only the keys this test made: never a FLUSHDB on a shared server.
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    keys += [k async for k in redis.scan_iter(match=f"cadence:*:org_*:{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
def fences(world, committed_db):
    from engine.durable.models import LockFence

    yield
    with schema_context("org_alpha"):
        LockFence.objects.filter(key__startswith="cadence:test:lock:").delete()


def _fenced(key, token):
    from django.db import transaction

    with schema_context("org_alpha"), transaction.atomic():
        fence_advance(key=key, token=token)


def test_two_worker_processes_racing_on_one_key_never_overlap(fences, prefix):
    import redis as sync_redis

    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CADENCE_TESTING": "1",
    }
    key, rounds = f"{prefix}:section", 25
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.durable.tests.race_worker",
                name,
                str(rounds),
                key,
                prefix,
            ],
            cwd=REPO,
            env=env,
        )
        for name in ("w1", "w2")
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    r = sync_redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert int(r.get(f"{prefix}:counter")) == 2 * rounds  # no lost update: no overlap
        spans = [line.decode().split() for line in r.lrange(f"{prefix}:spans", 0, -1)]
    finally:
        r.delete(f"{prefix}:counter", f"{prefix}:spans")
    assert {s[0] for s in spans} == {"w1", "w2"}  # both really raced
    ordered = sorted((float(s[2]), float(s[3]), int(s[1])) for s in spans)
    for (_, end, token), (start, _, next_token) in zip(ordered, ordered[1:], strict=False):
        assert end <= start and token < next_token
    from engine.durable.models import LockFence

    with schema_context("org_alpha"):
        assert LockFence.objects.get(key=key).token == ordered[-1][2]


async def test_without_the_lock_the_same_race_loses_updates(client, prefix):
    """The race above can fail: unguarded, the read-modify-write loses increments."""

    async def bump():
        for _ in range(20):
            value = int(await client.get(f"{prefix}:counter") or 0)
            await asyncio.sleep(0.001)
            await client.set(f"{prefix}:counter", value + 1)

    await asyncio.gather(bump(), bump())
    assert int(await client.get(f"{prefix}:counter")) < 40


async def test_a_holder_whose_lease_expired_is_refused_by_the_fence(client, prefix, fences):
    from asgiref.sync import sync_to_async

    key = f"{prefix}:stale"
    lock = RedisLock(client, schema_name="org_alpha", key=key, lease_seconds=0.1)
    old = await lock.acquire()
    await asyncio.sleep(0.25)  # the old holder stalls past its lease
    new = await RedisLock(client, schema_name="org_alpha", key=key, lease_seconds=5).acquire(wait=1)
    assert new.token == old.token + 1
    await sync_to_async(_fenced)(key, new.token)
    with pytest.raises(StaleTokenError, match=f"token {old.token}"):
        await sync_to_async(_fenced)(key, old.token)
    assert await lock.renew(old) is False
    assert await lock.release(old) is False  # the old holder cannot free the new one's lock
    assert await lock.held(new) is True
    await sync_to_async(_fenced)(key, new.token)  # the current holder writes again
    assert await lock.release(new) is True


async def test_a_lost_lease_cancels_the_step_and_fails_it(client, prefix):
    key = f"{prefix}:lost"
    lock = RedisLock(client, schema_name="org_alpha", key=key, lease_seconds=0.15)
    finished = []

    async def slow_step(lease):
        await client.delete(f"cadence:lock:org_alpha:{key}")  # the lease is gone (expired, evicted)
        await asyncio.sleep(1)
        finished.append(lease.token)

    with pytest.raises(LockLostError, match="lost mid-step"):
        await lock.run_exclusive(slow_step)
    assert finished == []


async def test_a_taken_lock_times_out_and_locks_are_per_organization(client, prefix):
    key = f"{prefix}:busy"
    alpha = RedisLock(client, schema_name="org_alpha", key=key, lease_seconds=5)
    held = await alpha.acquire()
    with pytest.raises(LockTimeout):
        await RedisLock(client, schema_name="org_alpha", key=key).acquire(wait=0.1)
    bravo = RedisLock(client, schema_name="org_bravo", key=key, lease_seconds=5)
    other = await bravo.acquire(wait=0.1)
    await bravo.release(other)
    await alpha.release(held)


def test_lock_keys_render_from_the_run_and_refuse_missing_values():
    context = {"conversation_id": "c-1", "input": {"customer_id": "cust:9/x y"}}
    assert lock_key("conv:{conversation_id}", context) == "conv:c-1"
    assert lock_key("customer:{input.customer_id}", context) == "customer:cust:9%2fx%20y"
    with pytest.raises(KeyError, match="input.order_id"):
        lock_key("order:{input.order_id}", context)
    with pytest.raises(KeyError, match="empty"):
        lock_key("c:{conversation_id}", {"conversation_id": ""})
