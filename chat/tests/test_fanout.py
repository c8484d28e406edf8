"""Turns' frames to their conversations' streams through the loop's one fan-out writer
(chat/turns.py `_Fanout`), against the real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from chat import turns


def _turn(schema: str) -> turns.Turn:
    start = turns.TurnStart(
        schema_name=schema,
        org_slug="fanout",
        conversation_id=str(uuid.uuid4()),
        orchestrator_id=str(uuid.uuid4()),
        orchestrator_slug="bot",
        user_message={},
        assistant_message_id=str(uuid.uuid4()),
        assistant_seq=2,
        history=[],
        content="hi",
        principal="user:1",
        trigger="chat",
    )
    return turns.Turn(start=start)


async def _frames(turn: turns.Turn) -> list[dict]:
    key = turns.stream_key(turn.start.schema_name, turn.start.conversation_id)
    entries = await turns.redis_client().xrange(key)
    return [json.loads(line) for _, fields in entries for line in fields[b"e"].decode().split("\n")]


async def test_many_turns_each_stream_gets_its_frames_in_order_when_drained():
    schema = f"fanout_{uuid.uuid4().hex[:8]}"
    many = [_turn(schema) for _ in range(40)]
    keys = [turns.stream_key(schema, t.start.conversation_id) for t in many]

    async def talk(turn: turns.Turn, n: int) -> None:
        for i in range(25):
            await turn.publish({"type": "token", "text": f"{n}:{i}"})
            if i % 7 == 0:
                await asyncio.sleep(0)
        await turn.publish({"type": "done", "n": n})
        await turn.drain()
        # Drained: everything it published is in its stream already.
        frames = await _frames(turn)
        assert [f.get("text") for f in frames[:-1]] == [f"{n}:{i}" for i in range(25)]
        assert frames[-1] == {"type": "done", "n": n}

    try:
        await asyncio.gather(*(talk(turn, n) for n, turn in enumerate(many)))
        client = turns.redis_client()
        for key in keys:
            ttl = await client.ttl(key)
            assert turns.STREAM_TTL - 60 < ttl <= turns.STREAM_TTL
        # Frames published together became few entries, not one each.
        lengths = [await client.xlen(key) for key in keys]
        assert sum(lengths) < 40 * 26
    finally:
        await turns.redis_client().delete(*keys)


async def test_a_stream_that_refuses_its_entry_costs_that_turn_alone(caplog):
    """One conversation's key is not a stream (WRONGTYPE): its frames are logged as not fanned
    out, and the other turns written in the same round keep theirs."""
    schema = f"fanout_{uuid.uuid4().hex[:8]}"
    broken, fine = _turn(schema), _turn(schema)
    broken_key = turns.stream_key(schema, broken.start.conversation_id)
    fine_key = turns.stream_key(schema, fine.start.conversation_id)
    client = turns.redis_client()
    await client.set(broken_key, "not a stream")
    try:
        with caplog.at_level(logging.WARNING, logger="chat.turns"):
            await broken.publish({"type": "token", "text": "lost"})
            await fine.publish({"type": "token", "text": "kept"})
            await asyncio.gather(broken.drain(), fine.drain())
        assert [f["text"] for f in await _frames(fine)] == ["kept"]
        assert await client.get(broken_key) == b"not a stream"
        assert "chat event not fanned out" in caplog.text
        # The failed turn goes on: a later frame is tried again (and fails again here).
        await client.delete(broken_key)
        await broken.publish({"type": "token", "text": "later"})
        await broken.drain()
        assert [f["text"] for f in await _frames(broken)] == ["later"]
        assert await client.ttl(broken_key) > 0
    finally:
        await client.delete(broken_key, fine_key)
