from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django_tenants.utils import schema_context

from cadence_site.asgi import application
from cadence_site.testing import ws_connect
from chat.models import Conversation, Message

# Long enough (~300 tokens at 60 ms) that a cancel always lands mid-reply, even on a busy machine.
LONG = "a fairly long message so the reply has many words to stream " * 25


def _make_conversation(orchestrator, user) -> str:
    with schema_context("org_alpha"):
        return str(Conversation.objects.create(orchestrator=orchestrator, owner_user_id=user.pk).id)


def _ticket(user) -> str:
    from tenants import tickets
    from tenants.resolution import org_by_slug

    return tickets.ticket_issue(org=org_by_slug("alpha"), user=user)


async def _open(conversation_id: str, user, slug: str = "alpha"):
    ticket = await database_sync_to_async(_ticket)(user)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/orgs/{slug}/conversations/{conversation_id}/?ticket={ticket}",
        headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
    )
    connected, code = await ws_connect(communicator)
    return communicator, connected, code


async def _until_done(communicator, wait: float = 10) -> list[dict]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=wait)
        frames.append(frame)
        if frame["type"] == "done":
            return frames


def _messages(conversation_id: str) -> list[tuple]:
    with schema_context("org_alpha"):
        return list(
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("seq")
            .values_list("seq", "role", "status", "content")
        )


async def _wait_for_status(
    conversation_id: str, seq: int, statuses: set[str], wait: float = 10
) -> list[tuple]:
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        rows = await database_sync_to_async(_messages)(conversation_id)
        if (
            any(r[0] == seq and r[2] in statuses for r in rows)
            or asyncio.get_running_loop().time() > deadline
        ):
            return rows
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_a_message_streams_tokens_and_ends_with_done(world, chat_orchestrator):
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], world.alpha.users["member"]
    )
    tab, connected, _ = await _open(conversation, world.alpha.users["member"])
    assert connected

    await tab.send_json_to({"type": "message", "content": "hello socket"})
    frames = await _until_done(tab)

    kinds = [f["type"] for f in frames]
    assert kinds[0] == "message.created" and frames[0]["message"]["content"] == "hello socket"
    assert (
        "".join(f["delta"] for f in frames if f["type"] == "token")
        == "Offline model. You said: hello socket"
    )
    assert "step" in kinds
    assert (frames[-1]["status"], frames[-1]["usage"]["total_tokens"] > 0) == ("complete", True)
    rows = await database_sync_to_async(_messages)(conversation)
    assert rows == [
        (1, "user", "complete", "hello socket"),
        (2, "assistant", "complete", "Offline model. You said: hello socket"),
    ]
    await tab.disconnect()


@pytest.mark.asyncio
async def test_two_tabs_both_see_the_reply(world, chat_orchestrator):
    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(chat_orchestrator["fast"], user)
    first, _, _ = await _open(conversation, user)
    second, _, _ = await _open(conversation, user)

    await first.send_json_to({"type": "message", "content": "for both tabs"})
    seen_first, seen_second = await asyncio.gather(_until_done(first), _until_done(second))

    text = "Offline model. You said: for both tabs"
    for frames in (seen_first, seen_second):
        assert "".join(f["delta"] for f in frames if f["type"] == "token") == text
    await first.disconnect()
    await second.disconnect()


@pytest.mark.asyncio
async def test_cancel_stores_the_partial_reply_as_cancelled(world, chat_orchestrator):
    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(chat_orchestrator["slow"], user)
    tab, _, _ = await _open(conversation, user)

    await tab.send_json_to(
        {
            "type": "message",
            "content": LONG,
        }
    )
    while (await tab.receive_json_from(timeout=5))["type"] != "token":
        pass
    await tab.send_json_to({"type": "cancel"})
    frames = await _until_done(tab)

    assert frames[-1]["status"] == "cancelled"
    rows = await database_sync_to_async(_messages)(conversation)
    assert rows[1][2] == "cancelled"
    assert 0 < len(rows[1][3]) < len("Offline model. You said: " + LONG)
    await tab.disconnect()


@pytest.mark.asyncio
async def test_a_cancel_flag_set_by_another_process_ends_the_running_reply(
    world, chat_orchestrator
):
    """A cancel sent to another server reaches the reply's process as a Redis flag
    (chat.turns.turn_cancel); the process's watcher sees it within a fraction of a second."""
    import redis
    from django.conf import settings

    from chat.turns import cancel_key

    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(chat_orchestrator["slow"], user)
    tab, _, _ = await _open(conversation, user)

    await tab.send_json_to({"type": "message", "content": LONG})
    reply_to = None
    while True:
        frame = await tab.receive_json_from(timeout=5)
        reply_to = frame.get("reply_to", reply_to)
        if frame["type"] == "token":
            break
    flag = cancel_key("org_alpha", reply_to)
    redis.Redis.from_url(settings.REDIS_URL).set(flag, "1", ex=60)
    try:
        frames = await _until_done(tab)
    finally:
        redis.Redis.from_url(settings.REDIS_URL).delete(flag)

    assert frames[-1]["status"] == "cancelled"
    rows = await database_sync_to_async(_messages)(conversation)
    assert rows[1][2] == "cancelled"
    assert 0 < len(rows[1][3]) < len("Offline model. You said: " + LONG)
    await tab.disconnect()


