"""Attacks on the loop's fan-out writer (review): the writer cancelled mid-round."""

from __future__ import annotations

import asyncio
import uuid

from chat import turns
from chat.tests.test_fanout import _frames, _turn


async def test_a_writer_cancelled_mid_round_leaves_no_drain_hanging():
    """The loop's writer task is cancelled while a round is in flight (the loop shutting down,
    a test's teardown): a turn that published meanwhile waits on the next round, which no task
    would ever resolve; its drain must end, and the next publish writes what was waiting."""
    schema = f"fanout_{uuid.uuid4().hex[:8]}"
    first, second = _turn(schema), _turn(schema)
    keys = [turns.stream_key(schema, t.start.conversation_id) for t in (first, second)]
    fanout = turns._fanouts.get()
    try:
        await first.publish({"type": "token", "text": "a"})
        await asyncio.sleep(0)  # the writer's round is in flight (its pipeline awaits Redis)
        await second.publish({"type": "token", "text": "b"})  # for the next round
        fanout.task.cancel()
        await asyncio.gather(fanout.task, return_exceptions=True)
        async with asyncio.timeout(3):
            await asyncio.gather(first.drain(), second.drain())
        await second.publish({"type": "token", "text": "c"})
        async with asyncio.timeout(3):
            await second.drain()
        assert [f["text"] for f in await _frames(second)] == ["b", "c"]
    finally:
        await turns.redis_client().delete(*keys)
