from __future__ import annotations

import asyncio

import pytest
from django_tenants.utils import schema_context

from orchestrators import lifecycle
from orchestrators.models import OrchestratorInstance
from orchestrators.pool import RuntimePool
from orchestrators.services import llm_config_create, orchestrator_create
from orchestrators.tasks import instance_build


@pytest.fixture
def instances(world, committed_db):
    """Three ready offline instances in alpha, one per tier."""
    created = {}
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug__startswith="pool-").delete()
        config = llm_config_create(name="pool-offline", provider="offline", model="m")
        for tier in ("hot", "warm", "cold"):
            created[tier] = orchestrator_create(
                slug=f"pool-{tier}", name=tier, llm_config=config, tier=tier
            )
    for instance in created.values():
        assert (
            instance_build(
                schema_name="org_alpha",
                instance_id=str(instance.id),
                expected_hash=instance.config_hash,
            )
            == "ready"
        )
    yield created
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug__startswith="pool-").delete()
        config.delete()


def _acquire(pool: RuntimePool, ref: str):
    return pool.acquire(schema_name="org_alpha", org_slug="alpha", ref=ref)


@pytest.mark.asyncio
async def test_concurrent_first_calls_build_once(instances):
    pool = RuntimePool(warm_max=8)

    results = await asyncio.gather(*(_acquire(pool, str(instances["warm"].id)) for _ in range(20)))

    assert pool.builds == 1
    assert len({id(r.runtime) for r in results}) == 1


@pytest.mark.asyncio
async def test_warm_is_kept_cold_is_built_per_call(instances):
    pool = RuntimePool(warm_max=8)

    await _acquire(pool, "pool-warm")
    await _acquire(pool, "pool-warm")
    await _acquire(pool, "pool-cold")
    await _acquire(pool, "pool-cold")

    assert pool.builds == 3
    assert pool.size() == {"hot": 0, "warm": 1}


@pytest.fixture
def three_warm(world, committed_db):
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug__startswith="lru-").delete()
        config = llm_config_create(name="lru-offline", provider="offline", model="m")
        made = [
            orchestrator_create(slug=f"lru-{i}", name=str(i), llm_config=config) for i in range(3)
        ]
    for instance in made:
        instance_build(
            schema_name="org_alpha",
            instance_id=str(instance.id),
            expected_hash=instance.config_hash,
        )
    yield made
    with schema_context("org_alpha"):
        OrchestratorInstance.objects.filter(slug__startswith="lru-").delete()
        config.delete()


@pytest.mark.asyncio
async def test_warm_entries_are_evicted_least_recently_used_first(three_warm):
    pool = RuntimePool(warm_max=2)

    await _acquire(pool, "lru-0")
    await _acquire(pool, "lru-1")
    await _acquire(pool, "lru-0")  # 0 is now the most recently used
    await _acquire(pool, "lru-2")

    kept = {key[1] for key in pool._entries}
    assert kept == {str(three_warm[0].id), str(three_warm[2].id)}


@pytest.mark.asyncio
async def test_a_changed_version_key_rebuilds_even_without_an_event(instances):
    pool = RuntimePool(warm_max=8)
    first = await _acquire(pool, "pool-warm")

    # Another process changed the instance; its event never reached this one.
    lifecycle._redis().set(lifecycle.version_key("org_alpha", first.instance_id), "something-else")
    await _acquire(pool, "pool-warm")

    assert pool.builds == 2


def test_preload_builds_hot_instances_only(instances):
    pool = RuntimePool(warm_max=8)

    count = pool.preload_hot()

    assert count >= 1
    assert {e.slug for e in pool._entries.values()} >= {"pool-hot"}
    assert all(e.tier == "hot" for e in pool._entries.values())


@pytest.mark.asyncio
async def test_pools_never_mix_organizations(world, instances):
    pool = RuntimePool(warm_max=8)

    with pytest.raises(Exception) as caught:
        await pool.acquire(schema_name="org_bravo", org_slug="bravo", ref=str(instances["warm"].id))

    assert getattr(caught.value, "code", "") == "orchestrator_not_found"


@pytest.mark.asyncio
async def test_a_build_gives_its_database_connection_back(instances):
    """A build runs on the caller's thread-sensitive thread, which /v1 and the chat socket no
    longer sweep after each request or frame: it leaves no connection checked out there."""
    from asgiref.sync import sync_to_async
    from django.db import connection

    pool = RuntimePool(warm_max=4)
    await pool.acquire(schema_name="org_alpha", org_slug="alpha", ref="pool-cold")

    def held() -> bool:
        return connection.connection is not None

    assert await sync_to_async(held, thread_sensitive=True)() is False


