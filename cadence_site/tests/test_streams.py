"""The process's stream hub (cadence_site/streams.py) against the real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

from cadence_site import streams


async def test_a_stream_subscribed_during_a_blocked_read_joins_it_at_once():
    hub = streams.StreamHub()
    first = f"test:hub:{uuid.uuid4().hex}"
    second = f"test:hub:{uuid.uuid4().hex}"
    try:
        hub.subscribe(first, "0-0")
        await asyncio.sleep(0.1)  # the read now blocks (BLOCK_MS) on `first` alone
        assert hub.reading
        queue = hub.subscribe(second, "0-0")
        await hub.client.xadd(second, {"e": "hello"})
        started = time.perf_counter()
        async with asyncio.timeout(streams.BLOCK_MS / 1000 / 2):
            assert await queue.get() == "hello"
        assert time.perf_counter() - started < streams.BLOCK_MS / 1000 / 2
        # The wake-up stream's own entries never reach a subscriber.
        hub.subscribe(f"test:hub:{uuid.uuid4().hex}", "0-0")
        await hub.client.xadd(second, {"e": "again"})
        async with asyncio.timeout(streams.BLOCK_MS / 1000 / 2):
            assert await queue.get() == "again"
        assert queue.empty()
    finally:
        hub.task.cancel()
        await asyncio.gather(hub.task, return_exceptions=True)
        await asyncio.gather(*hub.waking, return_exceptions=True)
        await hub.client.delete(first, second, hub.wake_key)
        await hub.client.aclose()


async def test_relay_sends_each_frame_of_an_entry_in_order():
    """A chat turn writes the frames published together as one entry, one per line; a socket
    gets each as a message of its own, in order, with the single-frame entries around them."""
    key = f"test:hub:{uuid.uuid4().hex}"
    sent: list[str] = []
    got_all = asyncio.Event()

    async def send(*, text_data: str) -> None:
        sent.append(text_data)
        if len(sent) == 4:
            got_all.set()

    client = streams.hub().client
    reader = asyncio.create_task(streams.relay(key, "0-0", send))
    try:
        await client.xadd(key, {"e": '{"n": 1}'})
        await client.xadd(key, {"e": '{"n": 2}\n{"n": 3, "text": "a\\nb"}'})
        await client.xadd(key, {"e": '{"n": 4}'})
        async with asyncio.timeout(5):
            await got_all.wait()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await client.delete(key)

    assert sent == ['{"n": 1}', '{"n": 2}', '{"n": 3, "text": "a\\nb"}', '{"n": 4}']
