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


async def _stop(hub: streams.StreamHub, *keys: str) -> None:
    hub.task.cancel()
    await asyncio.gather(hub.task, return_exceptions=True)
    await asyncio.gather(*hub.waking, return_exceptions=True)
    await hub.client.delete(*keys, hub.wake_key)
    await hub.client.aclose()


async def _next(queue: asyncio.Queue, seconds: float = 3) -> str:
    async with asyncio.timeout(seconds):
        return await queue.get()


async def test_many_streams_in_one_read_each_entry_to_its_followers_only():
    """The read is packed by the hub (each key and position once): with hundreds of streams,
    after positions moved and streams were dropped, every entry reaches its own followers,
    a dropped stream's entries reach nobody, and a later follower from an older position
    gets what it asked for while the first one gets nothing twice."""
    hub = streams.StreamHub()
    keys = [f"test:hub:{uuid.uuid4().hex}" for _ in range(300)]
    try:
        queues = {key: hub.subscribe(key, "0-0") for key in keys}
        for round_ in range(3):  # positions move three times
            for key in keys[::7]:
                await hub.client.xadd(key, {"e": f"{key} {round_}"})
            for key in keys[::7]:
                assert await _next(queues[key]) == f"{key} {round_}"
        for key in keys[1::2]:
            hub.unsubscribe(key, queues[key])
        assert list(hub.packed_keys) == list(hub.positions) == keys[::2]
        assert list(hub.packed_ids) == keys[::2]
        for key in keys[:20]:
            await hub.client.xadd(key, {"e": f"{key} last"})
        for key in keys[:20:2]:
            assert await _next(queues[key]) == f"{key} last"
        late = hub.subscribe(keys[0], "0-0")
        expected = [f"{keys[0]} {n}" for n in range(3)] + [f"{keys[0]} last"]
        assert [await _next(late) for _ in expected] == expected
        await asyncio.sleep(0.1)
        assert late.empty()
        for key in keys[:20]:
            assert queues[key].empty()
    finally:
        await _stop(hub, *keys)


async def test_an_entry_without_a_frame_is_skipped():
    hub = streams.StreamHub()
    key = f"test:hub:{uuid.uuid4().hex}"
    try:
        queue = hub.subscribe(key, "0-0")
        await hub.client.xadd(key, {"other": "x"})
        await hub.client.xadd(key, {"w": "e", "e": "frame"})
        assert await _next(queue) == "frame"
    finally:
        await _stop(hub, key)


async def test_a_read_whose_connection_is_killed_goes_on_with_a_new_one(caplog):
    """Redis dropping the read's connection (restart, CLIENT KILL, a proxy) costs a retry, not
    the stream: entries written after reach the follower from where it was."""
    hub = streams.StreamHub()
    key = f"test:hub:{uuid.uuid4().hex}"
    try:
        hub.connection = await hub.client.connection_pool.get_connection()
        await hub.connection.send_command("CLIENT", "ID")
        read_id = await hub.connection.read_response()
        queue = hub.subscribe(key, "0-0")
        await hub.client.xadd(key, {"e": "before"})
        assert await _next(queue) == "before"
        await asyncio.sleep(0.05)
        assert hub.reading
        assert await hub.client.execute_command("CLIENT", "KILL", "ID", read_id) == 1
        await hub.client.xadd(key, {"e": "after"})
        assert await _next(queue) == "after"
        assert "chat stream reader interrupted" in caplog.text
        assert queue.empty()
    finally:
        await _stop(hub, key)


async def test_a_position_given_as_bytes_is_followed_like_text():
    """Callers hand on ids as Redis gave them (bytes, e.g. a chat socket's start after a
    reconnect): the read packs them like text."""
    hub = streams.StreamHub()
    key = f"test:hub:{uuid.uuid4().hex}"
    try:
        first = await hub.client.xadd(key, {"e": "old"})
        queue = hub.subscribe(key, first)  # bytes
        await hub.client.xadd(key, {"e": "new"})
        assert await _next(queue) == "new"
        assert hub.positions[key].encode() != first
    finally:
        await _stop(hub, key)
