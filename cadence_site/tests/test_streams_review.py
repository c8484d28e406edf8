"""Attacks on the stream hub's packed read (review): positions moved while a read is in flight."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis
from django.conf import settings

from cadence_site import streams


async def _stop(hub: streams.StreamHub, *keys: str) -> None:
    hub.task.cancel()
    await asyncio.gather(hub.task, return_exceptions=True)
    await asyncio.gather(*hub.waking, return_exceptions=True)
    await hub.client.delete(*keys, hub.wake_key)
    await hub.client.aclose()


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
