"""A chat socket never keeps acting on rights that ended because a re-read was skipped: what
its handshake reads is current with the version it keeps, expiries along its key's chain (and
given later) end it, and a change counted during the handshake is not folded into its version.
Found by the reviewer of the access watch; each of these failed before the fixes.
"""

from __future__ import annotations

import asyncio
import json
import types
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from django_tenants.utils import schema_context

from cadence_site.asgi import application
from cadence_site.testing import ws_connect
from chat.models import Conversation
from chat.tests.test_ws import _open, _until_done
from chat.tests.test_ws_kept import _commit, _settled
from chat.tests.test_ws_rights import _conversation
from tenants import access_watch


async def _next_after_sending(tab, text: str) -> dict:
    """What the server answers a message with: its first frame, or the socket's close."""
    await tab.send_json_to({"type": "message", "content": text})
    output = await tab.receive_output(timeout=5)
    if output["type"] == "websocket.close":
        return {"closed": output.get("code"), "reason": output.get("reason")}
    frame = json.loads(output["text"])
    if frame["type"] == "message.created":
        await _until_done(tab)  # let the turn finish before the test tears down
    return frame


async def _chatting_with_key(conversation: str, secret: str) -> WebsocketCommunicator:
    """A socket on `conversation` with an API key in its Authorization header, once the
    fixtures' notifications have come, that has taken one turn."""
    await database_sync_to_async(_settled)()
    tab = WebsocketCommunicator(
        application,
        f"/ws/orgs/alpha/conversations/{conversation}/",
        headers=[(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {secret}".encode())],
    )
    connected, _ = await ws_connect(tab)
    assert connected
    assert (await _next_after_sending(tab, "before"))["type"] == "message.created"
    return tab


@pytest.fixture
def minted(world, chat_orchestrator, temp_member, committed_db):
    """A key of temp_member's that expires in 2.5 s, a key minted with it (no expiry of its own),
    and a conversation owned by the minted key."""
    from tenants.models import ApiKey
    from tenants.services import api_key_create

    org = world.alpha.org
    parent, _ = api_key_create(
        org=org,
        name="review parent",
        role="member",
        creator_role="member",
        created_by=temp_member.user,
        expires_at=timezone.now() + timedelta(seconds=2.5),
    )
    child, secret = api_key_create(
        org=org, name="review child", role="member", creator_role="member", created_by=parent
    )
    with schema_context("org_alpha"):
        conversation = Conversation.objects.create(
            orchestrator=chat_orchestrator["fast"], owner_api_key_id=child.pk
        )
    yield parent, child, secret, str(conversation.id)
    ApiKey.objects.filter(pk__in=[child.pk, parent.pk]).delete()


@pytest.mark.asyncio
async def test_a_socket_of_a_minted_key_ends_when_its_minting_key_expires(
    world, minted, access_watch_running
):
    """Before the watch, the first frame a second after the minting key's expiry re-read the
    rights (api_key_effective_role: the parent is no longer live) and closed 4401. Now the
    re-read is skipped while the version is unchanged, and the guard only looks at the socket's
    own key's expiry (LiveAccess.expires_at = key.expires_at, not ApiKeyPrincipal.until): time
    sends no notification, so the minted key keeps chatting after its voucher expired."""
    parent, _, secret, conversation = minted
    tab = await _chatting_with_key(conversation, secret)

    await asyncio.sleep(max(0.0, (parent.expires_at - timezone.now()).total_seconds()) + 1.2)
    answer = await _next_after_sending(tab, "after the minting key expired")
    await tab.disconnect()
    assert answer.get("closed") == 4401, answer


@pytest.mark.asyncio
async def test_a_socket_opened_on_a_cached_active_organization_follows_its_suspension(
    world, chat_orchestrator, temp_member, access_watch_running
):
    """The handshake reads the organization's status through org_by_slug (Redis, 300 s, dropped
    only by the services) and seeds the socket's version as if that read were current. An
    organization suspended by a bulk update or psql (the watch notifies it; nothing drops the
    Redis entry) is then never re-read by the socket: before the watch, the first frame a
    second later re-read the status from the database and closed 4403."""
    from tenants.resolution import org_by_slug, org_cache_invalidate

    org = world.alpha.org
    conversation = await database_sync_to_async(_conversation)(
        chat_orchestrator["fast"], temp_member.user
    )
    await database_sync_to_async(org_by_slug)("alpha")  # any earlier request cached it
    await database_sync_to_async(_settled)()
    await database_sync_to_async(_commit)(
        "UPDATE tenants_organization SET status = 'suspended' WHERE id = %s", [org.pk]
    )
    try:
        tab, connected, code = await _open(conversation, temp_member.user)
        if connected:  # as before the watch: the handshake trusts the cached status
            await asyncio.sleep(1.1)  # past RECHECK_AFTER: the old code re-read here
            answer = await _next_after_sending(tab, "in a suspended organization")
            await tab.disconnect()
        else:  # refused at the handshake: as good
            answer = {"closed": code}
    finally:
        await database_sync_to_async(_commit)(
            "UPDATE tenants_organization SET status = 'active' WHERE id = %s", [org.pk]
        )
        await database_sync_to_async(org_cache_invalidate)(org)
    assert answer.get("closed") == 4403, answer


@pytest.mark.asyncio
async def test_a_change_counted_between_the_handshakes_stamp_and_version_is_not_missed(
    world, chat_orchestrator, temp_member, access_watch_running, monkeypatch
):
    """tenants/ws.py seeds the socket's version with `stamp() == before` and *then* `version()`:
    a notification counted between the two (the watch thread runs whenever the GIL lets it)
    lands in the seeded version although the handshake read the rights before that change.
    Every later frame then skips the re-read for as long as nothing else is notified.

    The interleaving is forced here: the membership is removed (raw SQL: no audit entry, so
    the rights feed says nothing) and counted right before the handshake's version() runs."""
    from tenants import ws

    conversation = await database_sync_to_async(_conversation)(
        chat_orchestrator["fast"], temp_member.user
    )
    await database_sync_to_async(_settled)()

    def version_after_a_change(org_id, schema_name):
        _commit("DELETE FROM tenants_membership WHERE id = %s", [temp_member.pk])
        return access_watch.version(org_id, schema_name)

    monkeypatch.setattr(
        ws,
        "access_watch",
        types.SimpleNamespace(stamp=access_watch.stamp, version=version_after_a_change),
    )
    tab, connected, _ = await _open(conversation, temp_member.user)
    assert connected
    monkeypatch.undo()
    await asyncio.sleep(1.1)  # past RECHECK_AFTER
    answer = await _next_after_sending(tab, "no longer a member")
    await tab.disconnect()
    assert answer.get("closed") == 4403, answer


@pytest.mark.asyncio
async def test_a_cookie_socket_of_a_user_deactivated_during_its_handshake_is_closed(
    world, chat_orchestrator, temp_member, access_watch_running, monkeypatch
):
    """A cookie socket's user is loaded (channels' get_user: is_active read) before the
    handshake's `before = stamp()`; caller_role then trusts that object's is_active. A
    deactivation committed and counted between the two (a thread hop apart) is inside the
    seeded version, so the socket of an inactive user never re-reads. Before the watch, the
    first frame a second later re-read and closed 4401 user_inactive."""
    import channels.auth

    from tenants.tests.test_ws_access import _cookie_for

    user = temp_member.user
    conversation = await database_sync_to_async(_conversation)(chat_orchestrator["fast"], user)
    cookie = await _cookie_for(user)
    await database_sync_to_async(_settled)()
    real_get_user = channels.auth.get_user
    calls = []

    async def get_user_then_deactivated(scope):
        # Called by AuthMiddleware, then again by tenants/ws.py (whose answer it uses): the
        # deactivation lands right after the second.
        loaded = await real_get_user(scope)
        calls.append(loaded)
        if len(calls) == 2:
            await database_sync_to_async(_commit)(
                "UPDATE auth_user SET is_active = false WHERE id = %s", [user.pk]
            )
        return loaded

    monkeypatch.setattr(channels.auth, "get_user", get_user_then_deactivated)
    tab = WebsocketCommunicator(
        application,
        f"/ws/orgs/alpha/conversations/{conversation}/",
        headers=[(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"), (b"cookie", cookie)],
    )
    connected, code = await ws_connect(tab)
    monkeypatch.undo()
    assert len(calls) == 2
    if connected:
        await asyncio.sleep(1.1)  # past RECHECK_AFTER: the old code re-read here
        answer = await _next_after_sending(tab, "deactivated")
        await tab.disconnect()
    else:
        answer = {"closed": code}

    assert answer.get("closed") == 4401, (connected, answer)


@pytest.fixture
def own_key(world, chat_orchestrator, temp_member, committed_db):
    """A key of temp_member's with no expiry, and a conversation it owns."""
    from tenants.models import ApiKey
    from tenants.services import api_key_create

    key, secret = api_key_create(
        org=world.alpha.org,
        name="review own",
        role="member",
        creator_role="member",
        created_by=temp_member.user,
    )
    with schema_context("org_alpha"):
        conversation = Conversation.objects.create(
            orchestrator=chat_orchestrator["fast"], owner_api_key_id=key.pk
        )
    yield key, secret, str(conversation.id)
    ApiKey.objects.filter(pk=key.pk).delete()


@pytest.mark.asyncio
async def test_an_expiry_given_to_an_open_sockets_key_ends_it_when_it_comes(
    world, own_key, access_watch_running
):
    """LiveAccess.expires_at is the key's expiry as the handshake read it, never refreshed by a
    re-read. An operator gives the key an expiry two seconds away (notified: the next frame
    re-reads, the key is still live, the version is taken); once it has passed, every frame
    skips the re-read because the socket still believes the key never expires. Before the
    watch, the first frame after the expiry re-read and closed 4401 api_key_expired."""
    key, secret, conversation = own_key
    tab = await _chatting_with_key(conversation, secret)

    await database_sync_to_async(_commit)(
        "UPDATE tenants_apikey SET expires_at = now() + interval '2 seconds' WHERE id = %s",
        [key.pk],
    )
    await asyncio.sleep(1.1)  # past RECHECK_AFTER: this frame re-reads (the key is still live)
    assert (await _next_after_sending(tab, "expiring soon"))["type"] == "message.created"
    await asyncio.sleep(2.0)
    answer = await _next_after_sending(tab, "after the expiry")
    await tab.disconnect()
    assert answer.get("closed") == 4401, answer
