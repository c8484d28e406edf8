"""Attacks on the stream hub's packed read (review): positions moved while a read is in flight."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis
from django.conf import settings

from cadence_site import streams
from cadence_site.tests.test_streams import _stop


async def _drain(queue: asyncio.Queue, count: int, seconds: float = 3) -> list[str]:
    got = []
    async with asyncio.timeout(seconds):
        while len(got) < count:
            got.append(await queue.get())
    return got


async def _older_follower_joins_as_the_read_returns(leave_first: bool) -> None:
    """A socket reconnects from an older position (or the last one leaves and another comes
    from an older one) while the hub's read, sent with the newer position, is returning
    entries: the new follower must get every entry after its own position, in order."""
    hub = streams.StreamHub()
    key = f"test:hub:{uuid.uuid4().hex}"
    sync = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for n in range(1, 4):
            sync.xadd(key, {"e": f"old{n}"})
        first = hub.subscribe(key, await hub.latest_id(key))
        await asyncio.sleep(0.2)  # the read blocks, sent with the position after old3
        assert hub.reading
        # Blocks this loop: the hub's reply (with `new`) waits in its socket, unprocessed.
        sync.xadd(key, {"e": "new"})
        time.sleep(0.05)  # noqa: ASYNC251 (on purpose: the loop must not run)
        if leave_first:
            hub.unsubscribe(key, first)
        second = hub.subscribe(key, "0-0")
        assert await _drain(second, 4) == ["old1", "old2", "old3", "new"]
        if not leave_first:
            assert await _drain(first, 1) == ["new"]
            await asyncio.sleep(0.1)
            assert first.empty()
    finally:
        sync.close()
        await _stop(hub, key)


async def test_an_older_follower_joining_as_a_read_returns_gets_every_entry_in_order():
    await _older_follower_joins_as_the_read_returns(leave_first=False)


async def test_a_follower_from_an_older_position_after_the_last_left_mid_read_misses_nothing():
    await _older_follower_joins_as_the_read_returns(leave_first=True)


async def test_a_key_with_non_ascii_characters_is_packed_by_its_bytes():
    hub = streams.StreamHub()
    key = f"test:hub:é—😀:{uuid.uuid4().hex}"
    other = f"test:hub:{uuid.uuid4().hex}"
    try:
        queue = hub.subscribe(key, "0-0")
        plain = hub.subscribe(other, "0-0")
        await hub.client.xadd(key, {"e": "ü"})
        await hub.client.xadd(other, {"e": "x"})
        assert await _drain(queue, 1) == ["ü"]
        assert await _drain(plain, 1) == ["x"]
    finally:
        await _stop(hub, key, other)


async def test_a_resp3_connection_reads_like_resp2():
    from django.test import override_settings

    separator = "&" if "?" in settings.REDIS_URL else "?"
    with override_settings(REDIS_URL=f"{settings.REDIS_URL}{separator}protocol=3"):
        hub = streams.StreamHub()
    key = f"test:hub:{uuid.uuid4().hex}"
    try:
        queue = hub.subscribe(key, "0-0")
        await hub.client.xadd(key, {"e": "one"})
        await hub.client.xadd(key, {"e": "two"})
        assert await _drain(queue, 2) == ["one", "two"]
        late = hub.subscribe(key, "0-0")
        assert await _drain(late, 2) == ["one", "two"]
    finally:
        await _stop(hub, key)


async def test_a_read_cancelled_mid_block_leaves_no_connection_in_use_nor_a_reply_owed():
    hub = streams.StreamHub()
    key = f"test:hub:{uuid.uuid4().hex}"
    pool = hub.client.connection_pool
    try:
        for _ in range(3):
            queue = hub.subscribe(key, await hub.latest_id(key))
            await asyncio.sleep(0.05)
            assert hub.reading
            hub.task.cancel()
            await asyncio.gather(hub.task, return_exceptions=True)
            assert hub.connection is None
            assert not pool._in_use_connections
            # The next read starts afresh (a new task on the next subscription).
            hub.unsubscribe(key, queue)
            queue = hub.subscribe(key, await hub.latest_id(key))
            await hub.client.xadd(key, {"e": "after"})
            assert await _drain(queue, 1) == ["after"]
            assert await hub.client.ping()
            hub.unsubscribe(key, queue)
            # The last one gone: the task ends within a block and gives its connection back.
            async with asyncio.timeout(streams.BLOCK_MS / 1000 + 2):
                await asyncio.gather(hub.task, *hub.waking)
            assert hub.connection is None
            assert not pool._in_use_connections
    finally:
        hub.task.cancel()
        await asyncio.gather(hub.task, return_exceptions=True)
        await hub.client.delete(key, hub.wake_key)
        await hub.client.aclose()


async def test_a_subscription_while_the_read_waits_for_its_connection_is_not_left_waiting():
    """The read's parts are built before it takes its connection (a connect: the loop runs
    meanwhile); a stream subscribed then is not in that read, and must not wait a block."""
    hub = streams.StreamHub()
    first = f"test:hub:{uuid.uuid4().hex}"
    second = f"test:hub:{uuid.uuid4().hex}"
    try:
        hub.subscribe(first, "0-0")
        await asyncio.sleep(0)  # the task built its read and is connecting
        assert hub.reading and hub.connection is None
        queue = hub.subscribe(second, "0-0")
        await hub.client.xadd(second, {"e": "hello"})
        started = time.perf_counter()
        assert await _drain(queue, 1, seconds=streams.BLOCK_MS / 1000 / 2) == ["hello"]
        assert time.perf_counter() - started < streams.BLOCK_MS / 1000 / 2
    finally:
        await _stop(hub, first, second)
