"""The chat socket acts with its caller's current role (tenants/ws_access.py)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django_tenants.utils import schema_context

from chat.models import Conversation, Message
from chat.tests.test_ws import _open
from tenants.models import Membership


def _conversation(orchestrator, user) -> str:
    with schema_context("org_alpha"):
        return str(Conversation.objects.create(orchestrator=orchestrator, owner_user_id=user.pk).id)


def _message_count(conversation_id: str) -> int:
    with schema_context("org_alpha"):
        return Message.objects.filter(conversation_id=conversation_id).count()


def _set_role(membership, role):
    from tenants.services import membership_update

    membership = Membership.objects.select_related("user", "organization").get(pk=membership.pk)
    membership_update(membership=membership, role=role, actor_role="owner")


@pytest.mark.asyncio
async def test_a_member_demoted_to_viewer_can_no_longer_send_on_an_open_socket(
    world, chat_orchestrator, temp_member
):
    conversation = await database_sync_to_async(_conversation)(
        chat_orchestrator["fast"], temp_member.user
    )
    tab, connected, _ = await _open(conversation, temp_member.user)
    assert connected
    await asyncio.sleep(0.3)  # the socket's rights feed is subscribed

    await database_sync_to_async(_set_role)(temp_member, "viewer")
    await asyncio.sleep(0.5)
    await tab.send_json_to({"type": "message", "content": "still here?"})
    frame = await tab.receive_json_from(timeout=5)

    assert (frame["type"], frame["code"]) == ("error", "role_required")
    assert await database_sync_to_async(_message_count)(conversation) == 0
    await tab.disconnect()


@pytest.mark.asyncio
async def test_a_removed_member_is_disconnected_and_runs_no_turn(
    world, chat_orchestrator, temp_member
):
    conversation = await database_sync_to_async(_conversation)(
        chat_orchestrator["fast"], temp_member.user
    )
    tab, connected, _ = await _open(conversation, temp_member.user)
    assert connected
    await asyncio.sleep(0.3)

    # Removed without an audit event (as if Redis missed it): the next frame is refused.
    await database_sync_to_async(Membership.objects.filter(pk=temp_member.pk).delete)()
    await asyncio.sleep(1.1)
    await tab.send_json_to({"type": "message", "content": "one more turn"})
    closed = await tab.receive_output(timeout=5)

    assert (closed["type"], closed["code"], closed["reason"]) == (
        "websocket.close",
        4403,
        "membership_ended",
    )
    assert await database_sync_to_async(_message_count)(conversation) == 0