@pytest.mark.asyncio
async def test_a_client_that_leaves_mid_stream_still_gets_its_reply_stored(
    world, chat_orchestrator
):
    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(chat_orchestrator["slow"], user)
    tab, _, _ = await _open(conversation, user)

    await tab.send_json_to({"type": "message", "content": "store me even if I go"})
    while (await tab.receive_json_from(timeout=5))["type"] != "token":
        pass
    await tab.disconnect()
    rows = await _wait_for_status(conversation, 2, {"complete"})

    assert rows[1] == (2, "assistant", "complete", "Offline model. You said: store me even if I go")


@pytest.mark.asyncio
async def test_malformed_frames_get_errors_and_the_connection_stays_open(world, chat_orchestrator):
    user = world.alpha.users["member"]
    conversation = await database_sync_to_async(_make_conversation)(chat_orchestrator["fast"], user)
    tab, _, _ = await _open(conversation, user)

    for frame, code in (
        ("{nope", "malformed_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "message", "content": 5}', "invalid_message"),
        ('{"type": "message", "content": ""}', "invalid_message"),
        ('{"type": "message", "content": "' + "x" * 40_000 + '"}', "invalid_frame"),
    ):
        await tab.send_to(text_data=frame)
        reply = await tab.receive_json_from(timeout=5)
        assert (reply["type"], reply["code"]) == ("error", code), frame[:40]

    await tab.send_json_to({"type": "message", "content": "still here"})
    assert (await _until_done(tab))[-1]["status"] == "complete"
    await tab.disconnect()


@pytest.mark.asyncio
async def test_outsiders_cannot_join_a_conversation(world, chat_orchestrator):
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], world.alpha.users["member"]
    )

    _, other_member, code_member = await _open(
        conversation, world.alpha.users["admin"]
    )  # same org, not the owner
    _, outsider, code_outsider = await _open(conversation, world.outsider)
    ticket = await database_sync_to_async(_bravo_ticket)(world)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/orgs/alpha/conversations/{conversation}/?ticket={ticket}",
        headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")],
    )
    foreign, code_foreign = await ws_connect(communicator)

    assert (other_member, code_member) == (False, 4404)
    assert (outsider, code_outsider) == (False, 4404)
    assert (foreign, code_foreign) == (False, 4404)


def _bravo_ticket(world) -> str:
    from tenants import tickets
    from tenants.resolution import org_by_slug

    return tickets.ticket_issue(org=org_by_slug("bravo"), user=world.bravo.users["owner"])


@pytest.mark.asyncio
async def test_viewers_read_but_cannot_send(world, chat_orchestrator):
    viewer = world.alpha.users["viewer"]
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], viewer
    )
    tab, connected, _ = await _open(conversation, viewer)

    await tab.send_json_to({"type": "message", "content": "hi"})
    reply = await tab.receive_json_from(timeout=5)

    assert connected is True
    assert (reply["type"], reply["code"]) == ("error", "role_required")
    assert await database_sync_to_async(_messages)(conversation) == []
    await tab.disconnect()


@pytest.mark.asyncio
async def test_a_chat_frame_makes_no_hop_to_sweep_connections(
    world, chat_orchestrator, monkeypatch
):
    """channels closes old connections on the thread-sensitive thread before every handler (a
    hop per frame); this consumer queries only through in_tenant, which closes around each
    call, so its frames skip that hop and the reply is stored all the same."""
    import channels.consumer

    swept = []

    async def sweep():
        swept.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", sweep)
    conversation = await database_sync_to_async(_make_conversation)(
        chat_orchestrator["fast"], world.alpha.users["member"]
    )
    tab, connected, _ = await _open(conversation, world.alpha.users["member"])
    assert connected

    await tab.send_json_to({"type": "message", "content": "no sweep"})
    frames = await _until_done(tab)
    await tab.disconnect()

    assert frames[-1]["status"] == "complete"
    assert swept == []
    rows = await database_sync_to_async(_messages)(conversation)
    assert rows[-1] == (2, "assistant", "complete", "Offline model. You said: no sweep")