@pytest.fixture
def listening_pool(settings):
    """A pool with a connected lifecycle listener (Redis pub/sub), as a served process has."""
    settings.CADENCE_RABBITMQ_URL = ""
    pool = RuntimePool(warm_max=8)
    listener = lifecycle.Listener(pool.apply)
    listener.start()
    assert listener.ready.wait(5)
    pool.listener = listener
    yield pool
    listener.stop()
    listener.join(5)


def _wait_for(condition, seconds: float = 5) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture
def warm_key(instances):
    """pool-warm's version key, set back to its current hash after the test."""
    key = lifecycle.version_key("org_alpha", str(instances["warm"].id))
    yield key
    lifecycle._redis().set(key, instances["warm"].config_hash)


async def _pooled_and_checked(pool: RuntimePool):
    """pool-warm built, then used once more (its version key read and found current)."""
    first = await _acquire(pool, "pool-warm")
    await _acquire(pool, "pool-warm")
    return first


@pytest.mark.asyncio
async def test_a_pooled_runtime_checked_lately_is_used_without_reading_its_key_again(
    listening_pool, warm_key, monkeypatch
):
    """While the listener stays connected and no event comes, the version key is read at most
    every CHECK_SECONDS: a key changed without an event (a lost message) is seen within that."""
    from orchestrators import pool as pool_module

    monkeypatch.setattr(pool_module, "CHECK_SECONDS", 0.3)
    pool = listening_pool
    first = await _pooled_and_checked(pool)
    lifecycle._redis().set(warm_key, "something-else")  # no event: as if it was lost
    again = await _acquire(pool, "pool-warm")
    assert (pool.builds, again.runtime) == (1, first.runtime)
    await asyncio.sleep(0.35)
    await _acquire(pool, "pool-warm")
    assert pool.builds == 2


@pytest.mark.asyncio
async def test_an_event_or_a_lost_listener_makes_the_next_use_read_the_key(
    instances, listening_pool, warm_key
):
    import json

    pool = listening_pool
    await _pooled_and_checked(pool)
    # Another process rebuilt another instance: any event makes every entry read its key.
    events = pool.events
    lifecycle._redis().set(warm_key, "something-else")
    lifecycle._redis().publish(
        lifecycle.REDIS_CHANNEL,
        json.dumps({"schema": "org_alpha", "id": "other", "hash": "x", "action": "rebuild"}),
    )
    await asyncio.to_thread(_wait_for, lambda: pool.events > events)
    await _acquire(pool, "pool-warm")
    assert pool.builds == 2

    lifecycle._redis().set(warm_key, instances["warm"].config_hash)
    await _acquire(pool, "pool-warm")  # read (the entry's first), found current
    assert pool.builds == 2
    lifecycle._redis().set(warm_key, "changed-while-disconnected")
    pool.listener.ready.clear()  # the listener lost its connection
    await _acquire(pool, "pool-warm")
    assert pool.builds == 3


@pytest.mark.asyncio
async def test_an_announcement_drops_the_runtime_in_its_own_process_at_once(
    listening_pool, warm_key
):
    pool = listening_pool
    lifecycle.local_handlers.append(pool.apply)
    try:
        first = await _pooled_and_checked(pool)
        # The listener is stopped: only the local hand-over can tell the pool.
        pool.listener.stop()
        pool.listener.join(5)
        pool.listener.ready.set()  # as if still connected
        lifecycle.announce(
            schema_name="org_alpha",
            instance_id=first.instance_id,
            config_hash="new-hash",
            action=lifecycle.REBUILD,
        )
        assert pool.size() == {"hot": 0, "warm": 0}
    finally:
        lifecycle.local_handlers.remove(pool.apply)


def test_process_services_hand_the_pool_its_listener_and_this_processs_announcements(settings):
    from orchestrators import pool as pool_module

    settings.CADENCE_RABBITMQ_URL = ""
    pool_module.start_process_services(preload=False)
    try:
        assert pool_module.pool.listener is not None
        assert pool_module.pool.apply in lifecycle.local_handlers
    finally:
        pool_module.stop_process_services()
    assert pool_module.pool.listener is None
    assert pool_module.pool.apply not in lifecycle.local_handlers
