"""A chat socket keeps its conversation and skips its rights re-read while the database notifies
no change that decides them (tenants/access_watch.py), and follows a change on the next frame."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from channels.db import database_sync_to_async

from cadence_site.testing import test_database_url
from chat import services
from chat.tests.test_ws import _open, _until_done
from chat.tests.test_ws_rights import _conversation
from tenants import access_watch, ws_access


def _commit(sql: str, params) -> None:
    """Committed on a connection of its own, as psql, a bulk update or another process would;
    returns once this process's watch has counted it."""
    seen = access_watch._counts.changes
    with psycopg.connect(test_database_url(), autocommit=True) as other:
        other.execute(sql, params)
    deadline = time.monotonic() + 5
    while access_watch._counts.changes == seen:
        assert time.monotonic() < deadline, "the watch never saw the change"
        time.sleep(0.001)


def _settled() -> None:
    """Until the notifications of what the fixtures just committed have come (no change counted
    for 0.1 s): a socket opened while they arrive reads again at its first turn, rightly."""
    last, quiet_since = access_watch._counts.changes, time.monotonic()
    deadline = quiet_since + 5
    while time.monotonic() - quiet_since < 0.1:
        assert time.monotonic() < deadline, "the watch never settled"
        time.sleep(0.01)
        if access_watch._counts.changes != last:
            last, quiet_since = access_watch._counts.changes, time.monotonic()


async def _say(tab, text: str) -> list[dict]:
    await tab.send_json_to({"type": "message", "content": text})
    return await _until_done(tab)


@pytest.fixture
def counted(monkeypatch):
    calls = {"conversation": 0, "rights": 0}
    read_conversation, read_rights = services.conversation_for_turn, ws_access.access_recheck

    def conversation_for_turn(**kwargs):
        calls["conversation"] += 1
        return read_conversation(**kwargs)

    def access_recheck(**kwargs):
        calls["rights"] += 1
        return read_rights(**kwargs)

    monkeypatch.setattr(services, "conversation_for_turn", conversation_for_turn)
    monkeypatch.setattr(ws_access, "access_recheck", access_recheck)
    monkeypatch.setattr(ws_access, "RECHECK_AFTER", 0.0)  # every frame asks
    return calls


@pytest.mark.asyncio
async def test_the_conversation_is_read_again_only_after_a_change_that_decides_it(
    world, chat_orchestrator, temp_member, access_watch_running, counted
):
    conversation = await database_sync_to_async(_conversation)(
        chat_orchestrator["fast"], temp_member.user
    )
    await database_sync_to_async(_settled)()
    tab, connected, _ = await _open(conversation, temp_member.user)
    assert connected
    for text in ("one", "two", "three"):
        assert (await _say(tab, text))[-1]["status"] == "complete"
    # Read at the handshake and the connect, kept since: no turn read them again.
    assert counted == {"conversation": 0, "rights": 0}

    # A statement on the organization's team memberships (statement-level: even one that
    # changes no row notifies): read again, once.
    await database_sync_to_async(_commit)(
        "UPDATE org_alpha.teams_teammembership SET role = role WHERE false", []
    )
    for text in ("four", "five"):
        assert (await _say(tab, text))[-1]["status"] == "complete"
    assert counted == {"conversation": 1, "rights": 1}
    await tab.disconnect()


@pytest.mark.asyncio
async def test_an_orchestrator_suspended_between_two_messages_refuses_the_second(
    world, chat_orchestrator, temp_member, access_watch_running, counted
):
    instance = chat_orchestrator["fast"]
    conversation = await database_sync_to_async(_conversation)(instance, temp_member.user)
    await database_sync_to_async(_settled)()
    tab, connected, _ = await _open(conversation, temp_member.user)
    assert connected
    assert (await _say(tab, "before"))[-1]["status"] == "complete"

    await database_sync_to_async(_commit)(
        "UPDATE org_alpha.orchestrators_orchestratorinstance SET status = 'suspended'"
        " WHERE id = %s",
        [instance.pk],
    )
    try:
        await tab.send_json_to({"type": "message", "content": "after"})
        frame = await tab.receive_json_from(timeout=5)
    finally:
        await database_sync_to_async(_commit)(
            "UPDATE org_alpha.orchestrators_orchestratorinstance SET status = 'ready'"
            " WHERE id = %s",
            [instance.pk],
        )
    assert (frame["type"], frame["code"]) == ("error", "orchestrator_suspended")
    await tab.disconnect()


@pytest.mark.asyncio
async def test_a_demotion_no_feed_announced_applies_to_the_next_frame(
    world, chat_orchestrator, temp_member, access_watch_running, counted
):
    """Written straight to the table: no audit entry, so the rights feed says nothing; the
    database's notification makes the next frame re-read, and the viewer cannot send."""
    conversation = await database_sync_to_async(_conversation)(
        chat_orchestrator["fast"], temp_member.user
    )
    await database_sync_to_async(_settled)()
    tab, connected, _ = await _open(conversation, temp_member.user)
    assert connected
    assert (await _say(tab, "hello"))[-1]["status"] == "complete"
    assert (await _say(tab, "again"))[-1]["status"] == "complete"
    assert counted["rights"] == 0

    await database_sync_to_async(_commit)(
        "UPDATE tenants_membership SET role = 'viewer' WHERE id = %s", [temp_member.pk]
    )
    await tab.send_json_to({"type": "message", "content": "still here?"})
    frame = await tab.receive_json_from(timeout=5)

    assert (frame["type"], frame["code"]) == ("error", "role_required")
    assert counted["rights"] == 1
    await asyncio.sleep(0)
    await tab.disconnect()
